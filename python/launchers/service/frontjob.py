"""The front as a small CPU-only SLURM job: its batch script (pure) and its submission."""

from __future__ import annotations

import os
import shlex
import time

from launchers.service import store
from launchers.service.definition import ServiceSpec, ServiceState, event_stamp, front_log
from launchers.submit import slurm


def front_script(spec: ServiceSpec, directory: str) -> str:
    """The front's batch script: one small CPU-only task running the front. Pure."""
    lines = [
        "#!/bin/bash",
        f"# vllm-hpc service {spec.name}: its front (vllm-router + the controller)",
        f"#SBATCH --job-name={spec.name}-front",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=1",
        f"#SBATCH --time={spec.front_time}",
        f"#SBATCH --output={front_log(directory, '%j')}",
        "#SBATCH --open-mode=append",
        "#SBATCH --signal=B:USR1@60",
    ]
    asked = spec.request
    for flag, value in (("partition", asked.partition), ("account", asked.account),
                        ("qos", asked.qos)):  # fmt: skip
        if value:
            lines.append(f"#SBATCH --{flag}={value}")
    argv = [spec.python, "-m", "launchers", "service", "front", "--service-dir", directory]
    lines += ["set -euo pipefail", "exec " + " ".join(shlex.quote(a) for a in argv), ""]
    return "\n".join(lines)


def submit_front(spec: ServiceSpec, directory: str) -> str:
    """``sbatch`` the front's script; the job id (an event in state.json, and its
    ``front_job``: ``service up --wait`` and ``status`` watch it until it beats)."""
    job_id = slurm.sbatch_text(front_script(spec, directory), os.environ)
    state = store.read_state(directory) or ServiceState(name=spec.name)
    events = (*state.events[-19:], f"{event_stamp(time.time())} front submitted as job {job_id}")
    store.write_state(directory, state.model_copy(
        update={"events": events, "front_job": job_id, "front_job_beat": False}))  # fmt: skip
    return job_id
