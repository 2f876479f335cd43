"""Teardown that holds: real processes stand in for the runtime and its children.

A stand-in runtime (``python -c``) starts a child through ``launchers._proc`` as the
runtime does; the child daemonizes a grandchild (double fork and setsid, as Ray's
daemons do) and waits. The test SIGKILLs the stand-in runtime, as the OOM killer or
SLURM's KillWait would, and waits (with a deadline) until nothing of the tree is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from launchers import _proc, waits
from launchers.jobdir import jobfiles
from launchers.jobdir.paths import JobDir
from launchers.observe.job import Job
from launchers.plan.launch import LaunchPlan

linux = pytest.mark.skipif(not _proc.GUARDED, reason="the guard is Linux only")


@pytest.fixture(autouse=True)
def no_leftovers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Whatever a test here starts ends with it, even when it fails half-way: pytest is a
    child subreaper meanwhile (orphans come to it, not to init), and what is left of its
    tree afterwards is killed and reaped."""
    import ctypes

    import psutil

    me = psutil.Process()
    libc = ctypes.CDLL(None) if _proc.GUARDED else None
    if libc is not None:
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    try:
        yield
    finally:
        monkeypatch.undo()  # a faked psutil.Process would not find the leftovers
        for proc in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        if libc is not None:
            libc.prctl(36, 0, 0, 0, 0)


PYTHON_DIR = str(Path(_proc.__file__).resolve().parents[1])
DEADLINE = 10.0  # seconds: every wait here ends well before

# The child: daemonizes a grandchild that writes its pid, then waits for ever (or for
# SIGTERM); with IGNORE_TERM both ignore SIGTERM, so only SIGKILL ends them.
CHILD = r"""
import os, signal, sys, threading
out = sys.argv[1]
if "IGNORE_TERM" in os.environ:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open(out + ".tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.replace(out + ".tmp", out)
        threading.Event().wait()
    os._exit(0)
os.wait()
if "EXIT_AFTER_FORK" in os.environ:
    sys.exit(int(os.environ["EXIT_AFTER_FORK"]))
threading.Event().wait()
"""

# The stand-in runtime: one child through the seam, its pids on stdout, then it waits.
RUNTIME = r"""
import json, sys, threading
from launchers import _proc
_proc.GUARD_GRACE = float(sys.argv[4])
child = _proc.start("tree", [sys.executable, "-c", sys.argv[1], sys.argv[2]],
                    env=json.loads(sys.argv[3]), log_path=sys.argv[2] + ".log")
print(json.dumps({"guard": child.pid}), flush=True)
threading.Event().wait()
"""


