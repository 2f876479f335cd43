"""The SLURM seam: submission (submitit, or ``sbatch --parsable``), job state, cancel.

SLURM specifics live in tables; ``parse_*`` are pure. Job state never depends on
``sacct`` alone: ``squeue`` answers for live jobs, ``scontrol show job`` for recently
ended ones, ``sacct`` last.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from launchers import _proc, jobdir
from launchers.errors import InputError, SubmitError
from launchers.jobdir import jobfiles, jobroot, safe, secretfile
from launchers.plan.launch import LaunchPlan, job_dir_for
from launchers.render.text import job_dir_lines
from launchers.spec import slurmtime

# SLURM job state -> what vllm-hpc reports about the allocation.
SLURM_STATES: dict[str, str] = {
    "PENDING": "PENDING",
    "CONFIGURING": "PENDING",
    "REQUEUED": "PENDING",
    "REQUEUE_FED": "PENDING",
    "REQUEUE_HOLD": "PENDING",
    "RESV_DEL_HOLD": "PENDING",
    "SUSPENDED": "PENDING",
    "RUNNING": "RUNNING",
    "COMPLETING": "RUNNING",
    "STAGE_OUT": "RUNNING",
    "SIGNALING": "RUNNING",
    "COMPLETED": "ENDED",
    "CANCELLED": "CANCELLED",
    "FAILED": "FAILED",
    "TIMEOUT": "TIMEOUT",
    "NODE_FAIL": "FAILED",
    "BOOT_FAIL": "FAILED",
    "OUT_OF_MEMORY": "FAILED",
    "DEADLINE": "TIMEOUT",
    "PREEMPTED": "PREEMPTED",
    "REVOKED": "CANCELLED",
    "SPECIAL_EXIT": "FAILED",
}
ENDED = {"ENDED", "CANCELLED", "FAILED", "TIMEOUT"}


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


def parse_cluster_name(config_text: str) -> str | None:
    """``ClusterName = x`` from ``scontrol show config``; None when it names none."""
    for line in config_text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ClusterName" and jobroot.CLUSTER_NAME.fullmatch(value.strip()):
            return value.strip()
    return None


def cluster_name(environ: Mapping[str, str] | None = None) -> str:
    """The cluster jobs from here run on (it keys their directories): the environment's
    ``SLURM_CLUSTER_NAME``, else ``scontrol show config``'s ClusterName (one call),
    else ``slurm``, as on a node whose environment names none."""
    env = os.environ if environ is None else environ
    if env.get("SLURM_CLUSTER_NAME"):
        return jobroot.cluster_name(env)
    if shutil.which("scontrol", path=env.get("PATH", os.defpath)):
        done = _proc.run(["scontrol", "show", "config"], timeout=30)
        name = parse_cluster_name(done.stdout) if done.returncode == 0 else None
        if name:
            return name
    return jobroot.DEFAULT_CLUSTER


def parse_scontrol_record(text: str) -> dict[str, str]:
    """One ``scontrol show job -o`` line -> its ``Key=Value`` fields."""
    fields: dict[str, str] = {}
    for token in text.strip().split():
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    return fields


def parse_state(raw: str) -> str | None:
    """``CANCELLED by 0`` / ``RUNNING`` -> our state (None when unknown or empty)."""
    word = raw.strip().split(" ")[0].rstrip("+") if raw.strip() else ""
    return SLURM_STATES.get(word)


def slurm_minutes(text: str) -> int:
    """SLURM time (``MM``, ``HH:MM:SS``, ``D-HH:MM``...) -> whole minutes (rounded up)."""
    try:
        return slurmtime.minutes(text)
    except ValueError:
        raise InputError(f"--time: {text!r} is not a SLURM time") from None


def _ask(argv: list[str], timeout: float) -> str:
    """What a SLURM query printed ('' when it failed or the tool is not installed:
    ``sacct`` is missing where a site keeps no accounting)."""
    if shutil.which(argv[0]) is None:
        return ""
    done = _proc.run(argv, timeout=timeout)
    return done.stdout.strip() if done.returncode == 0 else ""


def _need_tool(tool: str, message: str, fix: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse, with ``message``, on a machine whose PATH has no SLURM ``tool``."""
    path = (os.environ if environ is None else environ).get("PATH", os.defpath)
    if shutil.which(tool, path=path) is None:
        raise SubmitError(message, fix=fix)


def _require(tool: str, job_id: str) -> None:
    _need_tool(
        tool,
        f"{tool}: not found here, so SLURM cannot be asked about job {job_id} "
        "(this is not a SLURM login node)",
        fix="run vllm-hpc on the login node of the cluster that ran the job",
    )


