"""``plan(config, cluster) -> LaunchPlan``: everything a launch does, as data.

Pure: no subprocess, no network, no clock, no secrets (only the key file's path).
Secret-looking variables of ``env`` (``spec.secretenv``) are kept apart: the plan's data
has only their names (``secret_env``); their values stay in memory with the plan (never
in ``plan.json``, a dump or a repr) until the submitting side writes them to a 0600 file
(``jobdir.secretfile``) and names it in ``secret_env_file``.
Values only a node knows are placeholders (see ``commands.PLACEHOLDERS``), filled in
on the node by ``fill_placeholders``.
"""

# Annotations are evaluated here, as the module runs (no `from __future__ import
# annotations`): pydantic would otherwise compile each field's annotation from its text
# when the class is made (the dry run's models: about 6 of its 20 ms of class making).
# Names defined further down are quoted.
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, PrivateAttr, computed_field, model_validator

from launchers import __version__
from launchers.defaults import (
    DEFAULT_API_PORT,
    DEFAULT_PREFLIGHT_PORT,
    HEALTH_PATH,
    PREFLIGHT_LARGE_MIB,
    PREFLIGHT_PAIR_SECONDS,
    PREFLIGHT_SECONDS,
)
from launchers.errors import LayoutError
from launchers.jobdir import jobroot
from launchers.jobdir.paths import RANK_FIELD, JobDir, JobRoot
from launchers.plan.commands import (
    DP_START_RANK,
    JOB_DIR,
    JOB_ID,
    JOB_KEY,
    NODE_RANK,
    PLACEHOLDERS,
    RayStart,
    ServeStart,
    all2all_env,
    removed_env_warnings,
    serve_start,
)
from launchers.plan.netspec import nccl_profile_env
from launchers.spec import secretenv
from launchers.spec.config import (
    ClusterSpec,
    CompileCache,
    ContainerSpec,
    Frozen,
    ParallelLayout,
    ServeConfig,
    SlurmOptions,
    StagedModel,
)

PLAN_FORMAT = 1


class RolePlan(Frozen):
    """What one kind of node runs. ``ranks`` are SLURM node ranks (0 = leader).

    ``ray`` and ``serve`` are typed; the runtime reads them and builds the argv from
    them. ``ray_argv``/``serve_argv`` are that argv, written into plan.json for readers
    (placeholders unfilled) and ignored when a plan is read back."""

    role: Literal["leader", "worker", "headless"]
    ranks: str = Field(description="Node ranks in this role, e.g. '0' or '1-3'")
    ray: RayStart | None = None
    serve: ServeStart | None = None
    env: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _drop_derived(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in _DERIVED_ARGV}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ray_argv(self) -> tuple[str, ...] | None:
        return None if self.ray is None else tuple(self.ray.argv())

    @computed_field  # type: ignore[prop-decorator]
    @property
    def serve_argv(self) -> tuple[str, ...] | None:
        return None if self.serve is None else tuple(self.serve.argv())


_DERIVED_ARGV = ("ray_argv", "serve_argv")


class JobPaths(Frozen):
    """Where a job keeps its state on shared storage, as the plan records it: the
    plan-time form of ``jobdir.paths.JobDir`` (its names, with placeholders). ``job_dir``
    is ``<root>/@JOB_KEY@`` (``<cluster>-<job id>``, see ``jobdir.jobroot``)."""

    root: str
    job_dir: str
    plan: str
    leader: str
    endpoint: str
    api_key: str
    ray_token: str
    node_log: str = Field(description="Per-node log, '{rank}' is the node rank")
    batch_log: str

    @classmethod
    def at(cls, job_dir: str) -> "JobPaths":
        """The paths of a job directory a user named (the wrapper's ``--job-dir``)."""
        job_dir = job_dir.rstrip("/") or "/"
        return job_paths(os.path.dirname(job_dir) or "/", job_dir=job_dir)

    def for_job(self, job_id: str, cluster: str = jobroot.DEFAULT_CLUSTER) -> "JobPaths":
        """These paths for one job (``@JOB_KEY@`` and ``@JOB_ID@`` filled in); a job id
        or cluster name that is not one is refused (it never becomes a path)."""
        key = jobroot.job_key(job_id, cluster)
        return self.model_copy(
            update={
                k: v.replace(JOB_KEY, key).replace(JOB_ID, job_id)
                for k, v in self.model_dump().items()
            }
        )

    @property
    def dir(self) -> JobDir:
        """The job directory's files (placeholders in ``job_dir`` stay as they are)."""
        return JobDir(self.job_dir)

    def node_log_of(self, rank: int) -> str:
        """The plan's ``node_log`` for rank ``rank``."""
        return self.node_log.replace(RANK_FIELD, str(rank))