def _grandchild(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def _children(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children()]


def _tree_of_a_runtime(
    tmp_path: Path, **env: str
) -> tuple[subprocess.Popen[str], dict[int, float]]:
    """The stand-in runtime, its guard, the child and the daemonized grandchild, each
    remembered as (pid, create time)."""
    out = tmp_path / "grandchild.pid"
    child_env = {"PATH": os.environ.get("PATH", ""), **env}
    runtime = subprocess.Popen(
        [sys.executable, "-c", RUNTIME, CHILD, str(out), json.dumps(child_env), "0.5"],
        env={**os.environ, "PYTHONPATH": PYTHON_DIR},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert runtime.stdout is not None
    guard = json.loads(runtime.stdout.readline())["guard"]
    grandchild = waits.wait_for(
        lambda: _grandchild(out), what="the grandchild", timeout=DEADLINE, interval=0.05
    ).value
    # The intermediate process has exited: the daemon is the guard's now, not init's.
    waits.wait_for(
        lambda: waits.seen(grandchild in _children(guard)),
        what="the grandchild to be re-parented to the guard",
        timeout=DEADLINE,
        interval=0.05,
    )
    procs = {pid: _proc.identity(pid) for pid in (runtime.pid, guard, grandchild)}
    procs.update({pid: _proc.identity(pid) for pid in _children(guard)})
    assert len(procs) == 4, procs  # runtime, guard, child, grandchild
    return runtime, {pid: t for pid, t in procs.items() if t is not None}


def _left(procs: dict[int, float]) -> set[int]:
    return {
        pid for pid, t in procs.items() if pid in _proc.alive({pid}) and _proc.same_process(pid, t)
    }


def _nothing_left(procs: dict[int, float]) -> None:
    waits.wait_for(
        lambda: waits.seen(not _left(procs)),
        what="every process of the tree to end",
        detail=lambda: f": left {sorted(_left(procs))}",
        timeout=DEADLINE,
        interval=0.05,
    )


@linux
def test_a_sigkilled_runtime_leaves_no_descendant(tmp_path: Path) -> None:
    runtime, procs = _tree_of_a_runtime(tmp_path)
    runtime.kill()
    runtime.wait()
    _nothing_left(procs)
    log = (tmp_path / "grandchild.pid.log").read_text()
    assert f"the runtime (pid {runtime.pid}) is gone: stopping 2 process(es)" in log, log


@linux
def test_a_tree_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    runtime, procs = _tree_of_a_runtime(tmp_path, IGNORE_TERM="1")
    runtime.kill()
    runtime.wait()
    _nothing_left(procs)
    log = (tmp_path / "grandchild.pid.log").read_text()
    assert "2 still alive after 0.5 s: SIGKILL" in log, log
    assert "no process of the tree is left" in log, log


@linux
def test_what_a_child_leaves_behind_is_stopped_and_its_code_kept(tmp_path: Path) -> None:
    out = tmp_path / "grandchild.pid"
    child = _proc.start(
        "leaver",
        [sys.executable, "-c", CHILD, str(out)],
        env={"EXIT_AFTER_FORK": "3"},
        log_path=str(tmp_path / "leaver.log"),
    )
    grandchild = waits.wait_for(
        lambda: _grandchild(out), what="the grandchild", timeout=DEADLINE, interval=0.05
    ).value
    born = _proc.identity(grandchild)  # None: the guard has already stopped it
    code = waits.wait_for(child.popen.poll, what="the child", timeout=DEADLINE, interval=0.05)
    assert code.value == 3  # the guard exits as the program did
    assert born is None or not _left({grandchild: born})
    log = (tmp_path / "leaver.log").read_text()
    assert "ended and left processes behind: stopping 1 process(es)" in log, log


@linux
def test_a_child_killed_by_a_signal_is_reported_so(tmp_path: Path) -> None:
    child = _proc.start(
        "sleeper",
        [sys.executable, "-c", "import threading; threading.Event().wait()"],
        env={},
        log_path=str(tmp_path / "sleeper.log"),
    )
    assert child.stop(grace=DEADLINE) == -signal.SIGTERM
    assert _proc.ended(-signal.SIGTERM) == "was killed by SIGTERM"
    assert child.watch_fd is None  # the pipe to the ended guard is closed


@linux
def test_a_child_sigkilled_under_its_guard_is_reported_so(tmp_path: Path) -> None:
    # The OOM killer picks vLLM, not its guard: the guard must end as vLLM did.
    import psutil

    child = _proc.start(
        "sleeper",
        [sys.executable, "-c", "import threading; threading.Event().wait()"],
        env={},
        log_path=str(tmp_path / "sleeper.log"),
    )
    program = waits.wait_for(
        lambda: next(iter(psutil.Process(child.pid).children()), None),
        what="the guarded program",
        timeout=DEADLINE,
    ).value
    program.kill()
    code = waits.wait_for(child.poll, what="the guard's end", timeout=DEADLINE).value
    assert code == -signal.SIGKILL, (tmp_path / "sleeper.log").read_text()
    assert _proc.ended(code) == "was killed by SIGKILL"


def _ignored(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn")), 16
    )


@linux
def test_the_children_ignore_the_step_wide_usr1_and_usr2(tmp_path: Path) -> None:
    out = tmp_path / "grandchild.pid"
    child = _proc.start(
        "tree", [sys.executable, "-c", CHILD, str(out)], env={}, log_path=str(tmp_path / "l")
    )
    grandchild = waits.wait_for(
        lambda: _grandchild(out), what="the grandchild", timeout=DEADLINE, interval=0.05
    ).value
    program = _children(child.pid)[0]
    for pid in (child.pid, program, grandchild):
        mask = _ignored(pid)
        assert mask & (1 << (signal.SIGUSR1 - 1)), pid
        assert mask & (1 << (signal.SIGUSR2 - 1)), pid
        assert not mask & (1 << (signal.SIGTERM - 1)), pid  # SIGTERM still stops them
    os.killpg(child.pid, signal.SIGUSR1)  # as `--signal=USR1@N` without B: would
    os.kill(grandchild, signal.SIGUSR2)
    assert child.popen.poll() is None
    assert child.stop(grace=DEADLINE) == -signal.SIGTERM
    assert not _proc.alive({program, grandchild})


class _FakeProcess:
    """psutil.Process for pids whose create time the test decides."""

    created: ClassVar[dict[int, float]] = {}

    def __init__(self, pid: int) -> None:
        import psutil

        if pid not in self.created:
            raise psutil.NoSuchProcess(pid)
        self.pid = pid

    def create_time(self) -> float:
        return self.created[self.pid]


def test_only_a_process_that_is_still_itself_is_signalled(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(psutil, "Process", _FakeProcess)
    monkeypatch.setattr(_FakeProcess, "created", {101: 1000.0, 102: 2000.5, 104: 4000.0})
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: sent.append((-pgid, sig)))
    seen = {
        101: 1000.0,  # the same process: signalled
        102: 1500.0,  # pid reused by a process created later: left alone
        103: 3000.0,  # gone: left alone
    }
    assert _proc.signal_live(seen, signal.SIGKILL) == 1
    assert sent == [(101, signal.SIGKILL)]
    sent.clear()
    assert not _proc.signal_group(104, 104, 3999.0, signal.SIGTERM)  # a new leader
    assert _proc.signal_group(104, 104, 4000.0, signal.SIGTERM)
    assert sent == [(-104, signal.SIGTERM)]


@linux
def test_a_detached_process_has_its_own_group_and_no_guard(tmp_path: Path) -> None:
    child = _proc.start_detached(
        "local-job",
        [sys.executable, "-c", "import threading; threading.Event().wait()"],
        env={},
        log_path=str(tmp_path / "local.out"),
    )
    assert child.watch_fd is None
    assert os.getpgid(child.pid) == child.pid
    assert _children(child.pid) == []  # the program itself, not a guard
    born = _proc.identity(child.pid)
    assert born is not None
    assert _proc.signal_group(child.pid, child.pid, born, signal.SIGTERM)
    assert child.popen.wait(timeout=DEADLINE) == -signal.SIGTERM


# A local job's runtime and a helper in its process group, as `--executor local` starts
# it; with IGNORE_TERM both shrug off SIGTERM.
LOCAL = r"""
import os, signal, subprocess, sys, threading
if "IGNORE_TERM" in os.environ:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
helper = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
with open(sys.argv[2] + ".tmp", "w") as fh:
    fh.write(str(helper.pid))
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
threading.Event().wait()
"""
HELPER = "import threading; threading.Event().wait()"


def _local_job(tmp_path: Path, created_offset: float = 0.0, **env: str) -> tuple[Job, int, int]:

    out = tmp_path / "helper.pid"
    child = _proc.start_detached(
        "local-job",
        [sys.executable, "-c", LOCAL, HELPER, str(out)],
        env={"PATH": os.environ.get("PATH", ""), **env},
        log_path=str(tmp_path / "local.out"),
    )
    helper = waits.wait_for(
        lambda: _grandchild(out), what="the helper", timeout=DEADLINE, interval=0.05
    ).value
    created = _proc.identity(child.pid)
    assert created is not None
    record = jobfiles.LocalProcess(pid=child.pid, pgid=child.pid, created=created + created_offset)
    jobfiles.write(JobDir(str(tmp_path)).local, record)
    return Job(job_id="local-1-2", job_dir=str(tmp_path)), child.pid, helper


@linux
def test_a_local_job_is_stopped_as_a_process_group(tmp_path: Path) -> None:
    job, leader, helper = _local_job(tmp_path)
    job.stop(timeout=DEADLINE)
    _nothing_left({pid: t for pid in (leader, helper) if (t := _proc.identity(pid)) is not None})


@linux
def test_a_local_job_that_ignores_sigterm_is_killed_after_kill_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from launchers.observe import job as client

    monkeypatch.setattr(client, "SLURM_KILL_WAIT", 0.5)
    job, leader, helper = _local_job(tmp_path, IGNORE_TERM="1")
    procs = {pid: t for pid in (leader, helper) if (t := _proc.identity(pid)) is not None}
    job.stop(timeout=DEADLINE)
    _nothing_left(procs)


@linux
def test_a_local_job_whose_pid_was_reused_is_not_signalled(tmp_path: Path) -> None:
    job, leader, helper = _local_job(tmp_path, created_offset=-100.0)
    procs = {pid: t for pid in (leader, helper) if (t := _proc.identity(pid)) is not None}
    try:
        status = job.stop(timeout=DEADLINE)
        assert _left(procs) == {leader, helper}  # someone else's processes now: untouched
        assert status.state == "FAILED"  # the job's own process is gone
    finally:
        os.killpg(leader, signal.SIGKILL)


class _Stoppable:
    """A started process that records the grace each stop gives it."""

    def __init__(self, name: str, graces: list[tuple[str, float]]) -> None:
        self.name, self.graces = name, graces

    def stop(self, grace: float = 0.0) -> int:
        self.graces.append((self.name, grace))
        return 0


def _worst(graces: list[tuple[str, float]]) -> float:
    """The longest a stop of these can take: each grace, one poll past its deadline, and
    the wait after SIGKILL."""
    return sum(grace + _proc.POLL + _proc.KILL_REAP for _, grace in graces)


def test_one_stop_fits_inside_slurm_kill_wait() -> None:
    from launchers import defaults
    from launchers.runtime import supervise

    for asked in (True, False):
        graces: list[tuple[str, float]] = []
        procs = supervise.LeaderProcs(
            head=_Stoppable("head", graces),  # type: ignore[arg-type]
            serve=_Stoppable("vllm", graces),  # type: ignore[arg-type]
            watcher=_Stoppable("watch", graces),  # type: ignore[arg-type]
        )
        lines: list[str] = []
        procs.stop(lines.append, asked=asked)
        assert [name for name, _ in graces] == ["vllm", "watch", "head"]  # vLLM first
        assert _worst(graces) <= defaults.TEARDOWN_SECONDS < defaults.SLURM_KILL_WAIT
        assert lines[0] == (
            "stopping vllm serve: SIGTERM, 15 s for in-flight requests, then SIGKILL"
            if asked
            else "stopping vllm serve: SIGTERM, 5 s, then SIGKILL"
        )
    follower = max(supervise.RAY_GRACE, supervise.SERVE_GRACE)
    assert _worst([("follower", follower)]) <= defaults.TEARDOWN_SECONDS


REPO = Path(__file__).resolve().parents[2]


def test_the_time_limit_warning_goes_to_the_batch_shell_only(
    make_plan: Callable[..., LaunchPlan],
) -> None:
    from launchers.render.text import render_sbatch

    plan = make_plan(model="llama-3.2-3b-instruct")
    assert ("signal", "B:USR1@120") in plan.sbatch
    script = render_sbatch(plan).splitlines()
    assert "#SBATCH --signal=B:USR1@120" in script
    # The batch shell must become srun (exec), which passes USR1 to the node runtimes.
    assert [line for line in script if "srun" in line][-1].startswith("exec srun ")
    for template in sorted((REPO / "slurm").glob("*.sbatch")):
        lines = template.read_text().splitlines()
        signals = [line for line in lines if line.startswith("#SBATCH --signal=")]
        assert signals == ["#SBATCH --signal=B:USR1@120"], template.name
        assert lines[-1].startswith("exec srun "), template.name


def test_submitit_keeps_its_own_step_wide_warning(
    make_plan: Callable[..., LaunchPlan], monkeypatch: pytest.MonkeyPatch
) -> None:
    from launchers.submit import slurm

    given: dict[str, object] = {}

    class Executor:
        def __init__(self, **kwargs: object) -> None:
            del kwargs

        def update_parameters(self, **params: object) -> None:
            given.update(params)

        def submit(self, *args: object) -> object:
            del args
            return type("Submitted", (), {"job_id": "7"})()

    fake = type(sys)("submitit")
    fake.AutoExecutor = Executor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "submitit", fake)
    monkeypatch.setattr(slurm, "require_slurm_client", lambda via: None)
    monkeypatch.setattr(slurm, "_prepare", lambda plan: None)
    slurm.submit_submitit(make_plan(model="llama-3.2-3b-instruct"))
    # submitit renders --signal=USR2@120 itself (every process of the step): the runtime
    # drains on USR2, and the guard keeps it off the processes the runtime starts.
    assert given["slurm_signal_delay_s"] == 120


def test_elsewhere_than_linux_children_start_unguarded_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_proc, "GUARDED", False)
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(_proc, "_warned", [])
    argv = [sys.executable, "-c", "pass"]
    for _ in range(2):
        child = _proc.start("x", argv, env={}, log_path=str(tmp_path / "x.log"))
        assert child.watch_fd is None
        assert child.popen.wait(timeout=DEADLINE) == 0
    assert capsys.readouterr().err == (
        "vllm-hpc: children are not guarded on darwin (Linux only): if this process is "
        "killed, stop what it started yourself\n"
    )


