"""What each node executes: the argv of its ``ray start`` and ``vllm serve``, built by one
function (``process_argv``) from the plan's typed starts, for the dry run and the node
runtime alike. The dry run gives it what the plan knows of a node (its rank, its first
data-parallel rank: ``LaunchPlan.node_values``); the node adds what only the running job
knows (addresses, the job id, the ports it chose), so the argv a node runs is the dry
run's with those placeholders filled (``job_values`` says with what, from the job
directory's records).

enroot/pyxis runs the node runtime itself in the image: its ``srun`` options are the
step's (``step_argv``), and the processes it starts are not wrapped.
Pure: nothing here starts a process or reads the machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from pydantic import Field

from launchers.jobdir import jobfiles
from launchers.plan.commands import (
    API_PORT,
    JOB_DIR,
    JOB_ID,
    JOB_KEY,
    LEADER_IP,
    NODE_IP,
    RAY_PORT,
    RayStart,
    ServeStart,
)
from launchers.plan.launch import LaunchPlan, fill_known, fill_placeholders
from launchers.render.containers import build_srun_container_options, in_image
from launchers.spec.config import ContainerSpec, Frozen

# The srun options of the one step that starts the node runtime on every node.
SRUN_STEP_OPTIONS = ("--ntasks-per-node=1", "--kill-on-bad-exit=1")


def process_argv(
    start: RayStart | ServeStart,
    values: Mapping[str, str],
    container: ContainerSpec | None,
    binds: Sequence[str],
) -> list[str]:
    """The argv a node runs for ``start``: its placeholders that ``values`` has filled in
    (the others stay), in the Apptainer/Singularity image when there is one."""
    return in_image(container, binds, fill_known(start.argv(), values))


class NodeCommands(Frozen):
    """One node's processes as the plan knows them (placeholders for what it cannot)."""

    rank: int
    role: str
    ray: tuple[str, ...] | None = None
    serve: tuple[str, ...] | None = None
    serve_env: dict[str, str] = Field(
        default_factory=dict, description="Added to vllm serve's environment"
    )


def node_commands(plan: LaunchPlan, rank: int) -> NodeCommands:
    """Node ``rank``'s processes, with the values the plan decides filled in."""
    role = plan.role_for_rank(rank)
    values = plan.node_values(rank)
    binds = plan.container_binds

    def argv(start: RayStart | ServeStart | None) -> tuple[str, ...] | None:
        return None if start is None else tuple(process_argv(start, values, plan.container, binds))

    return NodeCommands(
        rank=rank,
        role=role.role,
        ray=argv(role.ray),
        serve=argv(role.serve),
        serve_env={k: fill_known([v], values)[0] for k, v in sorted(role.env.items())},
    )


def filled(node: NodeCommands, values: Mapping[str, str]) -> NodeCommands:
    """``node``'s lines with the running job's ``values`` (``job_values``) filled in:
    what the node executed. A placeholder without a value is an error (KeyError)."""

    def argv(items: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if items is None else tuple(fill_placeholders(items, values))

    env = {k: fill_placeholders([v], values)[0] for k, v in node.serve_env.items()}
    return node.model_copy(
        update={"ray": argv(node.ray), "serve": argv(node.serve), "serve_env": env}
    )


def planned_nodes(plan: LaunchPlan) -> list[NodeCommands]:
    """Every node's processes, node 0 (the leader) first."""
    return [node_commands(plan, rank) for rank in range(plan.layout.nodes)]


def pyxis_options(plan: LaunchPlan) -> list[str]:
    """enroot/pyxis: the srun options that run the whole step (the node runtime) in the
    image; none for other plans."""
    if plan.container is None or plan.container.runtime != "enroot":
        return []
    return build_srun_container_options(
        plan.container, binds=plan.container_binds, workdir=plan.paths.root
    )


def step_argv(plan: LaunchPlan) -> list[str]:
    """The ``srun`` the batch script runs: the node runtime once on every node."""
    return [
        "srun",
        f"--nodes={plan.layout.nodes}",
        *SRUN_STEP_OPTIONS,
        *pyxis_options(plan),
        *plan.node_argv,
    ]


def job_values(job_dir: str, node: jobfiles.NodeRecord, leader: jobfiles.Leader) -> dict[str, str]:
    """What a running job filled the placeholders with, from its job directory's records:
    the node's address (``nodes/<rank>.json``), the leader's address and the ports it
    chose (``leader.json``), the job id and the directory's name."""
    values = {
        NODE_IP: node.ip,
        LEADER_IP: leader.ip,
        JOB_ID: leader.job_id,
        JOB_KEY: os.path.basename(job_dir.rstrip("/")),
        JOB_DIR: job_dir,
    }
    if leader.api_port is not None:
        values[API_PORT] = str(leader.api_port)
    if leader.ray_port is not None:
        values[RAY_PORT] = str(leader.ray_port)
    return values
