"""bin/launch_vllm_node1.sh / node2.sh (the expert-parallel guide's interface), with a stub
Python on VLLM_HPC_PYTHON that records what it was asked to run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launchers import cli
from launchers.defaults import DEFAULT_PREFLIGHT_PORT
from launchers.plan.launch import LaunchPlan, Preflight
from launchers.runtime import preflight

from .helpers.scripts import DP_STUB, run_dp

SEED = ("10.1.59.30", "13345", "deepseek-ai/DeepSeek-V3-0324", "16", "8", "8")


@pytest.fixture
def stub(tmp_path: Path) -> dict[str, str]:
    python = tmp_path / "python"
    python.write_text(DP_STUB)
    python.chmod(0o755)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VLLM_", "SLURM_", "EP", "PREFLIGHT"))
    }
    env.update({"VLLM_HPC_PYTHON": str(python), "STUB_LOG": str(tmp_path / "log"),
                "VLLM_HPC_JOB_ROOT": "/jobs"})  # fmt: skip
    return env


def test_primary_node_seed_example(stub: dict[str, str]) -> None:
    done, calls = run_dp(stub, "launch_vllm_node1.sh", "10.1.59.30", "13345",
                         "deepseek-ai/DeepSeek-V3-0324", "16", "8", "8")  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan, node = calls
    assert plan[:3] == ["-m", "launchers", "plan"]
    for flag, value in (("--nodes", "2"), ("--gpus-per-node", "8"), ("--dp", "16"),
                        ("--api-server-count", "8"), ("--dp-rpc-port", "13345")):  # fmt: skip
        assert plan[plan.index(flag) + 1] == value
    assert "--ep" in plan
    assert node == ["-m", "launchers", "node", "run", "--plan",
                    "/jobs/dp-10-1-59-30-13345/plan-node0.json", "--rank", "0", "--job-id",
                    "dp-10-1-59-30-13345"]  # fmt: skip


def test_secondary_node_seed_example(stub: dict[str, str]) -> None:
    stub["VLLM_ALL2ALL_BACKEND"] = "deepep_low_latency"
    done, calls = run_dp(stub, "launch_vllm_node2.sh", "10.1.59.30", "13345",
                         "deepseek-ai/DeepSeek-V3-0324", "16", "8", "8")  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan, node = calls
    assert plan[plan.index("--all2all-backend") + 1] == "deepep_low_latency"
    assert "--api-server-count" not in plan
    assert node[node.index("--rank") + 1] == "1"
    assert node[-2:] == ["--leader-ip", "10.1.59.30"]


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        (
            "launch_vllm_node1.sh",
            ("1.2.3.4",),
            "Error: expected 6 arguments, got 1 (NODE1_IP RPC_PORT MODEL DP_TOTAL DP_LOCAL "
            "API_SERVERS; see launch_vllm_node1.sh -h)",
        ),
        (
            "launch_vllm_node2.sh",
            (),
            "Error: expected 6 arguments, got 0 (NODE1_IP RPC_PORT MODEL DP_TOTAL DP_LOCAL "
            "START_RANK; see launch_vllm_node2.sh -h)",
        ),
        (
            "launch_vllm_node1.sh",
            ("node1", "13345", "m", "16", "8", "8"),
            "Error: NODE1_IP must be an IP address (got 'node1'; see launch_vllm_node1.sh -h)",
        ),
        (
            "launch_vllm_node1.sh",
            ("1.2.3.4", "80", "m", "16", "8", "8"),
            "Error: RPC_PORT must be a port number 1024-65535 (got '80'; see "
            "launch_vllm_node1.sh -h)",
        ),
        (
            "launch_vllm_node1.sh",
            ("1.2.3.4", "13345", "m", "16", "6", "8"),
            "Error: DP_TOTAL (16) must be a multiple of DP_LOCAL (6): every node runs the same "
            "number of ranks",
        ),
        (
            "launch_vllm_node1.sh",
            ("1.2.3.4", "13345", "m", "16", "8", "0"),
            "Error: API_SERVERS must be a positive number (got '0'; see launch_vllm_node1.sh -h)",
        ),
        (
            "launch_vllm_node2.sh",
            ("1.2.3.4", "13345", "m", "16", "8", "4"),
            "Error: START_RANK must be a multiple of DP_LOCAL between 8 and 8 (got '4'; see "
            "launch_vllm_node2.sh -h)",
        ),
        (
            "launch_vllm_node2.sh",
            ("1.2.3.4", "13345", "m", "16", "8", "16"),
            "Error: START_RANK must be a multiple of DP_LOCAL between 8 and 8 (got '16'; see "
            "launch_vllm_node2.sh -h)",
        ),
    ],
)
def test_bad_arguments(
    stub: dict[str, str], script: str, args: tuple[str, ...], message: str
) -> None:
    done, calls = run_dp(stub, script, *args)
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == message
    assert calls == []


def _after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_both_nodes_plan_the_same_fixed_preflight_and_node2_meets_it_at_node1(
    stub: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each node plans on its own (they may not share the job root): both plan the
    pre-flight at the default port, fixed, and node 2, given NODE1_IP, meets it there."""
    jobs = tmp_path / "jobs"
    jobs.mkdir(mode=0o700)
    stub["VLLM_HPC_JOB_ROOT"] = str(jobs)
    plans = []
    for script in ("launch_vllm_node1.sh", "launch_vllm_node2.sh"):
        Path(stub["STUB_LOG"]).unlink(missing_ok=True)
        done, (plan, node) = run_dp(stub, script, *SEED)
        assert done.returncode == 0, done.stderr
        assert "--no-preflight" not in plan
        assert _after(plan, "--preflight-port") == str(DEFAULT_PREFLIGHT_PORT) == "29510"
        monkeypatch.setenv("VLLM_HPC_JOB_ROOT", str(jobs))
        with pytest.raises(SystemExit) as planned:  # the planner for real, as the node runs it
            cli.main(plan[2:])
        assert planned.value.code == 0
        plans.append(LaunchPlan.model_validate_json(Path(_after(plan, "--out")).read_text()))
    fixed = Preflight(port=29510, port_fixed=True)
    assert [p.preflight for p in plans] == [fixed, fixed]
    assert _after(node, "--leader-ip") == "10.1.59.30"
    assert preflight.meeting_address(fixed, _after(node, "--leader-ip")) == "10.1.59.30:29510"