def test_the_children_of_a_reaped_pid_are_not_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psutil

    child = _proc.start("x", [sys.executable, "-c", "pass"], env={}, log_path=str(tmp_path / "x"))
    assert child.popen.wait(timeout=DEADLINE) == 0  # reaped: the pid is free for reuse

    class Reused:  # a later process with the same pid, and its children
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def children(self, recursive: bool = False) -> list[Reused]:
            return [Reused(4242)]

        def create_time(self) -> float:
            return 1.0

    monkeypatch.setattr(psutil, "Process", Reused)
    child.remember_descendants()
    assert child.seen == {}


_DRAINER = """
import os, signal, subprocess, sys, threading
worker = subprocess.Popen([sys.executable, "-c", "import threading; threading.Event().wait()"])
def drain(signum, frame):
    try:  # a worker told directly ends within moments; one left to the program does not
        worker.wait(timeout=1.0)
        alive = False
    except subprocess.TimeoutExpired:
        alive = True
    open(sys.argv[1], "w").write(f"worker alive at the drain: {alive}")
    worker.terminate(); worker.wait(); os._exit(0)
signal.signal(signal.SIGTERM, drain)
open(sys.argv[1] + ".up", "w").write("up")
threading.Event().wait()
"""


@linux
def test_a_drain_tells_the_program_alone_and_waits_for_it(tmp_path: Path) -> None:
    # vLLM's API server drains its engine and workers itself when it alone gets SIGTERM.
    mark = tmp_path / "mark"
    child = _proc.start(
        "drainer", [sys.executable, "-c", _DRAINER, str(mark)], env={},
        log_path=str(tmp_path / "drainer.log"),
    )  # fmt: skip
    waits.wait_for(
        lambda: Path(f"{mark}.up").exists() or None, what="the program", timeout=DEADLINE
    )
    assert child.drain(DEADLINE, 1.0) == 0
    assert mark.read_text() == "worker alive at the drain: True"
