"""The fast network: which interface to use, and what NCCL, Gloo and vLLM must be told.

This module will grow the node-side probes (``probe_interfaces``); the parts here are
pure and safe to import on the login node.
"""

from __future__ import annotations

from typing import Final

# NCCL settings per network kind. "auto" leaves the choice to the node, which knows
# whether it has an InfiniBand/RoCE device.
NCCL_PROFILES: Final[dict[str, dict[str, str]]] = {
    "auto": {},
    "infiniband": {"NCCL_IB_DISABLE": "0"},
    # RoCE v2: GID index 3 is the usual RoCE v2 entry; traffic class 106 maps to the
    # lossless priority on most RoCE fabrics (the site can override both).
    "roce": {"NCCL_IB_DISABLE": "0", "NCCL_IB_GID_INDEX": "3", "NCCL_IB_TC": "106"},
    "tcp": {"NCCL_IB_DISABLE": "1"},
}


def nccl_profile_env(profile: str) -> dict[str, str]:
    return dict(NCCL_PROFILES[profile])
