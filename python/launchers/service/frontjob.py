"""The front as a small CPU-only SLURM job: its batch script (rendered by
``render.front``) and its submission."""

from __future__ import annotations

import os
import time

from launchers.jobdir.paths import SLURM_JOB_ID_FIELD, ServiceDir
from launchers.render.front import FrontJob, render_front_script
from launchers.service import store
from launchers.service.definition import ServiceSpec, ServiceState, event_stamp
from launchers.submit import slurm


def front_script(spec: ServiceSpec, directory: str) -> str:
    """The front's batch script (``render.front``), from the service's spec."""
    asked = spec.request
    log = ServiceDir(directory).front_log(SLURM_JOB_ID_FIELD)
    job = FrontJob(
        service=spec.name, time=spec.front_time, log=log,
        python=spec.python, service_dir=directory, partition=asked.partition,
        account=asked.account, qos=asked.qos,
    )  # fmt: skip
    return render_front_script(job)


def submit_front(spec: ServiceSpec, directory: str) -> str:
    """``sbatch`` the front's script; the job id (an event in state.json, and its
    ``front_job``: ``service up --wait`` and ``status`` watch it until it beats)."""
    job_id = slurm.sbatch_text(front_script(spec, directory), os.environ)
    state = store.read_state(directory) or ServiceState(name=spec.name)
    events = (*state.events[-19:], f"{event_stamp(time.time())} front submitted as job {job_id}")
    store.write_state(directory, state.model_copy(
        update={"events": events, "front_job": job_id, "front_job_beat": False}))  # fmt: skip
    return job_id
