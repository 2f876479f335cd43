"""The command line through click's test runner: help, models, dry runs.

Bad input at every door (flags, registry files, sbatch environment, bash wrappers) is
in test_bad_flags.py, test_bad_registries.py and test_bad_scripts.py; ``run`` is
helpers/cli.py's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launchers.cli import main

from .helpers.cli import run


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


def test_debug_shows_the_traceback() -> None:
    with pytest.raises(Exception, match="no model given"):
        main(["--debug", "submit", "--dry-run"])


@pytest.mark.parametrize(
    ("flag", "bound"),
    [([], "0.0.0.0"), (["--host", "node"], "@NODE_IP@"), (["--host", "127.0.0.1"], "127.0.0.1")],
)
def test_host_picks_where_the_api_listens(flag: list[str], bound: str) -> None:
    code, out, err = run(["submit", "-m", "a/b", "--dry-run", "--json", *flag])
    assert code == 0, err
    serve = json.loads(out)["plan"]["roles"][0]["serve_argv"]
    assert serve[serve.index("--host") + 1] == bound


def test_dp_backend_ray_is_one_serve_on_the_leader_over_ray() -> None:
    code, out, err = run(
        ["submit", "-m", "a/b", "-N", "2", "-G", "1", "--dp", "2", "--dp-backend", "ray",
         "--dry-run", "--json"]
    )  # fmt: skip
    assert code == 0, err
    plan = json.loads(out)["plan"]
    assert plan["runtime"] == "ray"
    leader, worker = plan["roles"]
    serve = leader["serve_argv"]
    assert serve[serve.index("--data-parallel-size") + 1] == "2"
    assert serve[serve.index("--data-parallel-size-local") + 1] == "1"
    assert serve[serve.index("--data-parallel-backend") + 1] == "ray"
    assert "--headless" not in serve and "--distributed-executor-backend" not in serve
    assert worker["serve_argv"] is None and worker["ray_argv"][:2] == ["ray", "start"]


def test_the_dry_run_says_what_slurm_is_asked_for_first_and_what_to_do_last() -> None:
    args = ["submit", "-m", "llama-3.2-3b-instruct", "-p", "gpu", "--qos", "high", "--dry-run"]
    code, out, err = run(args)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert (
        "  slurm     partition gpu, account (your default), QOS high, "
        "time (the partition's default)"
    ) in lines[2:8]  # near the top: in the summary, beside the layout
    assert lines[-3:] == [
        "",
        "drop --dry-run to submit; or, with the same options, write it for another launcher:",
        "  vllm-hpc render sbatch|k8s|compose|ray-cluster|swarm",
    ]
    script = lines.index("The sbatch script (given to sbatch as it is)")
    assert lines[script - 1] == lines[script + 1] == lines[-4] == "=" * 72
    assert lines.index("#SBATCH --partition=gpu") > script  # the whole script is last
    assert "Node 0 (leader)" in lines[:script]


def test_every_command_is_found_under_its_name_and_loaded_when_asked_for() -> None:
    import click

    from launchers.cli import COMMANDS, cli

    context = click.Context(cli)
    assert cli.list_commands(context) == sorted(COMMANDS)
    for name in COMMANDS:
        command = cli.get_command(context, name)
        assert command is not None and command.name == name
    assert cli.get_command(context, "no-such-command") is None


def test_every_command_and_subcommand_has_its_help() -> None:
    """The lazy group's ``--help`` lists every command but the hidden (internal) ones
    with its short help, and each command and subcommand (its module imported when asked
    for) prints its own."""
    import click
    from click.testing import CliRunner

    from launchers.cli import COMMANDS, cli

    done = CliRunner().invoke(cli, ["--help"], terminal_width=200)
    assert done.exit_code == 0, done.output
    listed = {
        line.split()[0]: line.split(None, 1)[1:]
        for line in done.output.split("Commands:\n", 1)[1].splitlines()
        if line.strip()
    }
    context = click.Context(cli)
    loaded = [cli.get_command(context, name) for name in COMMANDS]
    shown = [str(c.name) for c in loaded if isinstance(c, click.Command) and not c.hidden]
    assert sorted(listed) == sorted(shown) and len(shown) >= 15, listed
    assert all(short for short in listed.values()), listed

    def paths(group: click.Group, path: list[str]) -> list[list[str]]:
        found: list[list[str]] = []
        context = click.Context(group)
        for name in group.list_commands(context):
            command = group.get_command(context, name)
            assert command is not None, name
            found.append([*path, name])
            if isinstance(command, click.Group):
                found += paths(command, [*path, name])
        return found

    every = paths(cli, [])
    assert len(every) > len(COMMANDS)  # the groups' subcommands too
    for path in every:
        done = CliRunner().invoke(cli, [*path, "--help"])
        assert done.exit_code == 0, (path, done.output)
        assert done.output.startswith("Usage:"), (path, done.output)


def test_every_json_option_is_the_one_shared_option() -> None:
    """Every command with ``--json`` declares it through ``cli.jobs.json_option``: the
    same flag, parameter and help text everywhere."""
    import click

    from launchers.cli import cli
    from launchers.cli.jobs import json_option

    @json_option
    def shared(as_json: bool) -> None: ...

    expected = click.command()(shared).params[0].to_info_dict()

    def commands(group: click.Group, path: str) -> list[tuple[str, click.Command]]:
        found: list[tuple[str, click.Command]] = []
        context = click.Context(group)
        for name in group.list_commands(context):  # the CLI's commands load when asked for
            command = group.get_command(context, name)
            assert command is not None, name
            found.append((f"{path} {name}", command))
            if isinstance(command, click.Group):
                found += commands(command, f"{path} {name}")
        return found

    with_json = {
        path: [p.to_info_dict() for p in command.params if "--json" in p.opts]
        for path, command in commands(cli, "vllm-hpc")
    }
    with_json = {path: params for path, params in with_json.items() if params}
    assert len(with_json) >= 13, sorted(with_json)
    assert {path: [expected] for path in with_json} == with_json
