"""The guard: a small parent between the runtime and one child, so that the child's whole
tree ends with the runtime, however the runtime ends (SIGKILL from the OOM killer or
SLURM's KillWait included).

    python -I -S _guard.py WATCH_FD GRACE NAME -- PROGRAM [ARGS...]

``launchers._proc`` starts every child of the runtime through it (Linux only). The guard

- makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``): a process of the tree that
  daemonizes (Ray's gcs_server and raylet, vLLM's engine cores, anything that double
  forks or calls setsid) is re-parented to the guard, not to init, so it stays a
  descendant: found by the runtime's walk of the tree, by SLURM's proctrack/linuxproc,
  and by the guard itself;
- holds the read end of a pipe whose only write end the runtime keeps: end of file means
  the runtime is gone, whatever killed it (a parent-death signal would fire when the
  *thread* that forked exits, and never reaches re-parented grandchildren);
- ignores SIGUSR1 and SIGUSR2 before it starts the program, and an ignored signal stays
  ignored through ``exec``: a signal sent to every process of a SLURM step (``--signal``
  without ``B:``, submitit's USR2) reaches the runtime, which drains, and is lost on
  vLLM and Ray, which would die of it (a program that installs its own handler keeps it);
- shrugs off SIGTERM, SIGINT and SIGHUP itself (a handler, not an ignore, so the program
  still gets them): the runtime stops a child by signalling its process group, the
  program decides, and the guard ends when the program has ended.

When the runtime is gone: SIGTERM to every descendant, ``GRACE`` seconds, SIGKILL to
what is left, and a line in the child's log saying so. When the program ends by itself,
whatever it left behind is stopped the same way, and the guard exits as the program did
(same code, same signal). Standard library only, run isolated (``-I -S``): it imports
nothing of vllm-hpc and nothing from the child's environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import time
from types import FrameType

PR_SET_CHILD_SUBREAPER = 36
KILLED_WAIT = 2.0  # seconds for SIGKILLed processes to disappear
LOOK = 0.1  # seconds between looks at a tree being stopped


def say(name: str, message: str) -> None:
    """One line in the child's log (the guard's stderr is the child's)."""
    sys.stderr.write(f"[vllm-hpc guard of {name}, pid {os.getpid()}] {message}\n")
    sys.stderr.flush()


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks) from ``/proc/PID/stat``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()  # the command name may hold spaces or ')'
    try:
        return fields[0], int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def descendants(root: int) -> dict[int, int]:
    """Every live (not zombie) descendant of ``root``: pid -> start time."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat is None:
            continue
        state, ppid, start = stat
        children.setdefault(ppid, []).append(int(entry))
        if state != "Z":
            started[int(entry)] = start
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), ()):
            if pid in started:
                found[pid] = started[pid]
            todo.append(pid)
    return found


def _signal(procs: dict[int, int], sig: int) -> None:
    for pid, start in procs.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == start:  # the same process, not a reused pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


class Guard:
    def __init__(self, name: str, grace: float, wake: int) -> None:
        self.name, self.grace, self.wake = name, grace, wake
        self.pid = 0
        self.status: int | None = None

    def reap(self) -> None:
        """Collect every child that ended (the program, and the orphans handed to us)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                self.status = status

    def pause(self, seconds: float) -> None:
        """Wait for a child to end (SIGCHLD on the wake-up pipe) or ``seconds``."""
        ready, _, _ = select.select([self.wake], [], [], seconds)
        if ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self.wake, 512)

    def stop_tree(self, why: str) -> None:
        """SIGTERM to every descendant, ``grace`` seconds, then SIGKILL to what is left."""
        left = descendants(os.getpid())
        if not left:
            return
        say(self.name, f"{why}: stopping {len(left)} process(es): {_pids(left)}")
        _signal(left, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while (left := descendants(os.getpid())) and time.monotonic() < deadline:
            self.reap()
            self.pause(LOOK)
        if left:
            say(self.name, f"{len(left)} still alive after {self.grace:g} s: SIGKILL {_pids(left)}")
            _signal(left, signal.SIGKILL)
            deadline = time.monotonic() + KILLED_WAIT
            while descendants(os.getpid()) and time.monotonic() < deadline:
                self.reap()
                self.pause(LOOK)
        self.reap()
        say(self.name, "no process of the tree is left")


def _pids(procs: dict[int, int]) -> str:
    return " ".join(str(pid) for pid in sorted(procs))


def _ignore(signum: int, frame: FrameType | None) -> None:
    del signum, frame


def exit_as(status: int) -> int:
    """Exit as the program did: its code, or die of the signal that killed it."""
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return code
    if -code not in (signal.SIGKILL, signal.SIGSTOP):  # these two take no handler
        signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
    return 128 - code  # the signal did not end us


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[3] != "--":
        say("?", "usage: _guard.py WATCH_FD GRACE NAME -- PROGRAM [ARGS...]")
        return 2
    watch, grace, name, program = int(argv[0]), float(argv[1]), argv[2], argv[4:]
    os.set_inheritable(watch, False)  # the program must not hold the runtime's pipe
    become_subreaper()
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)  # inherited through exec by the whole tree
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, _ignore)  # a handler: reset to the default by exec
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    guard = Guard(name, grace, wake_r)
    try:
        guard.pid = os.posix_spawn(program[0], program, dict(os.environ))
    except OSError as exc:
        say(name, f"cannot start {program[0]}: {exc.strerror}")
        return 127
    runtime = os.getppid()
    while guard.status is None:
        ready, _, _ = select.select([watch, wake_r], [], [], 1.0)
        if wake_r in ready:
            guard.pause(0)
        guard.reap()
        if watch in ready and guard.status is None:  # end of file: the runtime is gone
            guard.stop_tree(f"the runtime (pid {runtime}) is gone")
            guard.reap()
            return 1
    assert guard.status is not None
    guard.stop_tree(f"{name} (pid {guard.pid}) ended and left processes behind")
    return exit_as(guard.status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
