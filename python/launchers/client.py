"""The one road from a request to a job, for the CLI, the services and Python users:
plan a request, submit it, find jobs. The same operations as the CLI, typed.

    from launchers.client import Client, SubmitRequest
    job = Client().submit(SubmitRequest(model="llama-3.2-3b-instruct"))
    job.wait_ready(timeout=1800)
    print(job.endpoint)          # http://10.0.0.11:8000/v1
    job.stop()

A job is read through ``launchers.observe.job.Job``; planning (``input``) and
submission (``submit.slurm``) are imported when first used, so finding a job stays
cheap.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from launchers.observe.job import Job, JobFinder
from launchers.spec.request import SubmitRequest

if TYPE_CHECKING:
    from launchers.plan.launch import LaunchPlan
    from launchers.submit.slurm import JobHandle


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

    def plan(self, request: SubmitRequest) -> LaunchPlan:
        """The plan a ``submit`` of ``request`` would run (nothing submitted); a request
        that names no job root plans under this client's."""
        from launchers.input.planner import make_plan

        if request.job_root is None:
            request = request.model_copy(update={"job_root": self.job_root})
        return make_plan(request, self.environ, sys.executable)

    def submit(
        self, request: SubmitRequest, *, executor: str = "slurm", via: str = "submitit"
    ) -> Job:
        """Plan ``request`` and submit it: a SLURM job (through submitit or ``sbatch``),
        or one node here (``executor="local"``)."""
        handle = self.submit_plan(self.plan(request), executor=executor, via=via)
        return Job(handle.job_id, handle.job_dir)

    def submit_plan(self, plan: LaunchPlan, *, executor: str, via: str) -> JobHandle:
        """Submit a plan made by ``plan`` (what ``vllm-hpc submit`` does after showing
        it): the handle says where the job's directory and first log are."""
        from launchers.submit import slurm

        return slurm.submit(plan, executor=executor, via=via, environ=self.environ)


__all__ = ["Client", "Job", "SubmitRequest"]