class Readiness(Frozen):
    """When the leader calls the job READY (the API's port is the leader's serve.port)."""

    health_path: str = HEALTH_PATH
    models_path: str = "/v1/models"
    nodes_timeout: float
    ready_timeout: float
    expected_nodes: int
    expected_gpus: int


class Preflight(Frozen):
    """The collective check every node of a multi-node job runs before vLLM loads
    (``runtime.preflight``): where the nodes meet, and its deadlines."""

    port: int = Field(DEFAULT_PREFLIGHT_PORT, description="The rendezvous port on the leader")
    port_fixed: bool = Field(
        False,
        description="Never move it: the user's, on which nodes that plan on their own agree "
        "(followers given the leader's address meet there, not through its file)",
    )
    seconds: float = Field(PREFLIGHT_SECONDS, description="The collectives' deadline")
    pair_seconds: float = Field(PREFLIGHT_PAIR_SECONDS, description="One pair's TCP check")
    large_mib: int = Field(PREFLIGHT_LARGE_MIB, description="The large all-reduce, in MiB")


class LaunchPlan(Frozen):
    format: int = PLAN_FORMAT
    generator: str = f"vllm-hpc {__version__}"
    name: str
    model: str
    served_model_name: str
    runtime: Literal["single", "ray", "native", "dp"]
    layout: ParallelLayout
    layout_reason: str
    warnings: tuple[str, ...] = ()
    job_name: str
    vllm_version: str
    python: str
    container: ContainerSpec | None = None
    container_binds: tuple[str, ...] = ()
    staged: StagedModel | None = Field(
        None,
        description="The staged copy ``model`` is (None: a local directory or a hub id); "
        "left out of the JSON when None",
        exclude_if=lambda value: value is None,
    )
    compile_cache: CompileCache | None = Field(
        None,
        description="vLLM's compile caches across jobs: every node makes the directory (0700) "
        "and exports its env; left out of the JSON when None (the user set VLLM_CACHE_ROOT)",
        exclude_if=lambda value: value is None,
    )
    api_key_file: str | None = Field(
        None, description="Where the API key is read from (the key itself is never here)"
    )
    generate_api_key: bool = Field(False, description="The leader writes a new key (0600)")
    ray_token_file: str | None = Field(None, description="Ray auth token file (0600)")
    env: dict[str, str] = Field(default_factory=dict, description="Exported on every node")
    secret_env: tuple[str, ...] = Field(
        (), description="Secret variables exported on every node: names only (values in the file)"
    )
    secret_env_file: str | None = Field(
        None, description="The 0600 file with the secret values, written at submission"
    )
    roles: tuple[RolePlan, ...]
    node_argv: tuple[str, ...] = Field(description="What srun runs on every node")
    sbatch: tuple[tuple[str, str], ...]
    setup: tuple[str, ...] = ()
    paths: JobPaths
    ready: Readiness
    preflight: Preflight | None = Field(
        None, description="The nodes' collective check before vLLM loads (None: one node, or off)"
    )
    _secrets: dict[str, str] = PrivateAttr(default_factory=dict)

    def secret_values(self) -> dict[str, str]:
        """The values of ``secret_env`` this plan was made with: in memory only, so empty
        for a plan read from a file (the nodes read ``secret_env_file``)."""
        return dict(self._secrets)

    def with_secret_values(self, values: Mapping[str, str]) -> "LaunchPlan":
        """This plan with ``values`` as its secret variables (names in ``secret_env``)."""
        out = self.model_copy(update={"secret_env": tuple(sorted(values))})
        out._secrets = dict(sorted(values.items()))
        return out

    @property
    def leader(self) -> RolePlan:
        return self.roles[0]

    @property
    def api_port(self) -> int:
        """The API's port on the leader (as planned; the leader may move an unfixed one)."""
        serve = self.leader.serve
        return serve.port if serve is not None and serve.port is not None else DEFAULT_API_PORT

    @property
    def ray_port(self) -> int | None:
        """The Ray head's port, for plans that start Ray."""
        return None if self.leader.ray is None else self.leader.ray.port

    def leader_ports(self) -> dict[str, int]:
        """The leader's ports the other nodes (and users) must reach, by name."""
        ports = {"api": self.api_port}
        if self.leader.ray is not None:
            ports["ray"] = self.leader.ray.port
        rendezvous = self.leader.serve.rendezvous if self.leader.serve is not None else None
        if rendezvous is not None:
            ports[rendezvous.name] = rendezvous.port
        # Not the pre-flight's: it is open only for the seconds of the check, so a doctor
        # inside a running job would find it closed.
        return ports

    def node_values(self, rank: int) -> dict[str, str]:
        """The placeholder values the plan decides for node ``rank``: its rank and, for
        data parallelism, its first DP rank (the leader holds ranks 0..dp_local-1). The
        dry run shows every node with them filled in; the node fills them the same way."""
        return {NODE_RANK: str(rank), DP_START_RANK: str(rank * self.layout.dp_local)}

    def role_for_rank(self, rank: int) -> RolePlan:
        for role in self.roles:
            if _rank_in(rank, role.ranks):
                return role
        raise LayoutError(f"node rank {rank} has no role in a {self.layout.nodes}-node plan")


