"""Where things are: the job root, a job directory and a service directory, the one
place a file name is spelled. Every writer and reader (the planner, the runtime on each
node, submit, observe, the services, the bench) builds its paths here. Pure: no I/O.

    <job root>/                     JobRoot
        vllm-hpc-<job id>.out       a SLURM job's batch output (sbatch --output, %j)
        secrets/<name>.env.json     the sealed secret environments (jobdir.secretfile)
        submitit/<job id>/          a job submitted through submitit (its files)
        .ray_token                  the wrapper door's shared Ray token
        services/<NAME>/            ServiceDir
        compile-cache/              CompileCacheDir, unless the site file's compile_cache
                                    names another root
        stage/<job id>.out, .err    a stage job's output (vllm-hpc stage --via sbatch)
        .doctor-<time>/             DoctorDir (also in a job directory)
        <cluster>-<job id>/         JobDir (the key: jobdir.jobroot.job_key)

    <job dir>/                      JobDir (the records' models: jobdir.jobfiles)
        plan.json                   LaunchPlan
        leader.json                 Leader
        endpoint.json               Endpoint
        stop.json                   StopReason
        local.json, local.out       a local job's process record and its output
        api_key, ray_token          the job's secrets (0600)
        nodes/<rank>.json           NodeRecord
        failed/<rank>.json          Failure
        <name>-<rank>.log           a rank's logs: node (the runtime), ray, ray-watch, vllm
        bench/                      `vllm-hpc bench` results

    <service dir>/                  ServiceDir (the records' models: service.definition)
        service.json, state.json, front.json, key
        keys.json, usage.json       the users' keys (hashes) and their usage
        front-<job id>.log, router.log

    <compile cache>/                CompileCacheDir (jobdir.compilecache)
        <vllm version>/<model key>/     VLLM_CACHE_ROOT of a job of that model
            torchinductor/              TORCHINDUCTOR_CACHE_DIR

    <model store>/                  ModelStore (vllm-hpc stage; jobdir.modelstore)
        <org>--<name>/refs/<revision>   the commit a revision was staged at (written last)
        <org>--<name>/<commit>/         the staged files, vllm-hpc-staged.json beside them
        <org>--<name>/.hf-cache/        huggingface_hub's own bookkeeping

A path is ``<dir>/<name>`` as text: the directory as it was given (the plan's
``@JOB_KEY@`` placeholder included), never normalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

RANK_FIELD = "{rank}"  # the plan-time form of a rank in a path (JobPaths.node_log)
SLURM_JOB_ID_FIELD = "%j"  # sbatch's own placeholder for the job id (--output)


@dataclass(frozen=True)
class JobDir:
    """One job's directory (``root``: its path) and the name of each of its files."""

    root: str

    LOGS: ClassVar[str] = "*.log"  # every rank's logs: Path(root).glob(LOGS)
    NODE_RECORDS: ClassVar[str] = "nodes/*.json"
    FAILURES: ClassVar[str] = "failed/*.json"

    def _file(self, name: str) -> str:
        return f"{self.root}/{name}"

    @property
    def plan(self) -> str:
        return self._file("plan.json")

    @property
    def leader(self) -> str:
        return self._file("leader.json")

    @property
    def endpoint(self) -> str:
        return self._file("endpoint.json")

    @property
    def stop(self) -> str:
        return self._file("stop.json")

    @property
    def local(self) -> str:
        """A local job's process record (``submit --executor local``)."""
        return self._file("local.json")

    @property
    def local_output(self) -> str:
        """A local job's own output (its runtime's stdout and stderr)."""
        return self._file("local.out")

    @property
    def api_key(self) -> str:
        return self._file("api_key")

    @property
    def ray_token(self) -> str:
        return self._file("ray_token")

    @property
    def bench(self) -> str:
        """The directory of ``vllm-hpc bench`` results."""
        return self._file("bench")

    def node(self, rank: int) -> str:
        """``nodes/<rank>.json``: who rank ``rank`` is and what it runs."""
        return self._file(f"nodes/{rank}.json")

    def failure(self, rank: int) -> str:
        """``failed/<rank>.json``: why rank ``rank`` (> 0) failed, for the leader."""
        return self._file(f"failed/{rank}.json")

    def log(self, name: str, rank: int | str) -> str:
        """``<name>-<rank>.log``: ``node`` (the runtime), ``ray``, ``ray-watch``, ``vllm``.
        ``rank`` may be ``RANK_FIELD`` (the plan-time form)."""
        return self._file(log_name(name, rank))

    def node_log(self, rank: int | str) -> str:
        """The runtime's own log of rank ``rank``: read it first."""
        return self.log("node", rank)


