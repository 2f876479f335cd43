"""The time-limit warning (SIGUSR1 from ``--signal=B:USR1@N``, submitit's SIGUSR2) on a
follower: the leader drains vLLM, the follower keeps its part of the job until the leader
has ended; SIGTERM still stops it at once."""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from launchers import health
from launchers.jobdir import jobfiles
from launchers.jobdir.paths import JobDir
from launchers.runtime import follower, ray_cluster

from .helpers.runtime import Stopped, leader_task, logged_ctx, ray_follower, read_failure


class Signalling(Stopped):
    """A child that sends this process ``sig`` on its 2nd poll and, from its 4th, sees
    the leader's endpoint.json say ``leader_state``."""

    def __init__(self, log_path: str, sig: int, job_dir: Path, leader_state: str) -> None:
        super().__init__("ray-worker", log_path)
        self.sig, self.job_dir, self.leader_state, self.polls = sig, job_dir, leader_state, 0

    def poll(self) -> int | None:
        self.polls += 1
        if self.polls == 2:
            os.kill(os.getpid(), self.sig)
        if self.polls == 4:
            jobfiles.write(
                self.job_dir / "endpoint.json",
                jobfiles.Endpoint(state=self.leader_state, message="stopped by SIGUSR1"),
            )
        return None


@pytest.fixture
def handlers() -> Iterator[None]:
    """Put back this process's signal handlers after a test that signals itself."""
    sigs = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    saved = {sig: signal.getsignal(sig) for sig in sigs}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2])
def test_a_follower_outlasts_the_time_limit_warning_until_the_leader_has_drained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handlers: None, sig: int
) -> None:
    child = Signalling(str(tmp_path / "ray-1.log"), sig, tmp_path, "STOPPED")
    monkeypatch.setattr(health, "wait_for_port", lambda *a, **k: 0.0)
    monkeypatch.setattr(health, "port_open", lambda *a, **k: True)
    monkeypatch.setattr(ray_cluster, "start_ray", lambda *a, **k: child)
    ctx = logged_ctx(tmp_path, 1)
    assert follower.run_follower(ctx, ray_follower()) == 0
    assert child.polls >= 4  # still there after the warning, until the leader ended
    assert child.stopped
    log = (tmp_path / "node-1.log").read_text()
    assert "the leader is STOPPED; leaving" in log, log
    assert "stopping: " not in log, log


def test_sigterm_still_stops_a_follower_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handlers: None
) -> None:
    child = Signalling(str(tmp_path / "ray-1.log"), signal.SIGTERM, tmp_path, "READY")
    monkeypatch.setattr(health, "wait_for_port", lambda *a, **k: 0.0)
    monkeypatch.setattr(health, "port_open", lambda *a, **k: True)
    monkeypatch.setattr(ray_cluster, "start_ray", lambda *a, **k: child)
    ctx = logged_ctx(tmp_path, 1)
    assert follower.run_follower(ctx, ray_follower()) == 0
    assert child.polls == 2 and child.stopped
    assert "stopping: SIGTERM (scancel or shutdown)" in (tmp_path / "node-1.log").read_text()


def test_a_follower_still_waiting_for_a_stopped_leader_stops_without_failing(
    tmp_path: Path, handlers: None
) -> None:
    jobfiles.write(
        tmp_path / "endpoint.json",
        jobfiles.Endpoint(state="STOPPED", message="stopped by SIGUSR1 (time limit near)"),
    )
    ctx = logged_ctx(tmp_path, 1)
    task = dataclasses.replace(ray_follower(), leader_ip=None)
    assert follower.run_follower(ctx, task) == 0
    assert read_failure(tmp_path, 1) is None


