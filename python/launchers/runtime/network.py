"""The fast network: which interface to use, and what NCCL, Gloo and vLLM must be told.

Order of preference: the user's choice (``--iface`` / ``$VLLM_HPC_IFACE``), InfiniBand
(``/sys/class/net/IF/type`` = 32), RoCE (an Ethernet interface with an RDMA device),
the fastest other Ethernet interface, the interface of the default route, and finally
the only non-loopback interface that is up with an IPv4 address.

``parse_*`` and ``choose_interface`` are pure; ``read_interfaces`` reads sysfs and
psutil. ``vllm-hpc node network`` prints ``KEY=VALUE`` lines for scripts to export.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchers.errors import InputError

ARPHRD_ETHER, ARPHRD_INFINIBAND, ARPHRD_LOOPBACK = 1, 32, 772


@dataclass(frozen=True)
class Interface:
    name: str
    kind: str  # infiniband | roce | ethernet | loopback | other
    ipv4: str | None
    up: bool
    speed_mbps: int | None = None
    hca: str | None = None  # RDMA device (for NCCL_IB_HCA)
    default_route: bool = False


def parse_proc_net_route(text: str) -> set[str]:
    """Interfaces with a default route, from ``/proc/net/route``."""
    out = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            out.add(fields[0])
    return out


def classify(arphrd: int, has_rdma: bool, name: str) -> str:
    if arphrd == ARPHRD_INFINIBAND:
        return "infiniband"
    if arphrd == ARPHRD_LOOPBACK or name == "lo":
        return "loopback"
    if arphrd == ARPHRD_ETHER:
        return "roce" if has_rdma else "ethernet"
    return "other"


_RANK = {"infiniband": 0, "roce": 1, "ethernet": 2, "other": 3}


def choose_interface(
    interfaces: Sequence[Interface], override: str | None = None
) -> tuple[Interface, str]:
    """Pick the interface for ``VLLM_HOST_IP`` and say why. Pure."""
    usable = [i for i in interfaces if i.up and i.ipv4 and i.kind != "loopback"]
    names = ", ".join(f"{i.name}({i.kind})" for i in interfaces) or "none"
    if override:
        for iface in interfaces:
            if iface.name == override:
                if not iface.ipv4:
                    raise InputError(
                        f"--iface: {override} has no IPv4 address",
                        fix=f"choose one of: {', '.join(i.name for i in usable) or 'none'}",
                    )
                return iface, f"{override} chosen by --iface/VLLM_HPC_IFACE"
        raise InputError(
            f"--iface: no interface named {override!r} on {socket.gethostname()}",
            fix=f"interfaces here: {names}",
        )
    if not usable:
        raise InputError(
            f"network: no interface with an IPv4 address is up on {socket.gethostname()} "
            f"(seen: {names})",
            fix="bring up the cluster network or pass --iface",
        )
    for kind in ("infiniband", "roce"):
        fast = [i for i in usable if i.kind == kind]
        if fast:
            best = fast[0]
            label = "InfiniBand (IPoIB)" if kind == "infiniband" else "RoCE (RDMA over Ethernet)"
            return best, f"{best.name} is {label}" + (f" on {best.hca}" if best.hca else "")
    ether = sorted(
        (i for i in usable if i.kind == "ethernet" and i.speed_mbps),
        key=lambda i: -(i.speed_mbps or 0),
    )
    if ether and (len(ether) == 1 or (ether[0].speed_mbps or 0) > (ether[1].speed_mbps or 0)):
        return ether[0], f"{ether[0].name} is the fastest Ethernet ({ether[0].speed_mbps} Mb/s)"
    routed = [i for i in usable if i.default_route]
    if routed:
        return routed[0], f"{routed[0].name} carries the default route"
    if len(usable) == 1:
        return usable[0], f"{usable[0].name} is the only interface up with an IPv4 address"
    return usable[0], f"{usable[0].name} is the first of {len(usable)} candidates ({names})"


def network_env(iface: Interface) -> dict[str, str]:
    """What vLLM, NCCL, Gloo and torch need to use ``iface``."""
    if iface.ipv4 is None:
        raise InputError(f"--iface: {iface.name} has no IPv4 address")
    env = {
        "VLLM_HOST_IP": iface.ipv4,
        "NCCL_SOCKET_IFNAME": iface.name,
        "GLOO_SOCKET_IFNAME": iface.name,
        "TP_SOCKET_IFNAME": iface.name,
    }
    if iface.hca:
        env["NCCL_IB_HCA"] = iface.hca
    return env


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _hca_map(sys_root: Path) -> dict[str, str]:
    """Network interface -> RDMA device, from /sys/class/infiniband/HCA/device/net/IF."""
    out: dict[str, str] = {}
    base = sys_root / "class" / "infiniband"
    if base.is_dir():
        for hca in sorted(base.iterdir()):
            net = hca / "device" / "net"
            if net.is_dir():
                for iface in net.iterdir():
                    out.setdefault(iface.name, hca.name)
    return out


def read_interfaces(sys_root: str = "/sys", proc_root: str = "/proc") -> list[Interface]:
    """Every network interface of this node, classified."""
    import psutil

    root = Path(sys_root)
    addrs = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    hcas = _hca_map(root)
    routed = parse_proc_net_route(_read(Path(proc_root) / "net" / "route") or "")
    out = []
    for name in sorted(set(addrs) | set(stats)):
        arphrd = int(_read(root / "class" / "net" / name / "type") or 0)
        ipv4 = next((a.address for a in addrs.get(name, []) if a.family == socket.AF_INET), None)
        stat = stats.get(name)
        speed = stat.speed if stat and stat.speed > 0 else None
        out.append(
            Interface(
                name=name,
                kind=classify(arphrd, name in hcas, name),
                ipv4=ipv4,
                up=bool(stat and stat.isup),
                speed_mbps=speed,
                hca=hcas.get(name),
                default_route=name in routed,
            )
        )
    return out


def prefix_in(addrs: Mapping[str, Sequence[Any]], ip: str) -> tuple[str, int] | None:
    """The interface that holds ``ip`` and the prefix length of its subnet, in ``addrs``
    (psutil's ``net_if_addrs()``: each address with its ``netmask``); None when no
    interface holds it or its mask is unreadable. Pure."""
    for name, found in sorted(addrs.items()):
        for addr in found:
            if getattr(addr, "address", None) != ip or not getattr(addr, "netmask", None):
                continue
            try:
                bits = bin(int(ipaddress.ip_address(addr.netmask))).count("1")
            except ValueError:
                return None
            return name, bits
    return None


def prefix_of(ip: str) -> int | None:
    """The prefix length of the subnet of the interface that holds ``ip`` on this node
    (``10.0.0.11/24``: 24); None when none holds it, or psutil is not importable (a
    helper's Python inside an image)."""
    if not ip:
        return None
    try:
        import psutil
    except ImportError:
        return None
    held = prefix_in(psutil.net_if_addrs(), ip)
    return None if held is None else held[1]


def detect(override: str | None = None, node_ip: str | None = None) -> tuple[dict[str, str], str]:
    """The environment for this node and the reason, honouring an explicit address."""
    interfaces = read_interfaces()
    if node_ip and not override:
        try:
            ipaddress.ip_address(node_ip)
        except ValueError:
            raise InputError(
                f"--node-ip-address: {node_ip!r} is not an IP address",
                fix="give this node's own address (ip -4 addr), or leave it out to detect it",
            ) from None
        for iface in interfaces:
            if iface.ipv4 == node_ip:
                return network_env(iface), f"{iface.name} holds the given address {node_ip}"
        raise InputError(
            f"--node-ip-address: {node_ip} is not an address of {socket.gethostname()}",
            fix="give this node's own address (ip -4 addr)",
        )
    iface, reason = choose_interface(interfaces, override)
    return network_env(iface), reason