def log_name(name: str, rank: int | str) -> str:
    """A log's file name without its directory (``vllm-0.log``)."""
    return f"{name}-{rank}.log"


def log_rank(file_name: str) -> str:
    """The rank part of a log's file name (``ray-watch-3.log`` -> ``3``; "" for a log
    named otherwise)."""
    stem = file_name.removesuffix(".log")
    return stem.rsplit("-", 1)[-1] if "-" in stem else ""


@dataclass(frozen=True)
class ServiceDir:
    """One service's directory (``<job root>/services/<NAME>``) and its files."""

    root: str

    def _file(self, name: str) -> str:
        return f"{self.root}/{name}"

    @property
    def spec(self) -> str:
        """``service.json``: the user's intent (ServiceSpec)."""
        return self._file("service.json")

    @property
    def state(self) -> str:
        """``state.json``: what the controller saw and did (ServiceState)."""
        return self._file("state.json")

    @property
    def front(self) -> str:
        """``front.json``: the front's address, pid and heartbeat."""
        return self._file("front.json")

    @property
    def key(self) -> str:
        """The service's internal API key (0600): the front and every replica use it."""
        return self._file("key")

    @property
    def keys(self) -> str:
        """``keys.json`` (0600): the users' keys, each a label and a hash (service.keys)."""
        return self._file("keys.json")

    @property
    def usage(self) -> str:
        """``usage.json``: requests and tokens per key label (the front writes it)."""
        return self._file("usage.json")

    def front_log(self, job_id: str) -> str:
        """The log of front job ``job_id`` (``SLURM_JOB_ID_FIELD`` in its batch script)."""
        return self._file(f"front-{job_id}.log")

    @property
    def front_logs(self) -> str:
        """A glob of every front's log (a hint to the reader: which log to read)."""
        return self.front_log("*")

    @property
    def router_log(self) -> str:
        return self._file("router.log")


@dataclass(frozen=True)
class DoctorDir:
    """Where ``vllm-hpc doctor``'s nodes meet: ``.doctor-<time>`` in a job directory or
    the job root. The plan they check, the leader's report of its address, and what the
    step printed to stderr (the nodes' tracebacks)."""

    root: str

    @classmethod
    def under(cls, parent: str, stamp: str) -> DoctorDir:
        return cls(f"{parent}/.doctor-{stamp}")

    @property
    def stderr(self) -> str:
        return f"{self.root}/stderr.txt"

    @property
    def plan(self) -> str:
        return f"{self.root}/plan.json"

    @property
    def leader(self) -> str:
        return f"{self.root}/rank0.json"