def job_state(job_id: str) -> tuple[str | None, str]:
    """(our state, SLURM's raw state); (None, '') when SLURM does not know the job."""
    _require("squeue", job_id)
    queries: list[tuple[list[str], Callable[[str], str]]] = [
        (["squeue", "-h", "-j", job_id, "-o", "%T"], _first_line),
        (["scontrol", "show", "job", "-o", job_id],
         lambda out: parse_scontrol_record(out).get("JobState", "")),
        (["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], _first_line),
    ]  # fmt: skip
    for argv, read in queries:  # live jobs, recently ended ones, then accounting
        out = _ask(argv, timeout=20)
        if out:
            raw = read(out)
            return parse_state(raw), raw
    return None, ""


def _first_line(out: str) -> str:
    return out.splitlines()[0]


def scancel(job_id: str) -> None:
    _require("scancel", job_id)
    done = _proc.run(["scancel", job_id], timeout=30)
    if done.returncode != 0:
        raise SubmitError(f"scancel {job_id} failed: {done.stderr.strip()[:200]}")


def signal_batch(job_id: str, sig: str = "USR1") -> None:
    """Send ``sig`` to a job's batch shell only (``scancel --batch``): what SLURM's
    ``--signal=B:USR1@...`` time-limit warning does, so the job drains itself."""
    _require("scancel", job_id)
    done = _proc.run(["scancel", "--batch", f"--signal={sig}", job_id], timeout=30)
    if done.returncode != 0:
        raise SubmitError(f"scancel --batch --signal={sig} {job_id} failed: {done.stderr[:200]}")


def parse_end_time(text: str) -> float | None:
    """``squeue -o %e`` (``2026-12-02T15:30:00``, local time; ``N/A``/``Unknown`` while
    pending) -> epoch seconds, or None."""
    from datetime import datetime

    word = text.strip()
    try:
        return datetime.fromisoformat(word).timestamp()
    except ValueError:
        return None


def end_time(job_id: str) -> float | None:
    """When SLURM will end a running job (its time limit), or None if not known yet."""
    _require("squeue", job_id)
    out = _ask(["squeue", "-h", "-j", job_id, "-o", "%e"], timeout=20)
    return parse_end_time(out.splitlines()[0]) if out else None


def sbatch_text(script: str, environ: Mapping[str, str]) -> str:
    """``sbatch --parsable`` a script given as text; the job id."""
    require_slurm_client("sbatch", environ)
    done = _proc.run(["sbatch", "--parsable"], env=environ, input_text=script, timeout=60)
    if done.returncode != 0:
        raise SubmitError(f"sbatch refused the job: {done.stderr.strip()[:300]}")
    return parse_sbatch_parsable(done.stdout)


def _prepare(plan: LaunchPlan) -> None:
    safe.private_dir(plan.paths.root, "job root")
    if (
        plan.api_key_file
        and not plan.generate_api_key
        and not os.access(plan.api_key_file, os.R_OK)
    ):
        raise InputError(f"--api-key-file: cannot read {plan.api_key_file}")


def require_slurm_client(via: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse to submit from a machine without SLURM's client commands (``sbatch``
    submits; the job's own ``srun`` runs on the nodes) before anything is written."""
    _need_tool(
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
    log = plan.paths.batch_log.replace("%j", job_id)
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

    folder = f"{plan.paths.root}/submitit/%j"
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
        from launchers.render.nodes import pyxis_options  # the dry run's, the script's

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
    log = f"{plan.paths.root}/submitit/{job_id}/{job_id}_0_log.err"
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
    plan_file = f"{job_dir}/{jobroot.PLAN_FILE}"
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
    log = f"{job_dir}/local.out"
    # Detached (it outlives this command), in its own process group: stopped as a group.
    child = _proc.start_detached("local-job", argv, env=dict(os.environ), log_path=log)
    # Who to watch: the runtime may die before it writes anything of its own.
    record = jobfiles.LocalProcess(
        pid=child.pid,
        pgid=child.pid,  # a new session: the group is named by its leader
        created=_proc.identity(child.pid) or 0.0,
        time=jobdir.now(),
    )
    jobfiles.write(jobfiles.local_file(job_dir), record)
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


def srun_in_job(job_id: str, *, nodes: int = 1, nodelist: str | None = None) -> list[str]:
    """``srun`` argv prefix for one task per node inside a running job's allocation
    (``--overlap``: beside the job's own step, on its nodes, without new GPU time)."""
    argv = ["srun", f"--jobid={job_id}", "--overlap", f"--nodes={nodes}", "--ntasks-per-node=1"]
    if nodelist:
        argv.append(f"--nodelist={nodelist}")
    return [*argv, "--quiet"]
