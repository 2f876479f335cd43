"""The one road from a request to a job, for the CLI, the services and Python users:
plan a request, submit it, find jobs. The same operations as the CLI, typed.

    from launchers.client import Client, SubmitRequest
    job = Client().submit(SubmitRequest(model="llama-3.2-3b-instruct"))
    job.wait_ready(timeout=1800)
    print(job.endpoint)          # http://10.0.0.11:8000/v1
    job.stop()

A request may also be given as its fields (``Client().plan({"model": ..., "nodes":
2})``): they are checked as the CLI checks its options (``SubmitRequest.checked``), and
one that does not validate is an ``InputError`` with the CLI's one line (``--nodes:
...``), where ``SubmitRequest(...)`` raises pydantic's ``ValidationError``.

A job is read through ``launchers.observe.job.Job``; it, planning (``input``) and
submission (``submit.slurm``) are imported when first used, so finding a job stays
cheap and a plan (``submit --dry-run``) imports no job reading.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launchers.observe.finder import JobFinder
from launchers.spec.request import SubmitRequest

if TYPE_CHECKING:
    from launchers.observe.cleanup import Decision
    from launchers.observe.job import Job
    from launchers.plan.launch import LaunchPlan
    from launchers.render.stagejob import StageJob
    from launchers.spec.config import ServeConfig
    from launchers.spec.staged import StageRequest, StageVia
    from launchers.stage.run import StageResult
    from launchers.submit.slurm import JobHandle
    from launchers.submit.stagejob import StageJobEnd
    from launchers.waits import Clock


@dataclass(frozen=True)
class StageJobRun:
    """A ``stage --via sbatch``: the script (as submitted, or as a dry run shows it), the
    job it describes, and how it ended (None for a dry run)."""

    script: str
    job: StageJob
    end: StageJobEnd | None


class Client(JobFinder):
    """Plan, submit and find vllm-hpc jobs. The job root: ``job_root``, else
    ``$VLLM_HPC_JOB_ROOT``, else the site file's ``job_root`` (the site file found as
    ``registries`` and the environment say), else ``~/.vllm-hpc/jobs``."""

    def __init__(
        self,
        job_root: str | None = None,
        environ: Mapping[str, str] | None = None,
        registries: tuple[str, ...] = (),
    ):
        def site_job_root() -> str | None:
            from launchers.input.registry import site_job_root  # read only if needed

            return site_job_root(self.environ, registries)

        super().__init__(job_root, environ, site_job_root)
        self.registries = registries

    def plan(self, request: SubmitRequest | Mapping[str, Any]) -> LaunchPlan:
        """The plan a ``submit`` of ``request`` would run (nothing submitted); a request
        that names no job root plans under this client's. ``request``: a
        ``SubmitRequest`` or its fields (``SubmitRequest.checked``)."""
        from launchers.input.planner import plan_for

        return plan_for(self.config(request))

    def config(self, request: SubmitRequest | Mapping[str, Any]) -> ServeConfig:
        """``request`` resolved (registry entry, site file, built-in defaults) and
        checked: what ``plan`` plans, with the typed values the plan renders (its SLURM
        options: time limit, time-limit warning)."""
        from launchers.input.planner import make_config

        if not isinstance(request, SubmitRequest):
            request = SubmitRequest.checked(request)
        if request.job_root is None:
            request = request.model_copy(update={"job_root": self.job_root})
        return make_config(request, self.environ, sys.executable)

    def submit(
        self,
        request: SubmitRequest | Mapping[str, Any],
        *,
        executor: str = "slurm",
        via: str = "submitit",
    ) -> Job:
        """Plan ``request`` (a ``SubmitRequest`` or its fields) and submit it: a SLURM
        job (through submitit or ``sbatch``), or one node here (``executor="local"``)."""
        from launchers.observe.job import Job

        handle = self.submit_plan(self.plan(request), executor=executor, via=via)
        return Job(handle.job_id, handle.job_dir)

    def submit_plan(self, plan: LaunchPlan, *, executor: str, via: str) -> JobHandle:
        """Submit a plan made by ``plan`` (what ``vllm-hpc submit`` does after showing
        it): the handle says where the job's directory and first log are."""
        from launchers.submit import slurm

        return slurm.submit(plan, executor=executor, via=via, environ=self.environ)

    def stage(self, request: StageRequest) -> StageResult:
        """Copy a model from the hub (or the site's mirror) into the model store, verify
        it and record it (``launchers.stage.run``): on a machine that reaches the hub,
        for jobs whose nodes do not. ``request.dry_run``: list what would be staged."""
        from launchers.input.registry import load_registry
        from launchers.stage.run import stage

        registry = load_registry(self.registries, self.environ)
        return stage(request, self.environ, registry.site, lambda name: registry.get(name).model)

    def stage_job(
        self,
        request: StageRequest,
        via: StageVia,
        *,
        as_json: bool = False,
        said: Callable[[str], None] = lambda line: None,
        clock: Clock | None = None,
    ) -> StageJobRun:
        """``stage`` on a node that reaches the hub (``stage --via sbatch``): the same
        command, resolved here (``stage.run.node_stage``), in a short job on ``via``'s
        partition (else the site's ``transfer_partition``, else SLURM's default), waited
        for until it ends (state changes ``said``; ``WaitTimeout`` after its time limit
        and ``STAGE_JOB_QUEUE_WAIT`` of queueing), its output read back. A dry run
        (``request.dry_run``) renders the script and submits nothing."""
        from launchers import waits
        from launchers.defaults import STAGE_JOB_QUEUE_WAIT
        from launchers.input.registry import load_registry
        from launchers.render.stagejob import StageJob, render_stage_script
        from launchers.spec import slurmtime
        from launchers.stage.run import node_stage
        from launchers.submit import stagejob

        registry = load_registry(self.registries, self.environ)
        site = registry.site
        node = node_stage(request.model_copy(update={"dry_run": False}), self.environ, site,
                          lambda name: registry.get(name).model, as_json=as_json)  # fmt: skip
        files = stagejob.StageJobFiles(self.job_root)
        job = StageJob(
            model=node.repo_id, revision=node.revision, argv=node.argv, output=files.output(),
            errors=files.errors(), time=via.time, account=site.account, qos=site.qos,
            partition=via.partition or site.transfer_partition,
        )  # fmt: skip
        script = render_stage_script(job)
        if request.dry_run:
            return StageJobRun(script, job, None)
        files.make()
        job_id = stagejob.submit(script, self.environ)
        said(f"stage job {job_id} submitted; its output: {files.output(job_id)}")
        state, raw = stagejob.wait_ended(
            job_id, timeout=slurmtime.minutes(via.time) * 60 + STAGE_JOB_QUEUE_WAIT,
            log=files.output(job_id), said=said, clock=clock or waits.REAL,
        )  # fmt: skip
        return StageJobRun(script, job, stagejob.ending(job_id, files, state, raw))

    def clean(
        self,
        *,
        older_than: float,
        secrets_only: bool = False,
        dry_run: bool = False,
        now: float | None = None,
    ) -> list[Decision]:
        """Remove the directories of jobs that ended more than ``older_than`` seconds ago
        (or, with ``secrets_only``, the secrets of every ended job), as
        ``observe.cleanup.decide`` decides; a job SLURM still holds, and a directory that
        is not a private one of this user, are never touched. ``dry_run``: decide only.
        Each decision names the secret files it removed (or would)."""
        import time

        from launchers.jobdir.safe import check_private
        from launchers.observe import cleanup

        if not Path(self.job_root).is_dir():
            return []
        check_private(self.job_root, "job root")
        seen = cleanup.look(self.job_root, time.time() if now is None else now)
        decided = cleanup.decide(seen, older_than=older_than, secrets_only=secrets_only)
        return [self._clean_one(decision, dry_run) for decision in decided]

    def _clean_one(self, decision: Decision, dry_run: bool) -> Decision:
        """Carry out one decision: the directory (checked again just before) and the
        secret files it names."""
        import dataclasses
        import shutil

        from launchers.observe import cleanup

        if decision.action not in ("remove", "secrets"):
            return decision
        job_dir = decision.seen.job_dir
        files = cleanup.secret_files(decision.seen, self.job_root)
        if decision.action == "remove":  # the directory goes with the secrets in it
            files = [f for f in files if not f.startswith(job_dir + "/")]
        if dry_run:
            return dataclasses.replace(decision, files=tuple(files))
        why = cleanup.refusal(job_dir)
        if why:
            return dataclasses.replace(decision, action="refuse", why=why)
        for path in files:
            Path(path).unlink(missing_ok=True)
        if decision.action == "remove":
            shutil.rmtree(job_dir)  # by file descriptors: never follows a symlink in it
        return dataclasses.replace(decision, files=tuple(files))


def __getattr__(name: str) -> Any:
    """``launchers.client.Job``, imported when it is asked for."""
    if name == "Job":
        from launchers.observe.job import Job

        return Job
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Client", "Job", "SubmitRequest"]
