"""What each node executes, for the dry run: the argv of its ``ray start`` and ``vllm
serve`` (``plan.argv.process_argv``, the node runtime's builder too) from the plan's
typed starts. The dry run gives it what the plan knows of a node (its rank, its first
data-parallel rank: ``LaunchPlan.node_values``); the node adds what only the running job
knows (addresses, the job id, the ports it chose), so the argv a node runs is the dry
run's with those placeholders filled (``job_values`` says with what, from the job
directory's records). Pure: nothing here starts a process or reads the machine.
"""

# Annotations are evaluated here, as the module runs (no `from __future__ import
# annotations`): pydantic would otherwise compile each field's annotation from its text
# when the class is made (the dry run's models: about 6 of its 20 ms of class making).
# Names defined further down are quoted.
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import Field

from launchers.plan.argv import process_argv
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
from launchers.spec.config import Frozen

if TYPE_CHECKING:
    from launchers.jobdir import jobfiles  # the records job_values reads (a dry run has none)


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


def job_values(
    job_dir: str, node: "jobfiles.NodeRecord", leader: "jobfiles.Leader"
) -> dict[str, str]:
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
