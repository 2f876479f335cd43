"""A job as its directory and SLURM tell it: state, endpoint, key, logs, metrics,
bench, stop (``Job``). Reading only: planning and submitting are
``launchers.client``'s. The jobs of a job root are ``launchers.observe.finder``'s
(``JobFinder``, also importable from here).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launchers import jobdir, waits
from launchers.defaults import (
    BENCH_CONCURRENCY,
    BENCH_INPUT_LEN,
    BENCH_OUTPUT_LEN,
    BENCH_REQUESTS,
    DEFAULT_READY_TIMEOUT,
    HEALTH_PATH,
    METRICS_INTERVAL,
    SLURM_KILL_WAIT,
    STOP_TIMEOUT,
)
from launchers.errors import InputError, RuntimeFailure, WaitTimeout
from launchers.jobdir import jobfiles, jobroot
from launchers.jobdir.paths import JobDir, log_rank
from launchers.observe import trust
from launchers.observe.finder import JobFinder
from launchers.observe.status import JobStatus, read_status, wait_ready

if TYPE_CHECKING:
    from types import ModuleType

    from openai import AsyncOpenAI, OpenAI

    from launchers.observe.progress import Progress
    from launchers.plan.launch import LaunchPlan
    from launchers.submit.slurmctl import Pending

OPENAI_EXTRA = "pip install 'vllm-hpc[openai]'"


def _slurm_state(job_id: str) -> tuple[str | None, str]:
    # local-, manual- (the wrapper outside SLURM: compose, Ray cluster...) and dp- jobs
    # are no SLURM job: their leader's word alone says how they are.
    if not jobroot.SLURM_JOB_ID.fullmatch(job_id):
        return _local_state(job_id)
    from launchers.submit.slurmctl import job_state

    return job_state(job_id)


def _slurm_pending(job_id: str) -> Pending | None:
    from launchers.submit.slurmctl import pending

    return pending(job_id)


def _local_state(job_id: str) -> tuple[str | None, str]:
    del job_id
    return ("RUNNING", "local")


@dataclass
class Job:
    """One deployment, by SLURM job id (or ``local-...`` for ``--executor local``)."""

    job_id: str
    job_dir: str

    @property
    def files(self) -> JobDir:
        """The job directory's files."""
        return JobDir(self.job_dir)

    @property
    def info(self) -> jobfiles.Endpoint | None:
        """The leader's ``endpoint.json`` (None until it has written one)."""
        return jobfiles.read(self.files.endpoint, jobfiles.Endpoint)

    @property
    def endpoint(self) -> str | None:
        info = self.info
        return info.url if info is not None and info.url else None

    @property
    def model(self) -> str | None:
        info = self.info
        return info.model if info is not None and info.model else None

    def api_key(self) -> str | None:
        """The key for the job's own recorded endpoint only: refused (UnsafePathError)
        when the job directory is not ours or others can write it (``observe.trust``)."""
        return trust.job_api_key(self.job_dir)

    def openai(self, **options: Any) -> OpenAI:
        """An ``openai.OpenAI`` client for the job: ``base_url`` its recorded endpoint
        (``http://LEADER_IP:PORT/v1``), ``api_key`` its key (read as ``api_key`` reads it);
        other keyword arguments (``timeout``, ``max_retries``...) go to ``openai.OpenAI``.
        Refused while the job is not READY, and when it has no key (never an empty key,
        and never the one in ``$OPENAI_API_KEY``). Needs ``pip install 'vllm-hpc[openai]'``."""
        client: OpenAI = direct_openai(**self._openai_options(options))
        return client

    def async_openai(self, **options: Any) -> AsyncOpenAI:
        """The same as ``openai()``, as an ``openai.AsyncOpenAI``."""
        client: AsyncOpenAI = direct_openai(asynchronous=True, **self._openai_options(options))
        return client

    def _openai_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The client's keyword arguments: the job's own URL and key over the caller's."""
        given = sorted({"base_url", "api_key", "http_client"} & set(options))
        if given:
            raise InputError(
                f"openai(): {', '.join(given)} come from the job, not from the caller "
                "(http_client: ours ignores proxy variables, so the key reaches the job "
                "and no proxy)",
                fix="leave them out (or build openai.OpenAI yourself)",
            )
        status = self.status()
        info = trust.trusted_endpoint(self.job_dir)  # the key goes to its own URL only
        if status.state != "READY" or info is None or not info.url:
            raise RuntimeFailure(
                f"job {self.job_id} is {status.state}, not READY: no endpoint for a client",
                fix=f"wait with `vllm-hpc status {self.job_id}` until it says READY",
            )
        key = trust.key_for(info)
        if not key:  # fail closed: openai would fall back to $OPENAI_API_KEY
            raise RuntimeFailure(
                f"job {self.job_id} has no API key (its key file "
                f"{info.api_key_file or '(none recorded)'} is missing or empty)",
                fix="resubmit the job: vllm-hpc serves only with a key",
            )
        return {**options, "base_url": info.url, "api_key": key}

    def status(self) -> JobStatus:
        if self.job_id.startswith("local-"):
            return read_status(self.job_id, self.job_dir, self._local_alive)
        return read_status(self.job_id, self.job_dir, _slurm_state, _slurm_pending)

    def _local_pid(self) -> int:
        started = jobfiles.read(self.files.local, jobfiles.LocalProcess)
        if started is not None:
            return started.pid
        leader = jobfiles.read(self.files.node(0), jobfiles.NodeRecord)
        return leader.pid if leader is not None else 0

    def _local_alive(self, job_id: str) -> tuple[str | None, str]:
        """A local job is alive while its process is (an exited child not yet reaped by
        this process counts as ended, and so does a later process with the same pid); an
        ended one that left no final state failed."""
        del job_id
        pid = self._local_pid()
        if not pid:
            return ("PENDING", "local")
        from launchers import _proc  # a local job's only: reading a job needs no process

        started = jobfiles.read(self.files.local, jobfiles.LocalProcess)
        same = started is None or not started.created or _proc.same_process(pid, started.created)
        if same and _pid_alive(pid):
            return ("RUNNING", "local")
        return ("FAILED", f"local process {pid} exited")

    def _local_fix(self) -> str:
        started = jobfiles.read(self.files.local, jobfiles.LocalProcess)
        if started is not None:
            return f"kill -KILL -- -{started.pgid or started.pid}"
        return f"kill -KILL {self._local_pid()}"

    def _signal_local(self, sig: int) -> bool:
        """Signal a local job's process group (its runtime and what runs in its group),
        only while its leader is the process that was started. True if sent."""
        from launchers import _proc

        started = jobfiles.read(self.files.local, jobfiles.LocalProcess)
        if started is not None and started.created:
            return _proc.signal_group(
                started.pgid or started.pid, started.pid, started.created, sig
            )
        pid = self._local_pid()  # an older record: the recorded pid alone, while it lives
        if pid and _pid_alive(pid):
            os.kill(pid, sig)
            return True
        return False

    def metrics_text(self) -> str:
        """The raw Prometheus text of the endpoint's ``/metrics``."""
        from launchers.health import http_get

        info = trust.trusted_endpoint(self.job_dir)  # the key goes to its own URL only
        url = info.url if info is not None else None
        if not url:
            raise RuntimeFailure(f"job {self.job_id} has no endpoint yet ({self.status().state})")
        key = trust.key_for(info)
        probe = http_get(url.removesuffix("/v1") + "/metrics", api_key=key, timeout=10)
        if not probe.ok:
            raise RuntimeFailure(f"{url.removesuffix('/v1')}/metrics answered {probe.detail[:100]}")
        return probe.detail

    def metrics(self, interval: float = METRICS_INTERVAL) -> dict[str, object]:
        """A summary of ``/metrics``: two scrapes ``interval`` seconds apart give rates."""
        return next(self.watch_metrics(interval))

    def watch_metrics(
        self, interval: float = METRICS_INTERVAL, *, clock: waits.Clock = waits.REAL
    ) -> Iterator[dict[str, object]]:
        """A summary of ``/metrics`` every ``interval`` seconds, for as long as the caller
        reads: each one's rates cover the window since the one before."""
        from launchers.observe.metrics import parse_metrics, summarize

        before, start = parse_metrics(self.metrics_text()), clock.now()
        ticks = waits.ticks(interval, clock=clock)
        next(ticks)  # the first tick is the first scrape's: the window starts there
        for _ in ticks:
            after, end = parse_metrics(self.metrics_text()), clock.now()
            yield summarize(after, before, end - start)
            before, start = after, end

    def bench(
        self,
        *,
        requests: int = BENCH_REQUESTS,
        concurrency: int = BENCH_CONCURRENCY,
        input_len: int = BENCH_INPUT_LEN,
        output_len: int = BENCH_OUTPUT_LEN,
        tool: str = "auto",
        timeout: float = DEFAULT_READY_TIMEOUT,
        log: Any = None,
    ) -> dict[str, Any]:
        """Load-test the endpoint (``vllm bench serve`` where vLLM is, else the built-in
        client); the summary is also saved under ``<job_dir>/bench/``."""
        from launchers.observe.benchrun import run_bench
        from launchers.observe.loadtest import LoadSpec

        status = self.status()
        if status.state != "READY" or not status.url:
            raise RuntimeFailure(
                f"job {self.job_id} is {status.state}, not READY: nothing to load-test",
                fix=f"wait with `vllm-hpc status {self.job_id}` until it says READY",
            )
        plan = self.recorded_plan()
        spec = LoadSpec(
            base_url=status.url.removesuffix("/v1"),
            model=str(status.model or (plan.served_model_name if plan else "")),
            tokenizer=str((plan.model if plan else None) or status.model or ""),
            requests=requests,
            concurrency=concurrency,
            input_len=input_len,
            output_len=output_len,
        )
        leader = next((n for n in self.nodes() if n.rank == 0), None)
        return run_bench(
            job_id=self.job_id,
            job_dir=self.job_dir,
            spec=spec,
            plan=plan,
            api_key=self.api_key(),
            leader_host=leader.hostname if leader is not None else None,
            tool=tool,
            timeout=timeout,
            log=log,
        )

    def recorded_plan(self) -> LaunchPlan | None:
        """The job's ``plan.json`` (None when it is missing or unreadable)."""
        from launchers.plan.launch import LaunchPlan

        return jobfiles.read(self.files.plan, LaunchPlan)

    def nodes(self) -> list[jobfiles.NodeRecord]:
        """Every rank's record, lowest rank first."""
        return jobfiles.nodes(self.job_dir)

    def wait_ready(
        self, timeout: float = DEFAULT_READY_TIMEOUT, on_change: Any = None, on_poll: Any = None
    ) -> JobStatus:
        """Wait until READY; ``on_change(status)`` at each new state or message,
        ``on_poll(status)`` at every look (e.g. to show ``progress()``)."""
        return wait_ready(
            self.status,
            what=f"job {self.job_id} to be ready",
            timeout=timeout,
            on_change=on_change or (lambda status: None),
            on_poll=on_poll,
            log_hint=self._first_log(),
        )

    def progress(self, status: JobStatus | None = None) -> Progress:
        """How far the job has come: its state, the Ray nodes joined, and vLLM's own
        start-up step from the tail of the leader's vLLM log (``observe.progress``)."""
        from launchers.observe.progress import read_progress

        return read_progress(status or self.status(), self.job_dir)

    def _first_log(self) -> str:
        """The log to read first: the leader's, or a local job's own output before it."""
        leader = self.files.node_log(0)
        local = self.files.local_output
        return local if not Path(leader).exists() and Path(local).exists() else leader

    def summary(self) -> dict[str, Any]:
        """One row of ``vllm-hpc jobs``: id, model, nodes, state, endpoint, start time."""
        status, info = self.status(), self.info
        return {
            "job_id": self.job_id,
            "model": (info.model if info is not None else None) or "-",
            "nodes": info.nodes if info is not None else "-",
            "state": status.state,
            "message": status.message,
            "endpoint": status.url or "-",
            "started": info.started if info is not None else None,
            "pending": _pending_dict(status.pending),
        }

    def report(self) -> dict[str, Any]:
        """What ``vllm-hpc status`` shows: SLURM's and the leader's state, each node's
        role and address, the Ray nodes, vLLM's health (asked when READY), the failed
        process's last lines."""
        from launchers.health import http_get

        trust.trusted_endpoint(self.job_dir)  # refuse what another user could have written
        status, info = self.status(), self.info
        healthy = None
        if status.state == "READY" and status.url:
            healthy = http_get(status.url.removesuffix("/v1") + HEALTH_PATH).ok  # no key needed
        return {
            "job_id": self.job_id,
            "state": status.state,
            "message": status.message,
            "slurm": status.slurm,
            "pending": _pending_dict(status.pending),
            "endpoint": status.url,
            "model": status.model,
            "healthy": healthy,
            "nodes": [
                {
                    "rank": n.rank,
                    "host": n.hostname,
                    "ip": n.ip,
                    "role": "leader" if n.rank == 0 else "worker",
                }
                for n in self.nodes()
            ],
            "ray_nodes": (
                [n.model_dump() for n in info.ray_nodes]
                if info is not None and info.ray_nodes is not None
                else None
            ),
            "log_tail": (
                list(info.log_tail) if info is not None and status.state == "FAILED" else None
            ),
            "job_dir": self.job_dir,
        }

    def follow_logs(self, node: int | None = None) -> Iterator[tuple[Path, str]]:
        """New lines of the job's logs as they are written, (file, line); never ends
        (the caller stops it, e.g. on Ctrl+C). New log files are picked up."""
        offsets = {p: p.stat().st_size for p in self.logs(node)}
        for _ in waits.ticks():
            for path in self.logs(node):
                size = path.stat().st_size
                start = offsets.get(path, 0)
                if size > start:
                    with open(path, encoding="utf-8", errors="replace") as fh:
                        fh.seek(start)
                        for line in fh.read().splitlines():
                            yield path, line
                    offsets[path] = size

    def logs(self, node: int | None = None) -> list[Path]:
        """The job's log files (all, or one node's), leader first."""
        files = sorted(Path(self.job_dir).glob(JobDir.LOGS), key=_log_order)
        if node is not None:
            files = [f for f in files if log_rank(f.name) == str(node)]
        return files

    def stop(self, timeout: float = STOP_TIMEOUT) -> JobStatus:
        """Cancel the job and wait until SLURM says it is gone. Idempotent. A local job:
        SIGTERM to its process group, SIGKILL to it after SLURM's default KillWait."""
        local = self.job_id.startswith("local-")
        if local:
            self._signal_local(signal.SIGTERM)
        else:
            from launchers.submit.slurmctl import scancel

            state, _ = _slurm_state(self.job_id)
            if state in ("PENDING", "RUNNING", "PREEMPTED"):
                scancel(self.job_id)
        last = {"slurm": "", "leader": ""}

        def ended() -> str | None:
            last["leader"] = self.status().state
            state, raw = (
                self._local_alive(self.job_id)
                if self.job_id.startswith("local-")
                else _slurm_state(self.job_id)
            )
            last["slurm"] = raw
            return None if state in ("PENDING", "RUNNING", "PREEMPTED") else raw

        def wait(seconds: float) -> str:
            return waits.wait_for(
                ended,
                what=f"job {self.job_id} to end after {'SIGTERM' if local else 'scancel'}",
                detail=lambda: f" (SLURM says {last['slurm']}; leader says {last['leader']})",
                timeout=seconds,
                fix=self._local_fix() if local else f"scancel --signal=KILL {self.job_id}",
            ).value

        if not local:
            raw = wait(timeout)
        else:  # as SLURM does: SIGKILL to the group after KillWait
            try:
                raw = wait(min(timeout, SLURM_KILL_WAIT))
            except WaitTimeout:
                if timeout <= SLURM_KILL_WAIT or not self._signal_local(signal.SIGKILL):
                    raise
                raw = wait(timeout - SLURM_KILL_WAIT)
        info = self.info
        if info is not None and not info.final:
            # The leader could not say so itself (killed): record how it ended.
            update = {"state": "STOPPED", "message": f"stopped ({raw or 'cancelled'})"}
            jobfiles.write(
                self.files.endpoint,
                info.model_copy(update={**update, "updated": jobdir.now()}),
            )
        return self.status()


