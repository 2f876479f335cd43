"""Container runtimes: the exact argv and environment for Apptainer, Singularity and
enroot/pyxis (golden), binds a plan needs, and secrets never on a command line.
Also the structure of the shipped image definitions. No container runtime runs here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launchers.errors import InputError
from launchers.input import wrapper
from launchers.plan.argv import (
    build_srun_container_options,
    container_env,
    required_binds,
    wrap_argv,
    wrap_env,
)
from launchers.plan.launch import LaunchPlan, fill_placeholders
from launchers.render.containers import (
    VLLM_BASE_IMAGE,
    build_leader_wrapper_argv,
    build_worker_wrapper_argv,
    wrapper_preflight_args,
)
from launchers.spec.config import ContainerSpec
from launchers.spec.secretenv import is_secret

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-never-on-a-command-line"  # noqa: S105 - a test value
HOST_ENV = {
    "HOME": "/home/alice",
    "PATH": "/usr/bin:/bin",
    "PYTHONPATH": "/host/site-packages",
    "LD_LIBRARY_PATH": "/sw/cuda/lib64",
    "CUDA_VISIBLE_DEVICES": "0,1,2,3",
    "SLURM_JOB_ID": "42",
    "SLURM_NODEID": "0",
    "HF_HOME": "/shared/hf",
}
COMPUTED = {
    "VLLM_HOST_IP": "10.0.0.1",
    "NCCL_SOCKET_IFNAME": "ib0",
    "GLOO_SOCKET_IFNAME": "ib0",
    "NCCL_IB_HCA": "mlx5_0,mlx5_1",
    "RAY_ADDRESS": "10.0.0.1:6379",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN_PATH": "/home/alice/.vllm-hpc/jobs/42/ray_token",
    "VLLM_API_KEY": SECRET,
}


def _serve_argv(launch: LaunchPlan) -> list[str]:
    argv = launch.roles[0].serve_argv or ()
    return fill_placeholders(
        argv, {"@LEADER_IP@": "10.0.0.1", "@NODE_IP@": "10.0.0.1", "@API_PORT@": "8000"}
    )


def test_golden_argv_and_env(
    make_plan: Callable[..., LaunchPlan], golden: Callable[[str, str], None]
) -> None:
    launch = make_plan(model="llama-3.1-70b-instruct", nodes=2, gpus_per_node=4)
    binds = required_binds(launch, HOST_ENV)
    env = container_env(HOST_ENV, COMPUTED)
    out: dict[str, object] = {"binds": binds, "container_env": env}
    for runtime in ("apptainer", "singularity"):
        spec = ContainerSpec.parse(f"{runtime}:/shared/images/vllm-hpc.sif")
        argv = wrap_argv(spec, _serve_argv(launch), binds=binds)
        out[runtime] = {"argv": argv, "child_env": wrap_env(spec, env)}
    enroot = ContainerSpec.parse("enroot:vllm/vllm-openai:v0.32.0")
    out["enroot_srun_options"] = build_srun_container_options(
        enroot, binds=binds, workdir=launch.paths.root
    )
    golden("containers.argv.json", json.dumps(out, indent=2) + "\n")


def test_the_environment_goes_in_by_environment_never_on_the_command_line() -> None:
    spec = ContainerSpec.parse("apptainer:/x.sif")
    env = container_env(HOST_ENV, {**COMPUTED, "HF_TOKEN": "hf_secret", "MY_PASSWORD": "pw"})
    argv = wrap_argv(spec, ["vllm", "serve", "m"], binds=["/shared"])
    child_env = wrap_env(spec, env)
    assert argv == [
        "apptainer", "exec", "--nv", "--cleanenv", "--bind", "/shared:/shared",
        "/x.sif", "vllm", "serve", "m",
    ]  # fmt: skip
    assert child_env["APPTAINERENV_VLLM_API_KEY"] == SECRET
    assert child_env["APPTAINERENV_HF_TOKEN"] == "hf_secret"  # noqa: S105
    assert child_env["APPTAINERENV_RAY_AUTH_TOKEN_PATH"].endswith("/ray_token")
    # a value with a comma needs no CSV quoting: it is never an --env argument
    assert child_env["APPTAINERENV_NCCL_IB_HCA"] == "mlx5_0,mlx5_1"
    assert child_env["APPTAINERENV_VLLM_HOST_IP"] == "10.0.0.1"
    assert child_env == {f"APPTAINERENV_{k}": v for k, v in env.items()}


def test_cleanenv_keeps_what_a_node_needs() -> None:
    env = container_env(HOST_ENV, {"VLLM_HOST_IP": "10.0.0.2"})
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3" and env["SLURM_JOB_ID"] == "42"
    assert "PYTHONPATH" not in env and "LD_LIBRARY_PATH" not in env and "PATH" not in env
    assert env["VLLM_HOST_IP"] == "10.0.0.2"


def test_singularity_uses_its_prefix() -> None:
    spec = ContainerSpec.parse("singularity:/x.sif")
    argv = wrap_argv(spec, ["ray"], binds=[])
    assert argv[0] == "singularity"
    assert wrap_env(spec, {"VLLM_API_KEY": "k"}) == {"SINGULARITYENV_VLLM_API_KEY": "k"}


@pytest.mark.parametrize("name", ["VLLM_API_KEY", "RAY_AUTH_TOKEN_PATH", "HF_TOKEN", "DB_PASSWORD"])
def test_is_secret(name: str) -> None:
    assert is_secret(name)


def test_not_secret() -> None:
    assert not any(is_secret(n) for n in ("VLLM_HOST_IP", "NCCL_IB_HCA", "RAY_ADDRESS"))


def test_binds_for_a_local_model_and_own_key(
    make_plan: Callable[..., LaunchPlan], tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    model = tiny_model()
    key = tmp_path / "key"
    key.write_text("x")
    key.chmod(0o600)  # a key file others can read is refused
    launch = make_plan(model=str(model), api_key_file=str(key), job_root="/shared/jobs")
    binds = required_binds(launch, {"HOME": "/home/alice"})
    # the key file and the model are both under tmp_path: both kept (not nested)
    assert binds == ["/shared/jobs", str(model), str(key), "/home/alice/.cache/huggingface"]
    nested = required_binds(launch, {"HF_HOME": "/shared/jobs/hf"})
    assert "/shared/jobs/hf" not in nested


def test_bad_binds_and_runtimes_are_refused() -> None:
    apptainer = ContainerSpec.parse("apptainer:/x.sif")
    enroot = ContainerSpec.parse("enroot:img")
    with pytest.raises(ValueError, match="absolute"):
        wrap_argv(apptainer, ["x"], binds=["relative/path"])
    with pytest.raises(ValueError, match="','"):
        build_srun_container_options(enroot, binds=["/a,b"])
    with pytest.raises(ValueError, match="wrap_argv"):
        build_srun_container_options(apptainer, binds=[])
    with pytest.raises(ValueError, match="not wrapped per process"):
        wrap_argv(enroot, ["x"], binds=[])


# The plan's pre-flight -> the image's wrapper options, on the leader and every worker.
BIG: dict[str, Any] = {"model": "llama-3.1-70b-instruct", "nodes": 2, "gpus_per_node": 4}
SMALL: dict[str, Any] = {"model": "llama-3.2-3b-instruct"}
PREFLIGHT_CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "default": (BIG, ["--preflight-port=29510"]),
    "fixed": ({**BIG, "preflight_port": 29999}, ["--preflight-port=29999"]),
    "off": ({**BIG, "no_preflight": True}, ["--no-preflight"]),
    "one node": (SMALL, []),
    "one node, off": ({**SMALL, "no_preflight": True}, []),
}


@pytest.mark.parametrize("case", sorted(PREFLIGHT_CASES))
def test_the_image_wrapper_gets_the_plans_preflight(
    case: str, make_plan: Callable[..., LaunchPlan]
) -> None:
    request, expected = PREFLIGHT_CASES[case]
    launch = make_plan(**request)
    assert wrapper_preflight_args(launch) == expected
    leader = build_leader_wrapper_argv(launch)
    worker = build_worker_wrapper_argv(launch, ray_address="head:6379")
    for argv in (leader, worker):
        # What the node's wrapper makes of it: the plan's choice, on every node.
        args = wrapper.parse(argv[1:])
        assert args.no_preflight == (expected == ["--no-preflight"])
        planned = launch.preflight.port if launch.preflight else 29510
        assert args.preflight_port == planned


def test_a_preflight_port_the_wrapper_would_refuse_is_refused(
    make_plan: Callable[..., LaunchPlan],
) -> None:
    # The default 29510 moves only under SLURM: the image's wrapper refuses the clash.
    launch = make_plan(**BIG, port=29510)
    with pytest.raises(InputError, match=r"--preflight-port: .* 29510 is also the API port"):
        build_leader_wrapper_argv(launch)
    off = make_plan(**BIG, port=29510, no_preflight=True)
    assert "--no-preflight" in build_leader_wrapper_argv(off)


def _def_sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {"header": []}
    current = "header"
    for line in text.splitlines():
        if line.startswith("%"):
            current = line.split()[0]
            assert current not in sections, f"section {current} twice"
            sections[current] = []
        elif line.strip() and not line.lstrip().startswith("#"):
            sections[current].append(line.strip())
    return sections


def test_apptainer_definition_structure() -> None:
    sections = _def_sections((ROOT / "containers/apptainer/vllm.def").read_text())
    assert sections["header"] == ["Bootstrap: docker", f"From: {VLLM_BASE_IMAGE}"]
    assert not VLLM_BASE_IMAGE.endswith((":latest", ":nightly"))
    assert set(sections) == {
        "header",
        "%labels",
        "%help",
        "%files",
        "%post",
        "%environment",
        "%runscript",
        "%test",
    }
    for line in sections["%files"]:
        src, dst = line.split()
        assert (ROOT / src).exists(), f"%files: {src} is not in the repository"
        assert dst.startswith("/opt/vllm-hpc/")
    assert any("pip install" in line for line in sections["%post"])
    assert sections["%runscript"] == ['exec /opt/vllm-hpc/bin/multi-node-serving.sh "$@"']


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("section", ["%post", "%environment", "%runscript", "%test"])
def test_apptainer_scripts_pass_shellcheck(section: str) -> None:
    body = _def_sections((ROOT / "containers/apptainer/vllm.def").read_text())[section]
    script = "#!/bin/sh\n" + "\n".join(body) + "\n"
    done = subprocess.run(
        ["shellcheck", "-s", "sh", "-"], input=script, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout


def test_dockerfile_matches_the_definition() -> None:
    text = (ROOT / "containers/docker/Dockerfile").read_text()
    assert re.search(rf"^FROM {re.escape(VLLM_BASE_IMAGE)}$", text, re.MULTILINE)
    assert "/opt/vllm-hpc/bin/multi-node-serving.sh" in text
    for src in re.findall(r"^COPY (.+) /opt/vllm-hpc", text, re.MULTILINE):
        for item in src.split():
            assert (ROOT / item).exists()