class Draining(Stopped):
    """vllm serve: sends this process SIGUSR1 (the batch shell's warning, passed on by
    srun) on its 2nd poll; records the grace its stop is given."""

    def __init__(self, log_path: str) -> None:
        super().__init__("vllm", log_path)
        self.polls, self.grace = 0, -1.0

    def poll(self) -> int | None:
        self.polls += 1
        if self.polls == 2:
            os.kill(os.getpid(), signal.SIGUSR1)
        return None

    def stop(self, grace: float = 0.0) -> None:
        self.stopped, self.grace = True, grace

    def drain(self, wait: float, grace: float) -> None:
        self.stopped, self.grace, self.drained = True, wait, True


def test_the_leader_drains_vllm_on_the_time_limit_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handlers: None
) -> None:
    from launchers.defaults import DRAIN_SECONDS
    from launchers.health import HttpAnswer
    from launchers.runtime import leader
    from launchers.runtime.supervise import SERVE_GRACE

    serve = Draining(str(tmp_path / "vllm-0.log"))
    monkeypatch.setattr(leader, "require_vllm", lambda ctx, argv: None)
    monkeypatch.setattr(leader, "free_ports", lambda ctx, task, endpoint: task)
    monkeypatch.setattr(leader, "start_serve", lambda ctx, task: serve)
    monkeypatch.setattr(health, "http_get", lambda *a, **k: HttpAnswer(False, None, "refused"))
    ctx = logged_ctx(tmp_path, 0)
    assert leader.lead(ctx, leader_task(ray=False)) == 0
    ending = jobfiles.read(ctx.endpoint_file, jobfiles.Endpoint)
    assert ending is not None
    assert (ending.state, ending.message) == ("STOPPED", "stopped by SIGUSR1 (time limit near)")
    # The warning comes well before the limit: vLLM's own drain (--shutdown-timeout
    # DRAIN_SECONDS) gets its full time, and SERVE_GRACE more before SIGKILL.
    assert serve.stopped and serve.grace == DRAIN_SECONDS + SERVE_GRACE
    assert getattr(serve, "drained", False)  # the API server alone was told
    log = (tmp_path / "node-0.log").read_text()
    assert (
        "draining vllm serve: SIGTERM to the API server alone, up to 75 s for in-flight "
        "requests (--shutdown-timeout 60), then the rest of its tree"
    ) in log


class Watched(Draining):
    """vllm serve that sends this process ``sig`` on its 2nd poll and records what
    endpoint.json says when the leader stops or drains it (the job is still running)."""

    def __init__(self, log_path: str, sig: int, endpoint: str) -> None:
        super().__init__(log_path)
        self.sig, self.endpoint, self.seen = sig, endpoint, ""

    def poll(self) -> int | None:
        self.polls += 1
        if self.polls == 2:
            os.kill(os.getpid(), self.sig)
        return None

    def _look(self) -> None:
        info = jobfiles.read(self.endpoint, jobfiles.Endpoint)
        self.seen = info.state if info is not None else "-"

    def stop(self, grace: float = 0.0) -> None:
        self._look()
        super().stop(grace)

    def drain(self, wait: float, grace: float) -> None:
        self._look()
        super().drain(wait, grace)


@pytest.mark.parametrize(
    ("sig", "reason"),
    [
        (signal.SIGUSR1, "SIGUSR1 (time limit near)"),
        (signal.SIGTERM, "SIGTERM (scancel or shutdown)"),
    ],
)
def test_the_leader_says_draining_while_it_stops_and_stopped_once_its_processes_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handlers: None, sig: int, reason: str
) -> None:
    """STOPPED is final for every reader (a follower leaves, a service forgets the
    replica): it is written only once vLLM has ended, DRAINING while it drains; on
    SIGTERM too (KillWait leaves the runtime time to write it)."""
    from launchers.health import HttpAnswer
    from launchers.runtime import leader

    ctx = logged_ctx(tmp_path, 0)
    serve = Watched(str(tmp_path / "vllm-0.log"), sig, ctx.endpoint_file)
    written: list[str] = []
    write = jobfiles.write

    def recording(path: str | Path, record: jobfiles.JobFile) -> None:
        if isinstance(record, jobfiles.Endpoint):
            written.append(record.state)
        write(path, record)

    monkeypatch.setattr(jobfiles, "write", recording)
    monkeypatch.setattr(leader, "require_vllm", lambda ctx, argv: None)
    monkeypatch.setattr(leader, "free_ports", lambda ctx, task, endpoint: task)
    monkeypatch.setattr(leader, "start_serve", lambda ctx, task: serve)
    monkeypatch.setattr(health, "http_get", lambda *a, **k: HttpAnswer(False, None, "refused"))
    assert leader.lead(ctx, leader_task(ray=False)) == 0
    assert serve.stopped and serve.seen == "DRAINING"  # while vLLM was being stopped
    assert written[-2:] == ["DRAINING", "STOPPED"], written
    ending = jobfiles.read(ctx.endpoint_file, jobfiles.Endpoint)
    assert ending is not None
    assert (ending.state, ending.message) == ("STOPPED", f"stopped by {reason}")
    assert "leader done (STOPPED)" in (tmp_path / "node-0.log").read_text()