def _pending_dict(pending: Pending | None) -> dict[str, str | None] | None:
    """A pending job's reason (SLURM's word, what it adds, its meaning in plain words)
    and expected start (as squeue prints it; None until SLURM has estimated one)."""
    if pending is None:
        return None
    return {
        "reason": pending.reason,
        "detail": pending.detail or None,
        "meaning": pending.meaning,
        "expected_start": pending.start,
    }


def direct_openai(*, asynchronous: bool = False, **options: Any) -> Any:
    """An ``openai.OpenAI`` (or ``AsyncOpenAI``) whose HTTP client ignores proxy
    variables (``trust_env=False``): the key goes to ``base_url`` and nowhere else, even
    where ``http_proxy``/``HTTPS_PROXY`` are set, as they are on many clusters."""
    openai = _openai_module()
    if asynchronous:
        http = openai.DefaultAsyncHttpxClient(trust_env=False)
        return openai.AsyncOpenAI(http_client=http, **options)
    return openai.OpenAI(http_client=openai.DefaultHttpxClient(trust_env=False), **options)


def _openai_module() -> ModuleType:
    """The ``openai`` package, or one line saying how to install it."""
    try:
        import openai
    except ImportError:
        raise InputError(
            "the openai package is not installed (openai() needs it)", fix=OPENAI_EXTRA
        ) from None
    return openai


def _log_order(path: Path) -> tuple[int, str]:
    tail = log_rank(path.name)
    return (int(tail) if tail.isdigit() else -1, path.name)


def _pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


__all__ = ["Job", "JobFinder", "JobStatus", "RuntimeFailure", "WaitTimeout", "direct_openai"]