@pytest.mark.parametrize(
    ("env", "given"),
    [
        ({"PREFLIGHT_PORT": "29600"}, ["--preflight-port", "29600"]),
        ({"PREFLIGHT_PORT": "029600"}, ["--preflight-port", "29600"]),  # decimal
        ({"PREFLIGHT": "0"}, ["--no-preflight"]),
        ({"PREFLIGHT": "0", "PREFLIGHT_PORT": "29600"}, ["--no-preflight"]),
    ],
)
def test_the_preflight_port_is_the_users_and_preflight_0_plans_none(
    stub: dict[str, str], env: dict[str, str], given: list[str]
) -> None:
    for script in ("launch_vllm_node1.sh", "launch_vllm_node2.sh"):
        Path(stub["STUB_LOG"]).unlink(missing_ok=True)
        done, (plan, _) = run_dp({**stub, **env}, script, *SEED)
        assert done.returncode == 0, done.stderr
        said = [a for a in plan if a in ("--preflight-port", "--no-preflight")]
        assert said == given[:1]
        assert plan[plan.index(given[0]) : plan.index(given[0]) + len(given)] == given


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PREFLIGHT_PORT": "80"}, "Error: PREFLIGHT_PORT must be a port number 1024-65535, the "
         "same on every node (got '80'; unset it for 29510)"),
        ({"PREFLIGHT_PORT": "x"}, "Error: PREFLIGHT_PORT must be a port number 1024-65535, the "
         "same on every node (got 'x'; unset it for 29510)"),
        ({"PREFLIGHT": "no"}, "Error: PREFLIGHT must be 1 (check the nodes' collectives before "
         "vLLM loads) or 0 (skip it, on every node) (got 'no')"),
    ],
)  # fmt: skip
def test_a_bad_preflight_setting_is_one_line(
    stub: dict[str, str], env: dict[str, str], message: str
) -> None:
    done, calls = run_dp({**stub, **env}, "launch_vllm_node2.sh", *SEED)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [message]
    assert calls == []


@pytest.mark.parametrize("script", ["launch_vllm_node1.sh", "launch_vllm_node2.sh"])
def test_the_usage_says_the_default_preflight_port(stub: dict[str, str], script: str) -> None:
    done, calls = run_dp(stub, script, "-h")
    assert done.returncode == 0 and calls == [], done.stderr
    assert f"PREFLIGHT_PORT (default {DEFAULT_PREFLIGHT_PORT}: where" in done.stdout
