"""The network as the planner sees it: NCCL settings per network kind and the shape of
an interface name. Pure; the node's own interfaces are read by ``launchers.runtime.network``."""

from __future__ import annotations

from typing import Final

from launchers.errors import InputError

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


def check_iface_name(name: str) -> str:
    """A name Linux could give an interface (1-15 bytes, no '/', no white space), checked
    where the plan is made; whether the nodes have it is checked on each node."""
    if (
        not name
        or len(name.encode()) > 15
        or name in (".", "..")
        or "/" in name
        or any(c.isspace() for c in name)
    ):
        raise InputError(
            f"--iface: {name!r} is not a network interface name",
            fix="use a name such as ib0 or eth0 (`ip -br link` on a node lists them), "
            "or leave --iface out to detect the fast network",
        )
    return name
