"""The single subprocess seam: every process vllm-hpc runs or stops goes through here.

Children are started in their own session (process group) with their output in a log
file, so they can be stopped as a tree: SIGTERM to the group and to every descendant
seen, a grace period, then SIGKILL. Processes that left the group (Ray daemons, vLLM
engine workers) are found through their parent links before anything is killed.

Only live descendants are signalled: a process is remembered as (pid, create time) and
signalled only while a process with that pid and that create time exists, so a pid the
kernel gave to an unrelated process since is never touched. The group is signalled only
while its leader (our child) is not reaped, which keeps its id ours.

Teardown holds when the runtime itself dies (on Linux). Each child runs under a guard
(``launchers/_guard.py``: its docstring has the details), a small parent that is a child
subreaper, so whatever the child daemonizes stays below the guard, and that watches a
pipe whose write end only the runtime holds. If the runtime dies, even by SIGKILL, the
pipe closes and the guard stops the whole tree (SIGTERM, ``GUARD_GRACE``, SIGKILL) and
says so in the child's log. Why a guard and not ``PR_SET_PDEATHSIG`` on each child: the
parent-death signal reaches only the direct child (a grandchild re-parented to init
outlives the runtime) and fires when the *thread* that started the child exits. The
guard also makes the tree ignore SIGUSR1/SIGUSR2, so a step-wide signal from SLURM never
kills vLLM or Ray; the runtime handles it. ``start_detached`` starts a process that must
outlive its starter (``--executor local``), without a guard. Other systems than Linux
start children unguarded, with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from launchers import waits
from launchers.errors import RuntimeFailure, WaitTimeout

POLL = 0.2  # seconds between looks at a process tree being stopped


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    check: bool = False,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run to completion, capturing text output."""
    return subprocess.run(
        list(argv),
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        input=input_text,
    )


def exec_replace(argv: Sequence[str]) -> None:
    """Become ``argv`` (``os.execvp``): for a command the user runs in the foreground,
    such as ``tunnel --run``'s ssh, which owns the terminal until it ends."""
    os.execvp(argv[0], list(argv))  # noqa: S606 - argv is a list we built


def resolve_executable(name: str, environ: Mapping[str, str] | None = None) -> str:
    """``ray``/``vllm`` next to the running interpreter first (a venv that is not
    activated), then on PATH; an absolute path is kept."""
    if os.path.isabs(name):
        return name
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    path = (environ or os.environ).get("PATH")
    found = shutil.which(name, path=path)
    return found or name


GUARD = Path(__file__).with_name("_guard.py")
GUARD_GRACE = 3.0  # seconds a guard gives the tree of a dead runtime before SIGKILL
KILL_REAP = 1.0  # seconds to collect a child after SIGKILL (it dies at once, or is stuck)
GUARDED = sys.platform.startswith("linux")
_warned: list[bool] = []


