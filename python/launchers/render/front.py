"""The batch script of a service's front: one small CPU-only task that runs the front
(vllm-router behind the proxy, and the controller). Pure: text from typed fields."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from launchers.render.checks import check_text


@dataclass(frozen=True)
class FrontJob:
    """What the front's job is: the service's name, the front's time limit, its log
    (``%j`` for the job id), the Python that runs it, the service's directory, and the
    SLURM options of the service's request."""

    service: str
    time: str
    log: str
    python: str
    service_dir: str
    partition: str | None = None
    account: str | None = None
    qos: str | None = None


def render_front_script(job: FrontJob) -> str:
    lines = [
        "#!/bin/bash",
        f"# vllm-hpc service {job.service}: its front (vllm-router + the controller)",
        f"#SBATCH --job-name={job.service}-front",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=1",
        f"#SBATCH --time={job.time}",
        f"#SBATCH --output={check_text('the front log', job.log)}",
        "#SBATCH --open-mode=append",
        "#SBATCH --signal=B:USR1@60",
    ]
    for flag, value in (("partition", job.partition), ("account", job.account),
                        ("qos", job.qos)):  # fmt: skip
        if value:
            lines.append(f"#SBATCH --{flag}={check_text(f'--{flag}', value)}")
    argv = [job.python, "-m", "launchers", "service", "front", "--service-dir", job.service_dir]
    lines += ["set -euo pipefail", "exec " + " ".join(shlex.quote(a) for a in argv), ""]
    return "\n".join(lines)


__all__ = ["FrontJob", "render_front_script"]