@dataclass(frozen=True)
class JobRoot:
    """The per-user job root (``jobdir.jobroot.job_root``) and what lives in it."""

    root: str

    def job(self, key: str) -> JobDir:
        """The directory of the job named ``key`` (``jobroot.job_key``: checked there)."""
        return JobDir(f"{self.root}/{key}")

    @property
    def batch_log(self) -> str:
        """A SLURM job's batch output, ``%j`` for sbatch to fill in."""
        return f"{self.root}/vllm-hpc-{SLURM_JOB_ID_FIELD}.out"

    def submitit(self, job_id: str) -> str:
        """submitit's folder of job ``job_id`` (``SLURM_JOB_ID_FIELD``: its own ``%j``)."""
        return f"{self.root}/submitit/{job_id}"

    def submitit_log(self, job_id: str) -> str:
        """The first task's stderr of a submitit job (submitit names it)."""
        return f"{self.submitit(job_id)}/{job_id}_0_log.err"

    @property
    def secrets(self) -> str:
        return f"{self.root}/secrets"

    def secret_env(self, name: str) -> str:
        """A job's sealed secret environment (``name``: unguessable, made by the caller)."""
        return f"{self.secrets}/{name}.env.json"

    @property
    def ray_token(self) -> str:
        """The wrapper door's Ray token, shared by the nodes that name this root."""
        return f"{self.root}/.ray_token"

    @property
    def services(self) -> str:
        return f"{self.root.rstrip('/')}/services"

    def service(self, name: str) -> ServiceDir:
        """The directory of service ``name`` (checked by ``service.definition``)."""
        return ServiceDir(f"{self.services}/{name}")

    @property
    def compile_cache(self) -> CompileCacheDir:
        """The default compile cache, when the site file names none."""
        return CompileCacheDir(f"{self.root.rstrip('/')}/compile-cache")

    @property
    def stage_jobs(self) -> str:
        """Where the output of ``vllm-hpc stage --via sbatch`` jobs goes."""
        return f"{self.root.rstrip('/')}/stage"

    def stage_output(self, job_id: str) -> str:
        """A stage job's stdout (what ``stage`` printed); ``SLURM_JOB_ID_FIELD`` for sbatch."""
        return f"{self.stage_jobs}/{job_id}.out"

    def stage_errors(self, job_id: str) -> str:
        """A stage job's stderr (progress bars, the error line)."""
        return f"{self.stage_jobs}/{job_id}.err"


@dataclass(frozen=True)
class CompileCacheDir:
    """Where vLLM's compile caches live across jobs (``jobdir.compilecache``): one
    directory per vLLM version and model, so the second job of a model reuses the
    first one's compile and an upgrade starts a new tree."""

    root: str

    UNKNOWN_VERSION: ClassVar[str] = "unknown"

    def version(self, version: str) -> str:
        return f"{self.root.rstrip('/')}/{version}"

    def model(self, version: str, model_key: str) -> str:
        """``VLLM_CACHE_ROOT`` of a job of the model ``model_key`` on vLLM ``version``."""
        return f"{self.version(version)}/{model_key}"

    @staticmethod
    def inductor(model_dir: str) -> str:
        """``TORCHINDUCTOR_CACHE_DIR`` beside vLLM's own cache in ``model_dir``."""
        return f"{model_dir}/torchinductor"


@dataclass(frozen=True)
class ModelStore:
    """Where ``vllm-hpc stage`` puts models (``jobdir.modelstore.store_root``): one
    directory per commit, plain files, so a job binds or reads one directory."""

    root: str

    MANIFEST: ClassVar[str] = "vllm-hpc-staged.json"

    def repo(self, repo_id: str) -> str:
        """``<org>--<name>`` (the hub's own folder name; ``repo_id`` checked already)."""
        return f"{self.root.rstrip('/')}/{repo_id.replace('/', '--')}"

    def copy(self, repo_id: str, commit: str) -> str:
        """The directory of the files of ``repo_id`` at ``commit``."""
        return f"{self.repo(repo_id)}/{commit}"

    def manifest(self, repo_id: str, commit: str) -> str:
        return f"{self.copy(repo_id, commit)}/{self.MANIFEST}"

    def ref(self, repo_id: str, revision: str) -> str:
        """The file holding the commit ``revision`` was staged at; ``/`` in a revision
        (``refs/pr/1``) is spelled ``%2F``, so every ref is one file."""
        return f"{self.repo(repo_id)}/refs/{revision.replace('%', '%25').replace('/', '%2F')}"

    def hub_cache(self, repo_id: str) -> str:
        """huggingface_hub's cache folder for this repository (its refs and locks)."""
        return f"{self.repo(repo_id)}/.hf-cache"


__all__ = [
    "RANK_FIELD",
    "SLURM_JOB_ID_FIELD",
    "CompileCacheDir",
    "DoctorDir",
    "JobDir",
    "JobRoot",
    "ModelStore",
    "ServiceDir",
    "log_name",
    "log_rank",
]
