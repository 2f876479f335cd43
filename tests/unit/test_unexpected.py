"""An exception that is not the runtime's own still ends every rank FAILED with a reason:
``endpoint.json`` on the leader, ``failed/<rank>.json`` on the others, the traceback in
the node log, the children stopped, a non-zero exit."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launchers import health, installed, jobdir
from launchers.errors import LayoutError
from launchers.jobdir import jobfiles
from launchers.plan.launch import LaunchPlan
from launchers.runtime import follower, leader, ray_cluster, run
from launchers.runtime.context import NodeContext

from .helpers.runtime import Stopped, leader_task, logged_ctx, ray_follower, read_failure


def _one_traceback(job_dir: Path, rank: int, last: str) -> None:
    log = (job_dir / f"node-{rank}.log").read_text()
    assert "Traceback (most recent call last):" in log, log
    assert f"FAILED: {last}" in log, log


UNEXPECTED = [
    pytest.param(
        FileNotFoundError(errno.ENOENT, "No such file or directory", "apptainer"),
        "FileNotFoundError: [Errno 2] No such file or directory: 'apptainer'",
        id="missing-executable",
    ),
    pytest.param(
        OSError(errno.ENOSPC, "No space left on device"),
        "OSError: [Errno 28] No space left on device",
        id="full-file-system",
    ),
    pytest.param(
        ValueError("invalid literal for int() with base 10:\n'x'"),
        "ValueError: invalid literal for int() with base 10: 'x'",
        id="a-two-line-message-on-one-line",
    ),
]


@pytest.mark.parametrize(("exc", "reason"), UNEXPECTED)
def test_the_leader_ends_failed_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: Exception, reason: str
) -> None:
    ctx = logged_ctx(tmp_path, 0)
    serve = Stopped("vllm", str(tmp_path / "vllm-0.log"))
    monkeypatch.setattr(leader, "require_vllm", lambda ctx, argv: None)
    monkeypatch.setattr(leader, "free_ports", lambda ctx, task, endpoint: task)
    monkeypatch.setattr(leader, "start_serve", lambda ctx, task: serve)

    def supervise(*args: Any) -> int:
        raise exc

    monkeypatch.setattr(leader, "supervise", supervise)
    assert leader.lead(ctx, leader_task(ray=False)) == 1
    ending = jobfiles.read(ctx.endpoint_file, jobfiles.Endpoint)
    assert ending is not None
    assert (ending.state, ending.message) == ("FAILED", reason)
    assert serve.stopped
    _one_traceback(tmp_path, 0, reason)


def test_a_follower_records_an_unexpected_failure_before_its_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A leader.json whose port is out of range: the socket layer raises OverflowError.
    def wait_for_port(*args: Any, **kwargs: Any) -> float:
        raise OverflowError("getsockaddrarg: port must be 0-65535.")

    monkeypatch.setattr(health, "wait_for_port", wait_for_port)
    ctx = logged_ctx(tmp_path, 1)
    assert follower.run_follower(ctx, ray_follower()) == 1
    failure = read_failure(tmp_path, 1)
    assert failure is not None
    reason = "OverflowError: getsockaddrarg: port must be 0-65535."
    assert (failure.rank, failure.attempt, failure.message) == (1, 0, reason)
    _one_traceback(tmp_path, 1, reason)


@pytest.mark.parametrize(("exc", "reason"), UNEXPECTED)
def test_a_follower_records_an_unexpected_failure_and_stops_its_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: Exception, reason: str
) -> None:
    child = Stopped("ray-worker", str(tmp_path / "ray-1.log"))
    monkeypatch.setattr(health, "wait_for_port", lambda *a, **k: 0.0)
    monkeypatch.setattr(ray_cluster, "start_ray", lambda *a, **k: child)

    def port_open(*args: Any, **kwargs: Any) -> bool:
        raise exc

    monkeypatch.setattr(health, "port_open", port_open)
    ctx = logged_ctx(tmp_path, 1)
    assert follower.run_follower(ctx, ray_follower()) == 1
    failure = read_failure(tmp_path, 1)
    assert failure is not None
    assert failure.message == reason
    assert child.stopped
    _one_traceback(tmp_path, 1, reason)


def _context_in(job_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run.context`` without a network probe: the context of a test node."""

    def context(*, rank: int, **kwargs: Any) -> NodeContext:
        return logged_ctx(job_dir, rank)

    monkeypatch.setattr(run, "context", context)


def test_a_leader_that_fails_before_its_role_starts_ends_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_plan: Callable[..., LaunchPlan]
) -> None:
    _context_in(tmp_path, monkeypatch)

    def ensure_secret(path: str, what: str = "") -> bool:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jobdir, "ensure_secret", ensure_secret)
    plan = make_plan(model="llama-3.2-3b-instruct")
    assert run.run_plan(plan, rank=0, job_id="7", environ={}) == 1
    ending = jobfiles.read(tmp_path / "endpoint.json", jobfiles.Endpoint)
    assert ending is not None
    reason = "OSError: [Errno 28] No space left on device"
    assert (ending.state, ending.message, ending.job_id) == ("FAILED", reason, "7")
    _one_traceback(tmp_path, 0, reason)


def test_a_follower_that_fails_before_its_role_starts_leaves_a_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_plan: Callable[..., LaunchPlan]
) -> None:
    _context_in(tmp_path, monkeypatch)

    def installed_version(*names: str) -> str | None:
        raise PermissionError(errno.EACCES, "Permission denied", "/site-packages/ray")

    monkeypatch.setattr(installed, "installed_version", installed_version)
    plan = make_plan(model="llama-3.1-70b-instruct", nodes=2, gpus_per_node=4)
    assert plan.ray_token_file  # Ray's version is asked for its token auth
    assert run.run_plan(plan, rank=1, job_id="7", environ={}) == 1
    failure = read_failure(tmp_path, 1)
    assert failure is not None
    assert failure.message == (
        "PermissionError: [Errno 13] Permission denied: '/site-packages/ray'"
    )


def test_a_runtime_error_before_the_role_is_recorded_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_plan: Callable[..., LaunchPlan]
) -> None:
    _context_in(tmp_path, monkeypatch)
    plan = make_plan(model="llama-3.2-3b-instruct")
    with pytest.raises(LayoutError) as caught:
        run.run_plan(plan, rank=3, job_id="7", environ={})
    failure = read_failure(tmp_path, 3)
    assert failure is not None
    assert failure.message == caught.value.one_line()