def _rank_in(rank: int, ranks: str) -> bool:
    first, _, last = ranks.partition("-")
    return int(first) <= rank <= int(last or first)


def _ranks(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def job_paths(job_root: str, job_dir: str | None = None) -> JobPaths:
    """The job's paths under ``job_root`` (``job_dir``: a directory the user named)."""
    files = JobDir(job_dir) if job_dir else JobRoot(job_root).job(JOB_KEY)
    return JobPaths(
        root=job_root,
        job_dir=files.root,
        plan=files.plan,
        leader=files.leader,
        endpoint=files.endpoint,
        api_key=files.api_key,
        ray_token=files.ray_token,
        node_log=files.node_log(RANK_FIELD),
        batch_log=JobRoot(job_root).batch_log,
    )


def sbatch_directives(
    config: ServeConfig, layout: ParallelLayout, paths: JobPaths
) -> tuple[tuple[str, str], ...]:
    slurm: SlurmOptions = config.slurm
    out: list[tuple[str, str]] = [
        ("job-name", config.job_name),
        ("nodes", str(layout.nodes)),
        ("ntasks-per-node", "1"),
    ]
    if slurm.gres_style == "gpus-per-node":
        out.append(("gpus-per-node", str(layout.gpus_per_node)))
    elif slurm.gres_style == "gres":
        out.append(("gres", f"gpu:{layout.gpus_per_node}"))
    for key, value in (
        ("cpus-per-task", slurm.cpus_per_task),
        ("mem", slurm.mem),
        ("partition", slurm.partition),
        ("account", slurm.account),
        ("qos", slurm.qos),
        ("time", slurm.time),
    ):
        if value is not None:
            out.append((key, str(value)))
    if slurm.signal_seconds:
        # To the batch shell only (B:): it execs srun, which passes USR1 to its tasks, the
        # node runtimes, and they drain. Without B: SLURM signals every process of the
        # steps, vLLM and Ray included, which die of it.
        out.append(("signal", f"B:USR1@{slurm.signal_seconds}"))
    out.append(("requeue" if slurm.requeue else "no-requeue", ""))
    out.append(("output", paths.batch_log))
    out.append(("open-mode", "append"))
    return tuple(out)


def _roles(config: ServeConfig) -> tuple[RolePlan, ...]:
    layout = config.layout
    last = layout.nodes - 1
    gpn = layout.gpus_per_node
    if config.runtime == "single":
        return (RolePlan(role="leader", ranks="0", serve=serve_start(config)),)
    if config.runtime == "ray":
        ray = RayStart(
            head=True, port=config.ray_port, port_fixed=config.ray_port_fixed, num_gpus=gpn
        )
        leader = RolePlan(
            role="leader",
            ranks="0",
            ray=ray,
            serve=serve_start(config),
            env={"RAY_ADDRESS": ray.address},
        )
        if last == 0:
            return (leader,)
        # port_fixed: the head's port never moves, so the worker's is written out too
        worker_ray = RayStart(
            head=False, port=config.ray_port, port_fixed=config.ray_port_fixed, num_gpus=gpn
        )
        worker = RolePlan(role="worker", ranks=_ranks(1, last), ray=worker_ray)
        return (leader, worker)
    # native and dp: every node runs vllm serve; the leader serves the API.
    leader = RolePlan(role="leader", ranks="0", serve=serve_start(config))
    if last == 0:
        return (leader,)
    headless = RolePlan(
        role="headless", ranks=_ranks(1, last), serve=serve_start(config, headless=True)
    )
    return (leader, headless)


def plan(config: ServeConfig, cluster: ClusterSpec) -> LaunchPlan:
    """The whole launch, as data. Raises LayoutError when the cluster cannot hold it."""
    layout = config.layout
    if layout.nodes > cluster.nodes or layout.gpus_per_node > cluster.gpus_per_node:
        raise LayoutError(
            f"layout: {layout.describe()} does not fit the allocation of {cluster.nodes} "
            f"node(s) x {cluster.gpus_per_node} GPU(s)",
            fix="request more nodes or GPUs per node",
        )
    paths = job_paths(config.job_root)
    env: dict[str, str] = {}
    env.update(nccl_profile_env(config.nccl_profile))
    env.update(all2all_env(config))
    env.update(config.spec.env)
    env.update(config.env)
    if config.compile_cache is not None:  # its env leaves out what the user set
        env.update(config.compile_cache.env)
    offline: list[str] = []
    if config.staged is not None:
        from launchers.plan import staging  # a staged copy's only

        env, offline = staging.offline_env(env, config.staged.path)
    plain, secret = secretenv.split(env)
    node_argv = (config.python, "-m", "launchers", "node", "run", "--plan", paths.plan)
    return LaunchPlan(
        name=config.name,
        model=config.spec.model,
        served_model_name=config.served_model_name,
        runtime=config.runtime,
        layout=layout,
        layout_reason=config.layout_reason,
        warnings=(
            config.warnings + removed_env_warnings(env, config.vllm_version) + tuple(offline)
        ),
        job_name=config.job_name,
        vllm_version=config.vllm_version,
        python=config.python,
        container=config.container,
        container_binds=config.container_binds,
        staged=config.staged,
        compile_cache=config.compile_cache,
        api_key_file=(paths.api_key if config.api_key == "generate" else config.api_key_file),
        generate_api_key=config.api_key == "generate",
        ray_token_file=paths.ray_token if config.ray_auth and config.runtime == "ray" else None,
        env=plain,
        roles=_roles(config),
        node_argv=node_argv,
        sbatch=sbatch_directives(config, layout, paths),
        setup=config.slurm.setup,
        paths=paths,
        ready=Readiness(
            nodes_timeout=config.nodes_timeout,
            ready_timeout=config.ready_timeout,
            expected_nodes=layout.nodes,
            expected_gpus=layout.total_gpus,
        ),
        preflight=Preflight(port=config.preflight_port, port_fixed=config.preflight_port_fixed)
        if config.preflight and layout.nodes > 1
        else None,
    ).with_secret_values(secret)


def fill_placeholders(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Replace ``@NAME@`` placeholders with node-side values; unknown ones are an error."""
    out = []
    for item in argv:
        text = item
        for key in PLACEHOLDERS:
            if key in text:
                if key not in values:
                    raise KeyError(f"no value for placeholder {key} in {item!r}")
                text = text.replace(key, values[key])
        out.append(text)
    return out


def fill_known(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Replace the placeholders ``values`` has; the others stay (the dry run's argv)."""
    return fill_placeholders(argv, {**{key: key for key in PLACEHOLDERS}, **values})


def unfilled(argv: Sequence[str]) -> list[str]:
    """The placeholders left in ``argv``."""
    return [key for key in PLACEHOLDERS if any(key in item for item in argv)]


def job_dir_for(plan_: LaunchPlan, job_id: str, cluster: str = jobroot.DEFAULT_CLUSTER) -> str:
    return plan_.paths.for_job(job_id, cluster).job_dir


__all__ = [
    "JOB_DIR",
    "JobPaths",
    "LaunchPlan",
    "Readiness",
    "RolePlan",
    "fill_known",
    "fill_placeholders",
    "job_dir_for",
    "job_paths",
    "plan",
    "unfilled",
]