def test_a_follower_stays_while_the_leader_drains_and_leaves_once_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handlers: None
) -> None:
    """DRAINING is not final: the Ray worker the leader's vLLM still uses stays."""

    class Watching(Stopped):
        def __init__(self, log_path: str) -> None:
            super().__init__("ray-worker", log_path)
            self.polls = 0

        def poll(self) -> int | None:
            self.polls += 1
            state = "DRAINING" if self.polls < 6 else "STOPPED"
            jobfiles.write(tmp_path / "endpoint.json", jobfiles.Endpoint(state=state))
            return None

    child = Watching(str(tmp_path / "ray-1.log"))
    monkeypatch.setattr(health, "wait_for_port", lambda *a, **k: 0.0)
    monkeypatch.setattr(health, "port_open", lambda *a, **k: True)
    monkeypatch.setattr(ray_cluster, "start_ray", lambda *a, **k: child)
    ctx = logged_ctx(tmp_path, 1)
    assert follower.run_follower(ctx, ray_follower()) == 0
    assert child.polls >= 6 and child.stopped
    assert "the leader is STOPPED; leaving" in (tmp_path / "node-1.log").read_text()


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("handover", "SIGUSR1 (handover)"),
        ("scale down", "SIGUSR1 (scale down)"),
        ("service down", "SIGUSR1 (service down)"),
        (None, "SIGUSR1 (time limit near)"),  # no stop.json: SLURM's own warning
        ("stale", "SIGUSR1 (time limit near)"),  # one older than this runtime
    ],
)
def test_the_leader_names_the_services_reason_for_a_drain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handlers: None, written: str | None,
    said: str,
) -> None:  # fmt: skip
    """A service's controller writes stop.json before it sends the warning: the leader
    says why it stops (log and endpoint.json), and still drains vLLM as for the limit."""
    from launchers.health import HttpAnswer
    from launchers.runtime import leader

    serve = Draining(str(tmp_path / "vllm-0.log"))
    monkeypatch.setattr(leader, "require_vllm", lambda ctx, argv: None)
    monkeypatch.setattr(leader, "free_ports", lambda ctx, task, endpoint: task)
    monkeypatch.setattr(leader, "start_serve", lambda ctx, task: serve)
    monkeypatch.setattr(health, "http_get", lambda *a, **k: HttpAnswer(False, None, "refused"))
    ctx = logged_ctx(tmp_path, 0)
    if written is not None:
        stale = written == "stale"
        reason = jobfiles.StopReason(
            reason="handover" if stale else written,
            time=ctx.created - 60 if stale else ctx.created + 1,
        )
        jobfiles.write(JobDir(ctx.job_dir).stop, reason)
    assert leader.lead(ctx, leader_task(ray=False)) == 0
    assert getattr(serve, "drained", False)  # drained as for the time limit
    log = (tmp_path / "node-0.log").read_text()
    assert f"stopping: {said}\n" in log, log
    ending = jobfiles.read(ctx.endpoint_file, jobfiles.Endpoint)
    assert ending is not None and ending.message == f"stopped by {said}"
