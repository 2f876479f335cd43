"""What a node knows about itself: its rank, its job, its address and network, its log,
its stop flag and its clock; and how it runs a command (directly or in the image)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import ClassVar, Literal

from launchers import _proc, installed, jobdir, waits
from launchers.errors import RuntimeFailure
from launchers.jobdir import jobfiles, safe
from launchers.jobdir.paths import JobDir
from launchers.jobdir.safe import private_dir
from launchers.plan.commands import RayStart, ServeStart, check_installed
from launchers.plan.launch import JobPaths, unfilled
from launchers.spec.config import ContainerSpec


class Stopped(Exception):
    """A stop was asked for (signal); not a failure."""


class Stopper:
    """Turns SIGTERM/SIGINT/SIGHUP/SIGUSR1 into a flag the runtime's loops check."""

    REASONS: ClassVar[dict[int, str]] = {
        signal.SIGTERM: "SIGTERM (scancel or shutdown)",
        signal.SIGINT: "SIGINT (Ctrl+C)",
        signal.SIGHUP: "SIGHUP",
        signal.SIGUSR1: "SIGUSR1 (time limit near)",
        signal.SIGUSR2: "SIGUSR2 (time limit near)",
    }

    def __init__(self) -> None:
        self.reason: str | None = None
        self.signum: int | None = None
        for sig in self.REASONS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.reason is None:
            self.signum = signum
            self.reason = self.REASONS.get(signum, f"signal {signum}")

    def check(self) -> None:
        if self.reason is not None:
            raise Stopped(self.reason)

    @property
    def time_limit(self) -> bool:
        """The stop asked for is the warning before the time limit (USR1/USR2)."""
        return self.reason in (self.REASONS[signal.SIGUSR1], self.REASONS[signal.SIGUSR2])

    def said(self, job_dir: str, since: float) -> str:
        """The stop as the node says it: the signal and why. A time-limit warning a
        service sent to drain this job (``stop.json``, written since ``since``) is named
        for what it is (``SIGUSR1 (handover)``); any other stop as ``reason`` says."""
        said = self.reason or "no stop asked"
        if not self.time_limit or self.signum is None:
            return said
        asked = jobfiles.read(JobDir(job_dir).stop, jobfiles.StopReason)
        if asked is None or asked.time < since:
            return said
        return f"{signal.Signals(self.signum).name} ({asked.reason})"


class NodeLog:
    """Lines to stderr (the job's output) and to the node's log in the job directory."""

    def __init__(self, rank: int, path: str | None) -> None:
        self.rank = rank
        self.path = path
        self.t0 = time.monotonic()

    def __call__(self, message: str) -> None:
        line = f"[vllm-hpc rank{self.rank} +{time.monotonic() - self.t0:6.1f}s] {message}"
        print(line, file=sys.stderr, flush=True)
        if self.path:
            try:
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
            except OSError:
                pass


