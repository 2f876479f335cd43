"""The command line through click's test runner: help, models, dry runs, and bad input.

Every bad input must give exactly one line on stderr, ``Error: <field>: <what> (<fix>)``,
exit code 2, and no traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from launchers.cli import main


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``vllm-hpc ARGS`` in-process with click's runner isolation."""
    runner = CliRunner()
    base = {
        "HOME": "/home/alice",
        "XDG_CONFIG_HOME": "/nonexistent",
        "MODEL_NAME": None,
        "VLLM_HPC_REGISTRY": None,
        "VLLM_HPC_SITE_CONFIG": None,
        "VLLM_HPC_JOB_ROOT": None,
        "VLLM_HPC_PYTHON": "/opt/venv/bin/python",
    }
    base.update(env or {})
    with runner.isolation(env=base) as streams:
        try:
            main(args)
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = streams[0].getvalue().decode()
        err = streams[1].getvalue().decode() if streams[1] is not None else ""
    return code, out, err


def write(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def test_help_teaches() -> None:
    code, out, _ = run(["--help"])
    assert code == 0 and "vllm-hpc submit --model llama-3.1-70b-instruct" in out
    code, out, _ = run(["submit", "--help"])
    assert code == 0
    for flag in (
        "--model",
        "--nodes",
        "--gpus-per-node",
        "--tp",
        "--pp",
        "--dp",
        "--ep",
        "--partition",
        "--account",
        "--qos",
        "--time",
        "--job-name",
        "--registry",
        "--port",
        "--api-key-file",
        "--container",
        "--dry-run",
        "--json",
    ):
        assert flag in out, flag


def test_models_list_and_show(tmp_path: Path) -> None:
    code, out, _ = run(["models", "list"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "LAYOUT", "GPUS"]
    row = next(line for line in lines if line.startswith("llama-3.1-70b-instruct"))
    assert "TP=4 PP=2" in row and " 8 " in row
    user = write(tmp_path, "mine.yaml", "models:\n  llama-3.2-3b-instruct:\n    max_num_seqs: 8\n")
    code, out, _ = run(["models", "show", "llama-3.2-3b-instruct", "--registry", user, "--json"])
    data = json.loads(out)
    assert data["entry"]["max_num_seqs"] == 8
    assert data["sources"]["max_num_seqs"] == user
    assert data["sources"]["model"] == "builtin"
    code, out, _ = run(["models", "show", "llama-3.2-3b-instruct", "--registry", user])
    assert code == 0 and "max_num_seqs" in out and f"[{user}]" in out


def test_models_schema_is_json() -> None:
    code, out, _ = run(["models", "schema"])
    assert (
        code == 0
        and "tensor_parallel_size"
        in json.loads(out)["properties"]["models"]["additionalProperties"]["properties"]
    )


def test_dry_run_json_and_model_name_env() -> None:
    code, out, err = run(["submit", "--dry-run", "--json"], {"MODEL_NAME": "llama-3.2-3b-instruct"})
    assert code == 0, err
    data = json.loads(out)
    assert data["plan"]["name"] == "llama-3.2-3b-instruct"
    assert data["sbatch_script"].startswith("#!/bin/bash\n")


def test_dry_run_passes_extra_args() -> None:
    code, out, err = run(
        [
            "submit",
            "-m",
            "llama-3.2-3b-instruct",
            "--dry-run",
            "--json",
            "--",
            "--enable-prefix-caching",
            "--seed",
            "1",
        ]
    )
    assert code == 0, err
    argv = json.loads(out)["plan"]["roles"][0]["serve_argv"]
    assert argv[-3:] == ["--enable-prefix-caching", "--seed", "1"]


def test_plan_command_writes_the_plan(tmp_path: Path) -> None:
    out = tmp_path / "jobs" / "42" / "plan.json"
    code, _, err = run(["plan", "-m", "llama-3.2-3b-instruct", "--out", str(out)])
    assert code == 0, err
    assert json.loads(out.read_text())["roles"][0]["role"] == "leader"


def test_local_executor_refuses_multi_node() -> None:
    code, _, err = run(["submit", "-m", "llama-3.1-70b-instruct", "--executor", "local"])
    assert code == 2
    assert err.startswith("Error: --executor: local runs one node; this plan needs 2")


def test_python_m_launchers_submit_is_the_same_command() -> None:
    args = ["-m", "llama-3.1-70b-instruct", "--dry-run", "--json"]
    env = {
        "HOME": "/home/alice",
        "PATH": "/usr/bin:/bin",
        "VLLM_HPC_PYTHON": "/opt/venv/bin/python",
    }
    a = subprocess.run(
        [sys.executable, "-m", "launchers.submit", *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    b = subprocess.run(
        [sys.executable, "-m", "launchers", "submit", *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert a.stdout == b.stdout and json.loads(a.stdout)["plan"]["layout"]["pp"] == 2


def _registry_cases(tmp: Path) -> dict[str, str]:
    return {
        "unknown_key": write(tmp, "k.yaml", "models:\n  x:\n    model: a/b\n    tp: 2\n"),
        "syntax": write(tmp, "s.yaml", "models:\n  x:\n    model: a/b\n   bad: [\n"),
        "type": write(tmp, "t.yaml", "models:\n  x:\n    model: a/b\n    max_model_len: long\n"),
        "pplx": write(
            tmp,
            "p.yaml",
            "models:\n  x:\n    model: a/b\n    data_parallel_size: 2\n"
            "    enable_expert_parallel: true\n    all2all_backend: pplx\n",
        ),
        "site_time": write(tmp, "st.yaml", "site:\n  time: soon\n"),
    }


# (args, extra env, expected stderr line). "{tmp}" / "{model}" / "{reg:NAME}" are filled in.
BAD_INPUTS = [
    pytest.param(
        ["submit", "--dry-run"],
        {},
        "Error: --model: no model given (pass --model NAME or set MODEL_NAME; "
        "`vllm-hpc models list` shows names)",
        id="no-model",
    ),
    pytest.param(
        ["submit", "-m", "llama-3-70b", "--dry-run"],
        {},
        "Error: model: unknown model 'llama-3-70b' (did you mean llama-3.1-70b-instruct? see "
        "`vllm-hpc models list`, or pass a path or Hugging Face id containing '/')",
        id="unknown-model",
    ),
    pytest.param(
        ["submit", "--dry-run"],
        {"MODEL_NAME": "gpt4"},
        "Error: model: unknown model 'gpt4' (see `vllm-hpc models list`, or pass a path "
        "or Hugging Face id containing '/')",
        id="unknown-model-from-env",
    ),
    pytest.param(
        ["submit", "-m", "a/b", "--nodes", "0", "--dry-run"],
        {},
        "Error: Invalid value for '--nodes' / '-N': 0 is not in the range x>=1. "
        "(see 'vllm-hpc submit --help')",
        id="zero-nodes",
    ),
    pytest.param(
        ["submit", "-m", "a/b", "--tp", "two", "--dry-run"],
        {},
        "Error: Invalid value for '--tp': 'two' is not a valid integer range. "
        "(see 'vllm-hpc submit --help')",
        id="tp-not-int",
    ),
    pytest.param(
        ["submit", "-m", "a/b", "--frobnicate", "--dry-run"],
        {},
        "Error: No such option '--frobnicate'. Did you mean '--job-name'? (see 'vllm-hpc "
        "submit --help')",
        id="unknown-option",
    ),
    pytest.param(
        [
            "submit",
            "-m",
            "llama-3.1-70b-instruct",
            "--tp",
            "3",
            "--nodes",
            "2",
            "--gpus-per-node",
            "4",
            "--dry-run",
        ],
        {},
        "Error: layout: TP=3 x PP=1 x DP=1 = 3 GPUs, but the allocation is 2 node(s) x "
        "4 GPU(s) = 8 (request 3 GPUs in all (nodes x gpus-per-node))",
        id="layout-mismatch",
    ),
    pytest.param(
        ["submit", "-m", "llama-3.1-70b-instruct", "--nodes", "4", "--dry-run"],
        {},
        "Error: layout: TP=4 x PP=2 x DP=1 = 8 GPUs, but the allocation is 4 node(s) x "
        "4 GPU(s) = 16 (make the product 16 (e.g. --pp 4) or request 8 GPUs in all)",
        id="registry-layout-vs-nodes",
    ),
    pytest.param(
        ["submit", "-m", "a/b", "--tp", "8", "--nodes", "2", "--gpus-per-node", "4", "--dry-run"],
        {},
        "Error: tp: TP=8 is larger than the 4 GPUs of one node (use --tp 4 --pp 2, or "
        "--allow-cross-node-tp if the nodes share InfiniBand/RoCE)",
        id="cross-node-tp",
    ),
    pytest.param(
        [
            "submit",
            "-m",
            "a/b",
            "--tp",
            "2",
            "--dp",
            "3",
            "--nodes",
            "2",
            "--gpus-per-node",
            "3",
            "--dry-run",
        ],
        {},
        "Error: tp: TP=2 does not divide the 3 GPUs of a node (choose a TP that divides "
        "GPUs per node)",
        id="tp-not-dividing-node",
    ),
    pytest.param(
        [
            "submit",
            "-m",
            "a/b",
            "--pp",
            "2",
            "--dp",
            "3",
            "--nodes",
            "2",
            "--gpus-per-node",
            "3",
            "--dry-run",
        ],
        {},
        "Error: dp: DP=3 cannot be spread evenly over 2 nodes (use a DP that is a multiple of 2)",
        id="dp-uneven",
    ),
    pytest.param(
        ["submit", "-m", "llama-3.2-3b-instruct", "--ep", "--dry-run"],
        {},
        "Error: ep: expert parallel needs DP or TP > 1 to have something to spread "
        "experts over (add --dp N (usually one rank per GPU))",
        id="ep-alone",
    ),
    pytest.param(
        ["submit", "-m", "{model}", "--tp", "8", "--dry-run"],
        {},
        "Error: tp: 4 attention heads cannot be split TP=8 ways (use --tp 4 (divides "
        "both the heads and the GPUs per node))",
        id="tp-vs-heads",
    ),
    pytest.param(
        ["submit", "-m", "{model}", "--pp", "3", "--dry-run"],
        {},
        "Error: pp: PP=3 is more than the model's 2 layers (use --pp 2 or fewer)",
        id="pp-vs-layers",
    ),
    pytest.param(
        ["submit", "-m", "{model}", "--dp", "2", "--ep", "--dry-run"],
        {},
        "Error: ep: expert parallel needs an MoE model; llama has no experts (drop --ep)",
        id="ep-dense-model",
    ),
    pytest.param(
        ["submit", "-m", "{tmp}", "--dry-run"],
        {},
        "Error: model: {tmp} has no config.json (point --model at a Hugging Face model dir)",
        id="model-dir-without-config",
    ),
    pytest.param(
        ["submit", "-m", "{big}", "--gpu-memory-gib", "24", "--dry-run"],
        {},
        "Error: memory: needs ~",
        id="model-too-big",
    ),
    pytest.param(
        ["submit", "-m", "a/b", "--port", "80", "--dry-run"],
        {},
        "Error: --port: Input should be greater than or equal to 1024 (got 80)",
        id="privileged-port",
    ),
    pytest.param(
        ["submit", "-m", "llama-3.1-70b-instruct", "--port", "12000", "--dry-run"],
        {},
        "Error: --port: port 12000 is inside Ray's worker port range 10002-19999 "
        "(choose a port outside it, e.g. 8000 or 6379)",
        id="port-in-ray-range",
    ),
    pytest.param(
        ["submit", "-m", "llama-3.1-70b-instruct", "--ray-port", "8000", "--dry-run"],
        {},
        "Error: --ray-port: port 8000 is also used for --port",
        id="port-clash",
    ),
    pytest.param(
        ["submit", "-m", "a/b", "--time", "4h", "--dry-run"],
        {},
        "Error: --time: '4h' is not a SLURM time (use MM, HH:MM:SS or D-HH:MM:SS) (got '4h')",
        id="bad-time",
    ),
    pytest.param(
        ["submit", "-m", "a/b", "--job-name", "My Job", "--dry-run"],
        {},
        "Error: --job-name: 'My Job' is not a job name (lowercase letters, "
        "digits, '.', '_', '-') (got 'My Job')",
        id="bad-job-name",
    ),
    pytest.param(
        ["submit", "-m", "a/b", "--container", "docker:vllm", "--dry-run"],
        {},
        "Error: --container: 'docker:vllm' is not a container spec (use "
        "apptainer:IMAGE.sif, singularity:IMAGE.sif or enroot:IMAGE)",
        id="bad-container",
    ),
    pytest.param(
        [
            "submit",
            "-m",
            "llama-3.1-70b-instruct",
            "--runtime",
            "native",
            "--vllm-version",
            "0.10.2",
            "--dry-run",
        ],
        {},
        "Error: vllm_version: multi-node without Ray (--runtime native) needs vLLM >= "
        "0.11.1, the target is 0.10.2 (upgrade vLLM to 0.11.1 or newer, or set "
        "vllm_version if the nodes have it)",
        id="native-on-old-vllm",
    ),
    pytest.param(
        ["submit", "-m", "a/b", "--vllm-version", "latest", "--dry-run"],
        {},
        "Error: vllm_version: 'latest' is not a version (use a version such as 0.11.1)",
        id="bad-vllm-version",
    ),
    pytest.param(
        ["submit", "-m", "a/b", "--runtime", "mpi", "--dry-run"],
        {},
        "Error: Invalid value for '--runtime': 'mpi' is not one of 'auto', 'ray', "
        "'native'. (see 'vllm-hpc submit --help')",
        id="bad-runtime",
    ),
    pytest.param(
        [
            "submit",
            "-m",
            "a/b",
            "--tp",
            "4",
            "--token-parallel-size",
            "2",
            "--gpus-per-node",
            "8",
            "--dry-run",
        ],
        {},
        "Error: token_parallel_size: upstream vLLM has no token parallelism (it exists "
        "only in research engine builds; if the nodes run one, declare `vllm_features: "
        "[token_parallel]` in the site file, else drop it)",
        id="token-parallel",
    ),
    pytest.param(
        ["submit", "-m", "a/b", "--api-key-file", "/nonexistent/key", "--dry-run"],
        {},
        "Error: --api-key-file: /nonexistent/key is not a file (write the key into a "
        "file readable only by you (chmod 600))",
        id="missing-key-file",
    ),
    pytest.param(
        ["submit", "-m", "a/b", "--registry", "/nonexistent.yaml", "--dry-run"],
        {},
        "Error: registry: /nonexistent.yaml does not exist (check the --registry / env path)",
        id="missing-registry",
    ),
    pytest.param(
        ["submit", "-m", "x", "--registry", "{reg:unknown_key}", "--dry-run"],
        {},
        "Error: {reg:unknown_key}: models.x: unknown key 'tp' (valid keys: model,",
        id="registry-unknown-key",
    ),
    pytest.param(
        ["submit", "-m", "x", "--registry", "{reg:syntax}", "--dry-run"],
        {},
        "Error: {reg:syntax}:4: YAML syntax error:",
        id="registry-syntax",
    ),
    pytest.param(
        ["submit", "-m", "x", "--registry", "{reg:type}", "--dry-run"],
        {},
        "Error: {reg:type}: models.x.max_model_len: Input should be a valid integer, "
        "unable to parse string as an integer (got 'long')",
        id="registry-type",
    ),
    pytest.param(
        [
            "submit",
            "-m",
            "x",
            "--registry",
            "{reg:pplx}",
            "--nodes",
            "1",
            "--gpus-per-node",
            "2",
            "--dry-run",
        ],
        {},
        "Error: all2all_backend: 'pplx' was removed from vLLM (use 'allgather_reducescatter')",
        id="registry-removed-all2all",
    ),
    pytest.param(
        ["submit", "-m", "a/b", "--dry-run"],
        {"VLLM_HPC_SITE_CONFIG": "{reg:site_time}"},
        "Error: {reg:site_time}: site.time: 'soon' is not a SLURM time",
        id="site-bad-time",
    ),
    pytest.param(
        ["models", "show", "nope"],
        {},
        "Error: model: unknown model 'nope' (see `vllm-hpc models list`, or pass a path "
        "or Hugging Face id containing '/')",
        id="models-show-unknown",
    ),
]


@pytest.mark.parametrize(("args", "env", "expected"), BAD_INPUTS)
def test_bad_input_is_one_clear_line(
    args: list[str],
    env: dict[str, str],
    expected: str,
    tmp_path: Path,
    tiny_model: Callable[..., Path],
) -> None:
    regs = _registry_cases(tmp_path)
    empty = tmp_path / "empty-model"
    empty.mkdir()
    values = {
        "{model}": str(tiny_model()),
        "{tmp}": str(empty),
        "{big}": str(
            tiny_model(
                hidden_size=8192,
                intermediate_size=28672,
                num_attention_heads=64,
                num_key_value_heads=8,
                num_hidden_layers=80,
                vocab_size=128256,
            )
        ),
    }
    values.update({f"{{reg:{k}}}": v for k, v in regs.items()})

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    code, out, err = run([fill(a) for a in args], {k: fill(v) for k, v in env.items()})
    assert code == 2, (out, err)
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(fill(expected)), err


def test_debug_shows_the_traceback() -> None:
    with pytest.raises(Exception, match="no model given"):
        main(["--debug", "submit", "--dry-run"])
