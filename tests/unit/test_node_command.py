"""How the node runtime builds each child's argv and environment (no process started)."""

from __future__ import annotations

from launchers.config import ContainerSpec
from launchers.node import LeaderTask, NodeContext, NodeLog, Stopper, _who_can_reach


def context(container: ContainerSpec | None) -> NodeContext:
    host = {"PATH": "/usr/bin:/bin", "HOME": "/home/alice", "SLURM_JOB_ID": "7"}
    return NodeContext(
        rank=0,
        nodes=2,
        job_id="7",
        job_dir="/shared/jobs/7",
        attempt=0,
        node_ip="10.0.0.1",
        iface_reason="test",
        env={**host, "VLLM_HOST_IP": "10.0.0.1", "NCCL_SOCKET_IFNAME": "ib0"},
        log=NodeLog(0, None),
        stopper=Stopper(),
        host_env=host,
        container=container,
        binds=["/shared/jobs", "/shared/models/m"],
    )


def test_direct_command_keeps_the_environment() -> None:
    argv, env = context(None).command(["vllm", "serve", "m"], {"VLLM_API_KEY": "sk-1"})
    assert argv[1:] == ["serve", "m"] and argv[0].endswith("vllm")
    assert env["VLLM_API_KEY"] == "sk-1" and env["VLLM_HOST_IP"] == "10.0.0.1"


def test_apptainer_wraps_and_hides_secrets() -> None:
    ctx = context(ContainerSpec.parse("apptainer:/images/vllm.sif"))
    argv, env = ctx.command(["vllm", "serve", "m"], {"VLLM_API_KEY": "sk-1"})
    assert argv[:4] == ["apptainer", "exec", "--nv", "--cleanenv"]
    assert argv[-4:] == ["/images/vllm.sif", "vllm", "serve", "m"]
    assert "--bind" in argv and "/shared/jobs:/shared/jobs" in argv
    assert "VLLM_HOST_IP=10.0.0.1" in argv and "NCCL_SOCKET_IFNAME=ib0" in argv
    assert not any("sk-1" in item for item in argv)
    assert env["APPTAINERENV_VLLM_API_KEY"] == "sk-1"
    assert ctx.python_argv() == ["python3"]


def test_enroot_runs_the_step_in_the_image_so_no_wrapping() -> None:
    ctx = context(ContainerSpec.parse("enroot:nvcr.io#nvidia/vllm:25.10"))
    argv, _ = ctx.command(["ray", "start", "--head"])
    assert argv[1:] == ["start", "--head"]


def _task(host: str | None, key: str | None) -> LeaderTask:
    argv = ["vllm", "serve", "m", *(["--host", host] if host else []), "--port", "8000"]
    return LeaderTask(
        ray_argv=None, serve_argv=argv, serve_env={}, ray_port=6379, api_port=8000,
        served_model_name="m", expected_nodes=1, nodes_timeout=1, ready_timeout=1,
        api_key_file=key,
    )  # fmt: skip


def test_the_ready_banner_says_who_can_reach_the_api() -> None:
    ctx = context(None)
    host = ctx.hostname
    assert _who_can_reach(ctx, _task("0.0.0.0", "/j/api_key")) == (
        f"reachable on every interface of {host}: anyone who reaches {host}:8000, "
        "with the API key in /j/api_key"
    )
    assert _who_can_reach(ctx, _task(None, None)).endswith(
        "with no API key (anyone who reaches it can use the model)"
    )
    assert _who_can_reach(ctx, _task("127.0.0.1", None)).startswith(
        f"reachable on loopback only: processes on {host}"
    )
    assert _who_can_reach(ctx, _task("10.0.0.5", "k")).startswith(
        "reachable on 10.0.0.5: anyone who reaches 10.0.0.5:8000"
    )
