"""Submission to SLURM: submitit, or ``sbatch --parsable``, or one node here without
SLURM (``--executor local``). Asking SLURM about a job and signalling it is
``slurmctl``'s."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from launchers import _proc, jobdir
from launchers.errors import InputError, SubmitError
from launchers.jobdir import compilecache, jobfiles, jobroot, safe, secretfile
from launchers.jobdir.paths import SLURM_JOB_ID_FIELD, JobDir, JobRoot
from launchers.plan.launch import LaunchPlan, job_dir_for
from launchers.render.text import job_dir_lines
from launchers.spec import slurmtime
from launchers.submit.slurmctl import cluster_name, need_tool


@dataclass(frozen=True)
class JobHandle:
    job_id: str
    job_dir: str
    executor: str  # slurm | local
    log: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_sbatch_parsable(stdout: str) -> str:
    """``123`` or ``123;cluster`` -> ``123``."""
    first = stdout.strip().splitlines()[0] if stdout.strip() else ""
    job_id = first.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise SubmitError(f"sbatch printed no job id (got {stdout.strip()[:200]!r})")
    return job_id


def slurm_minutes(text: str) -> int:
    """SLURM time (``MM``, ``HH:MM:SS``, ``D-HH:MM``...) -> whole minutes (rounded up)."""
    try:
        return slurmtime.minutes(text)
    except ValueError:
        raise InputError(f"--time: {text!r} is not a SLURM time") from None


def sbatch_text(script: str, environ: Mapping[str, str]) -> str:
    """``sbatch --parsable`` a script given as text; the job id."""
    require_slurm_client("sbatch", environ)
    done = _proc.run(["sbatch", "--parsable"], env=environ, input_text=script, timeout=60)
    if done.returncode != 0:
        raise SubmitError(f"sbatch refused the job: {done.stderr.strip()[:300]}")
    return parse_sbatch_parsable(done.stdout)


def _prepare(plan: LaunchPlan) -> None:
    safe.private_dir(plan.paths.root, "job root")
    if plan.compile_cache is not None and plan.container and plan.container.runtime == "enroot":
        # pyxis mounts it before the step (and the node runtime) starts: it must exist.
        compilecache.prepare(plan.compile_cache.path)
    if (
        plan.api_key_file
        and not plan.generate_api_key
        and not os.access(plan.api_key_file, os.R_OK)
    ):
        raise InputError(f"--api-key-file: cannot read {plan.api_key_file}")


def require_slurm_client(via: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse to submit from a machine without SLURM's client commands (``sbatch``
    submits; the job's own ``srun`` runs on the nodes) before anything is written."""
    need_tool(
        "sbatch",
        f"{via}: no srun/sbatch here: this is not a SLURM login node",
        fix="submit from the login node, or use --dry-run / --executor local",
        environ=environ,
    )


def submit_sbatch(plan: LaunchPlan, script: str, environ: Mapping[str, str]) -> JobHandle:
    """``sbatch --parsable`` the rendered script (read from stdin)."""
    require_slurm_client("sbatch", environ)
    _prepare(plan)
    done = _proc.run(["sbatch", "--parsable"], env=environ, input_text=script, timeout=60)
    if done.returncode != 0:
        raise SubmitError(f"sbatch refused the job: {done.stderr.strip()[:300]}")
    job_id = parse_sbatch_parsable(done.stdout)
    _, _, cluster = done.stdout.strip().partition(";")
    if not jobroot.CLUSTER_NAME.fullmatch(cluster.strip()):
        cluster = cluster_name(environ)
    log = plan.paths.batch_log.replace(SLURM_JOB_ID_FIELD, job_id)
    return JobHandle(job_id, job_dir_for(plan, job_id, cluster.strip()), "slurm", log)


def submitit_job(plan_json: str) -> int:
    """The function submitit runs on every node (one task per node, rank 0 leads)."""
    from launchers.runtime.run import run_plan

    plan = LaunchPlan.model_validate_json(plan_json)
    if os.environ.get("SLURM_PROCID", "0") == "0":  # its directory: the setup lines made it
        job_id = os.environ.get("SLURM_JOB_ID", "")
        paths = plan.paths.for_job(job_id, jobroot.cluster_name(os.environ))
        safe.private_dir(paths.job_dir, "job directory")
        safe.create_private_file(paths.plan, plan_json)  # a requeue keeps its plan
    code = run_plan(plan)
    if code != 0:
        raise RuntimeError(f"vllm-hpc node runtime failed with exit code {code}")
    return code


