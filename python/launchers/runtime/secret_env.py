"""A node's secret variables: read from the job's 0600 file when the node starts, and the
file removed when the job ends for good (lifetime: ``jobdir.secretfile``)."""

from __future__ import annotations

from launchers.errors import RuntimeFailure
from launchers.jobdir import secretfile
from launchers.plan.launch import LaunchPlan


def node_secret_env(plan: LaunchPlan) -> dict[str, str]:
    """The values of the plan's ``secret_env``: from its file, or (a plan made in this
    process, as the wrapper's leader does) from memory. RuntimeFailure when they cannot
    be had: the node starts nothing without them."""
    if not plan.secret_env:
        return {}
    if plan.secret_env_file is None:
        values = plan.secret_values()
        if all(name in values for name in plan.secret_env):
            return {name: values[name] for name in plan.secret_env}
        raise RuntimeFailure(
            f"plan: secret variables {', '.join(plan.secret_env)} have no secret "
            "environment file (secret_env_file)",
            fix="submit through vllm-hpc submit, plan or render sbatch, which write it",
        )
    return secretfile.read(plan.secret_env_file, plan.secret_env)


def ends_for_good(plan: LaunchPlan, stopped_by_signal: bool) -> bool:
    """Whether no next attempt of the job will need its secret file: a job that ends by
    itself is not requeued; one stopped by a signal may be, when its plan requeues."""
    return not (stopped_by_signal and ("requeue", "") in plan.sbatch)


def forget(plan: LaunchPlan, stopped_by_signal: bool) -> None:
    """Remove the plan's secret file when the job ends for good (the leader calls it)."""
    if plan.secret_env_file and ends_for_good(plan, stopped_by_signal):
        secretfile.remove(plan.secret_env_file)