@dataclass
class NodeContext:
    rank: int
    nodes: int
    job_id: str
    paths: JobPaths  # the plan's paths for this job (@JOB_ID@ filled in)
    attempt: int
    node_ip: str
    iface_reason: str
    env: dict[str, str]
    log: NodeLog
    stopper: Stopper
    hostname: str = field(default_factory=socket.gethostname)
    host_env: dict[str, str] = field(default_factory=dict)
    container: ContainerSpec | None = None
    binds: list[str] = field(default_factory=list)
    clock: waits.Clock = waits.REAL
    processes: list[jobfiles.Process] = field(default_factory=list)
    created: float = field(default_factory=jobdir.now)

    @property
    def job_dir(self) -> str:
        return self.paths.job_dir

    @property
    def files(self) -> JobDir:
        return self.paths.dir

    @property
    def leader_file(self) -> str:
        return self.paths.leader

    @property
    def endpoint_file(self) -> str:
        return self.paths.endpoint

    def logfile(self, name: str) -> str:
        return self.files.log(name, self.rank)

    @property
    def wrapped(self) -> bool:
        """Each process runs in an Apptainer/Singularity image (enroot/pyxis runs the
        whole step, this runtime included, in the image instead)."""
        return self.container is not None and self.container.runtime != "enroot"

    def start_argv(self, start: RayStart | ServeStart, values: Mapping[str, str]) -> list[str]:
        """The argv that runs ``start`` here: the dry run's builder
        (``plan.argv.process_argv``) with every placeholder filled from ``values``."""
        from launchers.plan.argv import process_argv

        argv = process_argv(start, values, self.container, self.binds)
        left = unfilled(argv)
        if left:  # a plan whose argv needs a value no node has: the runtime's bug, say so
            raise RuntimeFailure(f"node argv: no value for {', '.join(left)} in {argv[:3]}")
        return argv

    def in_image(self, argv: Sequence[str]) -> list[str]:
        """A helper command (not a planned start) as this node runs it."""
        from launchers.plan.argv import in_image

        return in_image(self.container, self.binds, argv)

    def command(
        self, argv: Sequence[str], extra: Mapping[str, str] | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """The argv and environment that start ``argv`` (built whole: ``start_argv`` or
        ``in_image``): the program found as the runtime's own (no image), or the image
        given the environment the runtime computed, as ``APPTAINERENV_*``."""
        env = {**self.env, **(extra or {})}
        if not self.wrapped:
            return [_proc.resolve_executable(argv[0], env), *argv[1:]], env
        from launchers.plan.argv import container_env, wrap_env

        assert self.container is not None
        computed = {k: v for k, v in env.items() if self.host_env.get(k) != v}
        inner = container_env(self.host_env, computed)
        return list(argv), {**self.host_env, **wrap_env(self.container, inner)}

    def started(
        self, name: Literal["ray", "serve"], argv: Sequence[str], run: Sequence[str], pid: int
    ) -> None:
        """Record in ``nodes/<rank>.json`` that ``argv`` runs here (``run[0]``: the
        program it was started as). The argv holds no secret: those go by environment."""
        self.processes.append(
            jobfiles.Process(
                name=name, argv=tuple(argv), executable=run[0], pid=pid, time=jobdir.now()
            )
        )
        self.write_record()

    def write_record(self) -> None:
        jobfiles.write(
            self.files.node(self.rank),
            jobfiles.NodeRecord(
                rank=self.rank,
                hostname=self.hostname,
                ip=self.node_ip,
                attempt=self.attempt,
                pid=os.getpid(),
                time=self.created,
                processes=tuple(self.processes),
            ),
        )

    def python_argv(self) -> list[str]:
        """The interpreter for helper processes (inside the image when there is one)."""
        if self.container is None or self.container.runtime == "enroot":
            return [sys.executable]
        return ["python3"]

    def stop_check(self) -> bool:
        """For waits: raise ``Stopped`` when a stop was asked for, else go on."""
        self.stopper.check()
        return True


def require_vllm(ctx: NodeContext, serve_argv: Sequence[str] | None) -> None:
    """Refuse to start a vllm serve whose flags this node's vLLM lacks (a plan made for
    a newer target), before anything starts. Inside a container vLLM is the image's."""
    if serve_argv is None or ctx.container is not None:
        return
    version = installed.installed_version(*installed.VLLM_DISTS)
    if version is not None:
        check_installed(serve_argv, version)


def read_key(path: str | None) -> str | None:
    """The API key in ``path`` (None only when the plan has no key: ``--no-api-key``).
    Fail closed: a key file that is missing, empty, unreadable, a symlink, another
    user's or readable by others stops the job, so vLLM never serves open."""
    if not path:
        return None
    try:
        key = safe.read_private_text(path, "API key").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise RuntimeFailure(
            f"API key: cannot read {path}: {why}",
            fix="resubmit, or pass --api-key-file with a key file readable only by you",
        ) from None
    if not key:
        raise RuntimeFailure(
            f"API key: {path} is empty",
            fix="write the key into it (chmod 600), or resubmit with --no-api-key to serve "
            "without one",
        )
    return key


def node_rank(environ: Mapping[str, str]) -> int:
    for key in ("SLURM_NODEID", "SLURM_PROCID", "VLLM_HPC_RANK"):
        if environ.get(key, "").isdigit():
            return int(environ[key])
    return 0


def _network(iface: str | None, environ: Mapping[str, str]) -> tuple[dict[str, str], str]:
    from launchers.runtime.network import detect

    override = iface or environ.get("VLLM_HPC_IFACE") or None
    given = None if override else (environ.get("VLLM_HOST_IP") or None)
    return detect(override, given)


def context(
    *,
    rank: int,
    nodes: int,
    job_id: str,
    paths: JobPaths,
    iface: str | None,
    extra_env: Mapping[str, str],
    environ: Mapping[str, str],
    node_log: str | None,
) -> NodeContext:
    """This node's context: the network detected (a bad ``--iface`` fails here, before
    anything is created), the job directory made, the node's record written."""
    net_env, reason = _network(iface, environ)  # a bad --iface: nothing created yet
    job_dir = paths.job_dir
    private_dir(job_dir, "job directory")  # made 0700, or ours and closed to others
    log = NodeLog(rank, node_log)
    attempt = int(environ.get("SLURM_RESTART_COUNT", "0") or 0)
    ctx = NodeContext(
        rank=rank,
        nodes=nodes,
        job_id=job_id,
        paths=paths,
        attempt=attempt,
        node_ip=net_env["VLLM_HOST_IP"],
        iface_reason=reason,
        env={**environ, **extra_env, **net_env},
        log=log,
        stopper=Stopper(),
        host_env=dict(environ),
    )
    log(f"{ctx.hostname} rank {rank}/{nodes} job {job_id}; network: {reason}")
    log("exports: " + " ".join(f"{k}={v}" for k, v in net_env.items()))
    ctx.write_record()
    return ctx
