"""From a request to a plan, the one way every door does it: read the registry layers
the request names, ``resolve`` the request into a ``ServeConfig``, and plan it for the
allocation the layout asks for (``submit``, ``plan``, ``render``, the client, the
wrapper)."""

from __future__ import annotations

from collections.abc import Mapping

from launchers.input.registry import load_registry
from launchers.input.resolve import resolve
from launchers.plan.launch import LaunchPlan, plan
from launchers.spec.config import ClusterSpec, ServeConfig
from launchers.spec.request import SubmitRequest


def make_config(request: SubmitRequest, environ: Mapping[str, str], python: str) -> ServeConfig:
    """The request resolved against the registry layers (raises InputError)."""
    return resolve(request, load_registry(request.registry, environ), environ, python)


def plan_for(config: ServeConfig) -> LaunchPlan:
    """The plan of ``config`` on the allocation its layout asks for."""
    layout = config.layout
    return plan(config, ClusterSpec(nodes=layout.nodes, gpus_per_node=layout.gpus_per_node))


def make_plan(request: SubmitRequest, environ: Mapping[str, str], python: str) -> LaunchPlan:
    return plan_for(make_config(request, environ, python))


__all__ = ["make_config", "make_plan", "plan_for"]
