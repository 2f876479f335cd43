"""The node runtime on a fake clock: the clock, children that run or record a stop, a
node's context, and the leader's and a Ray follower's tasks."""

from __future__ import annotations

from pathlib import Path

from launchers import waits
from launchers.jobdir import jobfiles
from launchers.jobdir.paths import JobDir
from launchers.plan.commands import JOB_ID, NODE_IP, NODE_RANK, RayStart, ServeStart
from launchers.plan.launch import JobPaths
from launchers.runtime.context import NodeContext, NodeLog, Stopper
from launchers.runtime.tasks import FollowerTask, LeaderTask


class FakeClock:
    """A clock whose ``sleep`` moves its time forward (no test sleeps)."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.slept = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.slept += seconds

    def clock(self) -> waits.Clock:
        return waits.Clock(now=self.now, sleep=self.sleep)


class Running:
    """A child that runs until ``exit_after`` polls (None: forever)."""

    def __init__(self, name: str, log_path: str, exit_after: int | None = None) -> None:
        self.name, self.log_path, self.pid = name, log_path, 4242
        self.left = exit_after

    def poll(self) -> int | None:
        if self.left is None:
            return None
        self.left -= 1
        return 0 if self.left < 0 else None

    def stop(self, grace: float = 0.0) -> None:
        del grace


class Stopped(Running):
    """A child that records that it was stopped."""

    def __init__(self, name: str, log_path: str) -> None:
        super().__init__(name, log_path)
        self.stopped = False

    def stop(self, grace: float = 0.0) -> None:
        del grace
        self.stopped = True


def ctx_for(job_dir: Path, rank: int, fake: FakeClock) -> NodeContext:
    """Rank ``rank`` of a 2-node job in ``job_dir`` on ``fake``'s clock, logging nowhere."""
    return NodeContext(
        rank=rank, nodes=2, job_id="7", paths=JobPaths.at(str(job_dir)), attempt=0,
        node_ip=f"10.0.0.{rank + 1}", iface_reason="test", env={}, log=NodeLog(rank, None),
        stopper=Stopper(), host_env={}, clock=fake.clock(),
    )  # fmt: skip


def logged_ctx(job_dir: Path, rank: int) -> NodeContext:
    """As ``ctx_for`` on a fresh fake clock, logging to ``job_dir/node-RANK.log``."""
    ctx = ctx_for(job_dir, rank, FakeClock())
    ctx.log = NodeLog(rank, str(job_dir / f"node-{rank}.log"))
    return ctx


def leader_task(ray: bool, ready_timeout: float = 30) -> LeaderTask:
    """The leader's task of a 2-node job serving model ``m`` (with a Ray head if ``ray``)."""
    return LeaderTask(
        ray=RayStart(head=True, port=6379, num_gpus=1) if ray else None,
        serve=ServeStart(model="m", host="0.0.0.0", port=8000),
        serve_env={}, values={NODE_IP: "10.0.0.1"}, served_model_name="m",
        expected_nodes=2, nodes_timeout=20, ready_timeout=ready_timeout,
    )  # fmt: skip


def ray_follower() -> FollowerTask:
    """Rank 1's task: a Ray worker joining the leader at 10.0.0.1."""
    return FollowerTask(
        ray=RayStart(head=False, port=6379, num_gpus=1),
        serve=None,
        serve_env={},
        values={NODE_IP: "10.0.0.2", JOB_ID: "7", NODE_RANK: "1"},
        leader_ip="10.0.0.1",
        nodes_timeout=20,
    )


def read_failure(job_dir: Path, rank: int) -> jobfiles.Failure | None:
    """Rank ``rank``'s ``failed/<rank>.json`` in ``job_dir``, if written."""
    return jobfiles.read(JobDir(str(job_dir)).failure(rank), jobfiles.Failure)