def submit_submitit(plan: LaunchPlan) -> JobHandle:
    """Submit through submitit (``AutoExecutor``), one task per node."""
    require_slurm_client("submitit")
    _prepare(plan)
    try:
        import submitit
    except ImportError:
        raise SubmitError(
            "--via submitit: submitit is not installed in this Python",
            fix="pip install submitit, or use --via sbatch",
        ) from None

    folder = JobRoot(plan.paths.root).submitit(SLURM_JOB_ID_FIELD)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_python=plan.python)
    params: dict[str, Any] = {
        "nodes": plan.layout.nodes,
        "tasks_per_node": 1,
        "name": plan.job_name,
        "slurm_setup": [*plan.setup, *job_dir_lines(plan.paths.job_dir)],
    }
    directives = dict(plan.sbatch)
    if "gpus-per-node" in directives:
        params["gpus_per_node"] = plan.layout.gpus_per_node
    if "gres" in directives:
        params["slurm_gres"] = directives["gres"]
    for key, name in (
        ("partition", "slurm_partition"),
        ("account", "slurm_account"),
        ("qos", "slurm_qos"),
        ("cpus-per-task", "cpus_per_task"),
        ("mem", "slurm_mem"),
    ):
        if key in directives:
            params[name] = directives[key]
    if "time" in directives:
        params["timeout_min"] = slurm_minutes(directives["time"])
    if plan.container is not None and plan.container.runtime == "enroot":
        from launchers.plan.argv import pyxis_options  # the dry run's, the script's

        params["slurm_srun_args"] = pyxis_options(plan)
    signal = directives.get("signal", "")
    if signal:  # submitit's own --signal=USR2@N reaches every process of the step: the
        # runtime drains on it, and the processes it starts ignore USR1/USR2 (_proc's guard).
        # (B: would signal submitit's batch shell, which runs srun without exec and dies.)
        params["slurm_signal_delay_s"] = int(signal.split("@", 1)[1])
    executor.update_parameters(**params)
    try:
        job = executor.submit(submitit_job, plan.model_dump_json())
    except Exception as exc:  # submitit wraps sbatch's message in its own errors
        raise SubmitError(f"submission failed: {str(exc).strip()[:300]}") from None
    job_id = str(job.job_id)
    log = JobRoot(plan.paths.root).submitit_log(job_id)
    return JobHandle(job_id, job_dir_for(plan, job_id, cluster_name()), "slurm", log)


def start_local(plan: LaunchPlan) -> JobHandle:
    """Run a single-node plan on this machine, detached, without SLURM."""
    if plan.layout.nodes != 1:
        raise InputError(
            f"--executor: local runs one node; this plan needs {plan.layout.nodes}",
            fix="use --executor slurm, or --nodes 1",
        )
    _prepare(plan)
    job_id = f"local-{os.getpid()}-{int(jobdir.now())}"
    job_dir = job_dir_for(plan, job_id)
    safe.new_private_dir(job_dir, "job directory")
    plan_file = JobDir(job_dir).plan
    safe.create_private_file(plan_file, plan.model_dump_json(indent=2))
    argv = [
        plan.python,
        "-m",
        "launchers",
        "node",
        "run",
        "--plan",
        plan_file,
        "--rank",
        "0",
        "--job-id",
        job_id,
    ]
    log = JobDir(job_dir).local_output
    # Detached (it outlives this command), in its own process group: stopped as a group.
    child = _proc.start_detached("local-job", argv, env=dict(os.environ), log_path=log)
    # Who to watch: the runtime may die before it writes anything of its own.
    record = jobfiles.LocalProcess(
        pid=child.pid,
        pgid=child.pid,  # a new session: the group is named by its leader
        created=_proc.identity(child.pid) or 0.0,
        time=jobdir.now(),
    )
    jobfiles.write(JobDir(job_dir).local, record)
    return JobHandle(job_id, job_dir, "local", log)


def seal_secrets(plan: LaunchPlan) -> LaunchPlan:
    """``plan`` with its secret variables' values written to a new 0600 file under the job
    root (``jobdir.secretfile``) and the file named in ``secret_env_file``; as it is when
    it has no secret, or names its file already."""
    if not plan.secret_env or plan.secret_env_file:
        return plan
    values = plan.secret_values()
    missing = [name for name in plan.secret_env if name not in values]
    if missing:
        raise InputError(
            f"plan: no value for the secret variables {', '.join(missing)} (a plan read "
            "from a file carries only their names)",
            fix="plan the job again from its registry and flags",
        )
    path = secretfile.new_path(plan.paths.root, plan.job_name)
    secretfile.write(path, values)
    return plan.model_copy(update={"secret_env_file": path})


def submit(plan: LaunchPlan, *, executor: str, via: str, environ: Mapping[str, str]) -> JobHandle:
    """Submit ``plan``: a SLURM job through submitit or ``sbatch``, or a local process.
    Secret variables go to their 0600 file first (the job may start at once); a job that
    is not taken leaves no file behind."""
    sealed = seal_secrets(plan)
    try:
        if executor == "local":
            return start_local(sealed)
        if via == "sbatch":
            from launchers.render.text import render_sbatch

            return submit_sbatch(sealed, render_sbatch(sealed), environ)
        return submit_submitit(sealed)
    except Exception:
        if sealed.secret_env_file and sealed.secret_env_file != plan.secret_env_file:
            secretfile.remove(sealed.secret_env_file)
        raise