@dataclass
class Child:
    """A started process, its log, and every descendant seen so far (pid -> create time).

    Under a guard, ``pid`` is the guard's and the program is its only child."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: str
    seen: dict[int, float] = field(default_factory=dict)
    watch_fd: int | None = None  # the runtime's end of the guard's pipe

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        self.remember_descendants()
        code = self.popen.poll()
        if code is not None:
            self.release()
        return code

    def remember_descendants(self) -> None:
        import psutil

        if self.popen.returncode is not None:  # reaped: its pid may be someone else's now
            return
        try:
            for proc in psutil.Process(self.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self.seen[proc.pid] = proc.create_time()
        except psutil.Error:
            pass

    def release(self) -> None:
        """Close the pipe to an ended guard (closing it early would stop the tree)."""
        if self.watch_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.watch_fd)
            self.watch_fd = None

    def stop(self, grace: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """Stop the whole tree: ``sig`` first, SIGKILL after ``grace`` seconds."""
        return stop_tree(self, grace=grace, sig=sig)

    def signal_program(self, sig: int) -> bool:
        """Send ``sig`` to the program alone (under a guard: the guard's child), not its
        tree: a program that stops its own workers (vLLM draining requests) must be the
        only one told. False when it has already ended."""
        import psutil

        if self.popen.returncode is not None:
            return False
        try:
            guard = psutil.Process(self.pid)
            programs = guard.children() if self.watch_fd is not None else [guard]
            target = programs[0] if programs else None
            if target is None:
                return False
            target.send_signal(sig)
        except psutil.Error:
            return False
        return True

    def drain(self, wait: float, grace: float, sig: int = signal.SIGTERM) -> int | None:
        """``sig`` to the program alone, up to ``wait`` seconds for it to end by itself,
        then stop what is left of the tree (``grace`` seconds, then SIGKILL)."""
        if self.signal_program(sig):
            with contextlib.suppress(WaitTimeout):
                waits.wait_for(self.poll, what=f"{self.name} to drain", timeout=wait)
        return self.stop(grace=grace)


def guard_note() -> str:
    """What the runtime says at its start about the teardown of its children."""
    if GUARDED:
        return (
            f"children run under a guard: their process trees end with this runtime "
            f"(pid {os.getpid()}), even if it is killed"
        )
    return f"children are not guarded on {sys.platform} (Linux only)"


def _program(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """``argv`` with its program found as ``exec`` would find it (the child's PATH), so a
    missing program is said here, in one line, and not from inside a guard."""
    name = argv[0]
    candidates = [name] if "/" in name else [os.path.join(d, name) for d in os.get_exec_path(env)]
    found = [c for c in candidates if os.path.isfile(c)]
    runnable = [c for c in found if os.access(c, os.X_OK)]
    if not runnable:
        why = errno.EACCES if found else errno.ENOENT
        raise RuntimeFailure(
            f"cannot start {name}: {os.strerror(why)}",
            fix="install it in the Python that runs vllm-hpc on the nodes, or put it on PATH",
        )
    return [os.path.abspath(runnable[0]), *argv[1:]]


def _guard_argv(name: str, program: Sequence[str], watch: int) -> list[str]:
    guard = [sys.executable, "-I", "-S", str(GUARD), str(watch), f"{GUARD_GRACE:g}", name]
    return [*guard, "--", *program]


def _popen(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    log: IO[bytes],
    *,
    piped: bool,
    cwd: str | None,
    guard: bool = True,
) -> Child:
    program = _program(argv, env)
    watch: tuple[int, int] | None = None
    if guard and GUARDED:
        watch = os.pipe()  # both ends close on exec; the guard is given the read end
    elif guard and not _warned:
        _warned.append(True)
        print(
            f"vllm-hpc: children are not guarded on {sys.platform} (Linux only): if this "
            "process is killed, stop what it started yourself",
            file=sys.stderr,
        )
    try:
        popen = subprocess.Popen(
            program if watch is None else _guard_argv(name, program, watch[0]),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if piped else log,
            stderr=log if piped else subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
            pass_fds=() if watch is None else (watch[0],),
        )
    except OSError as exc:  # not executable after all: a failure, said in one line
        if watch is not None:
            os.close(watch[1])
        raise RuntimeFailure(
            f"cannot start {argv[0]}: {exc.strerror}",
            fix="install it in the Python that runs vllm-hpc on the nodes, or put it on PATH",
        ) from None
    finally:
        if watch is not None:
            os.close(watch[0])
    return Child(
        name=name, popen=popen, log_path=log.name, watch_fd=None if watch is None else watch[1]
    )


def start(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: str,
    cwd: str | None = None,
) -> Child:
    """Start ``argv`` in a new session under a guard, stdout and stderr appended to
    ``log_path``."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:  # the child holds its own copy
        return _popen(name, argv, env, log, piped=False, cwd=cwd)


def start_piped(name: str, argv: Sequence[str], *, env: Mapping[str, str], log_path: str) -> Child:
    """Like ``start`` but stdout is a pipe the caller reads (stderr goes to the log)."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return _popen(name, argv, env, log, piped=True, cwd=None)


def start_detached(
    name: str, argv: Sequence[str], *, env: Mapping[str, str], log_path: str
) -> Child:
    """Start a process that outlives this one (no guard), in its own session and so its
    own process group (its pgid is its pid): stop it with ``signal_group``."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return _popen(name, argv, env, log, piped=False, cwd=None, guard=False)


def identity(pid: int) -> float | None:
    """The create time of process ``pid`` (None when there is none): with the pid, what
    names one process for as long as it lives."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def same_process(pid: int, created: float) -> bool:
    """Whether ``pid`` is still the process that was created at ``created``."""
    now = identity(pid)
    return now is not None and abs(now - created) < 0.01


def signal_live(procs: Mapping[int, float], sig: int, *, skip_group: int | None = None) -> int:
    """Send ``sig`` to each remembered process that still is what was remembered (a pid
    whose create time changed belongs to someone else now); ``skip_group``: leave out the
    members of that process group (it was signalled as a group). Returns how many."""
    sent = 0
    for pid, created in procs.items():
        if not same_process(pid, created):
            continue
        if skip_group is not None and _pgid(pid) == skip_group:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            sent += 1
    return sent


def signal_group(pgid: int, leader: int, created: float, sig: int) -> bool:
    """Signal process group ``pgid`` while its ``leader`` is still the process that was
    created at ``created`` (a reused pid never gets it). True if sent."""
    if not same_process(leader, created):
        return False
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def alive(pids: set[int]) -> set[int]:
    import psutil

    out = set()
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.Error:
            pass
    return out


def _live(procs: Mapping[int, float]) -> dict[int, float]:
    """The remembered processes that are still themselves and not zombies."""
    return {pid: t for pid, t in procs.items() if pid in alive({pid}) and same_process(pid, t)}


def _signal_tree(child: Child, sig: int) -> None:
    group: int | None = None
    if child.popen.poll() is None:  # not reaped: its pid, so its group id, is still ours
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, sig)
            group = child.pid
    signal_live(child.seen, sig, skip_group=group)


def stop_tree(child: Child, *, grace: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
    child.remember_descendants()
    _signal_tree(child, sig)

    def gone() -> int | None:
        code = child.popen.poll()
        child.remember_descendants()
        return code if code is not None and not _live(child.seen) else None

    try:
        try:
            stopped = waits.wait_for(
                gone, what=f"{child.name} to stop", timeout=grace, interval=POLL
            )
            return stopped.value
        except WaitTimeout:
            pass  # the grace is over: kill what is left
        _signal_tree(child, signal.SIGKILL)
        try:
            return child.popen.wait(timeout=KILL_REAP)
        except subprocess.TimeoutExpired:
            return None
    finally:
        if child.popen.returncode is not None:
            child.release()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAY_DIED = "Some Ray subprocesses exited unexpectedly"
_NATIVE_CRASH = ("Segfault encountered", "Fatal Python error")
_FRAME = re.compile(r'File "([^"]+)", line (\d+),? in ([A-Za-z_][A-Za-z0-9_:]*)')
_ACCESS_LOG = re.compile(r' HTTP/\d(?:\.\d)?" \d{3}\b')
# vLLM's summary of a failure elsewhere, and the prefix of its processes' log lines.
_SEE_ABOVE = ("root cause above", "stack trace (above)")
_VLLM_PREFIX = re.compile(r"^\([^)]*\) [A-Z]+ \S+ \S+ \[[^\]]*\] ?")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception)\b: ")
_NOT_AN_ERROR = re.compile(r"^\([^)]*\) (?:DEBUG|INFO|WARNING) ")  # a vLLM log level


def ended(code: int) -> str:
    """How a child ended: ``exited with code 1`` or ``was killed by SIGKILL``."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def reason(path: str, *, fallback: bool = True) -> str:
    """One line saying why a process failed: a native crash and the code it crashed in,
    Ray's report of which daemon died, else the last error line of its log (a Python
    exception, ``Error: ...``, with the first exception when vLLM says the cause is
    "above"; HTTP access lines and vLLM's INFO/WARNING lines are not reasons), else (with
    ``fallback``) its last non-empty line, else ''."""
    text = [_ANSI.sub("", line) for line in tail(path, 400).splitlines()]
    for i, line in enumerate(text):
        if any(crash in line for crash in _NATIVE_CRASH):
            return _native_crash(line, text[i + 1 : i + 12])[:400]
        if _RAY_DIED in line:  # `ray start --block`: the next line names the daemon
            died = text[i + 1].split(" -- ", 1)[-1].strip() if i + 1 < len(text) else ""
            return f"{_RAY_DIED}: {died}"[:400]
    for i in range(len(text) - 1, max(-1, len(text) - 81), -1):
        stripped = text[i].strip()
        if _ACCESS_LOG.search(stripped) or _NOT_AN_ERROR.match(stripped):
            continue
        if stripped and ("Error" in stripped or "error:" in stripped or "Exception" in stripped):
            if "validation error" in stripped:
                return _with_pydantic_detail(stripped, text[i + 1 :])[:400]
            if any(see in stripped for see in _SEE_ABOVE):
                cause = _first_exception(text[:i])
                return (f"{stripped}; first error: {cause}" if cause else stripped)[:400]
            return stripped[:400]
    if not fallback:
        return ""
    return next((s.strip()[:400] for s in reversed(text) if s.strip()), "no output")


def _first_exception(text: list[str]) -> str:
    """The first exception line of the log (vLLM's process prefix removed) and the last
    frame before it: where the failure that vLLM reports "above" was raised."""
    frame = ""
    for line in text:
        body = _VLLM_PREFIX.sub("", line).strip()
        if body.startswith("Traceback (most recent call last)"):
            frame = ""
        elif found := _FRAME.search(body):
            frame = _where(found)
        elif _EXCEPTION.match(body):
            return body[:200] + frame
    return ""


def _native_crash(head: str, frames: list[str]) -> str:
    """``Segfault encountered in csrc/cpu/x.cpp line 242 (fn)``: the first frame of the
    crash report that is not the C library's signal handler."""
    what = head.strip(" !").strip()
    for line in frames:
        found = _FRAME.search(line)
        if found and "sigaction" not in found.group(1) and found.group(1) != "<unknown>":
            return what + _where(found)
    return what


def _where(frame: re.Match[str]) -> str:
    """`` in vllm/x.py line 296 (fn)`` for a traceback frame (installed paths shortened)."""
    path = frame.group(1).split("site-packages/", 1)[-1]
    return f" in {path} line {frame.group(2)} ({frame.group(3)})"


def _with_pydantic_detail(head: str, following: list[str]) -> str:
    """A pydantic ValidationError names the model on its first line and the cause on the
    indented lines after it: keep the cause, drop the ``[type=...]`` noise and the URL."""
    detail: list[str] = []
    for line in following[:3]:
        if not line.startswith(" ") or "errors.pydantic.dev" in line:
            break
        detail.append(line.split(" [type=", 1)[0].strip())
    return ": ".join([head, *detail]) if detail else head


def tail_lines(path: str, lines: int = 10) -> list[str]:
    """The last non-empty lines of a log, colour codes removed (for a status file)."""
    text = [_ANSI.sub("", line).rstrip() for line in tail(path, lines * 3).splitlines()]
    return [line[:300] for line in text if line.strip()][-lines:]


def tail(path: str, lines: int = 20) -> str:
    """The last lines of a log file ('' when it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
