from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from launchers.errors import InputError
from launchers.runtime.network import (
    Interface,
    choose_interface,
    classify,
    network_env,
    parse_proc_net_route,
    prefix_in,
)

ROUTE = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask
eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000
eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF
"""

LO = Interface("lo", "loopback", "127.0.0.1", True)
ETH = Interface("eth0", "ethernet", "192.168.0.5", True, 1000, default_route=True)
IB = Interface("ib0", "infiniband", "172.17.1.1", True, 100000, hca="mlx5_0")
ROCE = Interface("ens1f0", "roce", "10.1.59.30", True, 100000, hca="mlx5_2")


def test_parse_default_route() -> None:
    assert parse_proc_net_route(ROUTE) == {"eth0"}
    assert parse_proc_net_route("Iface\\tDestination\\n") == set()


@pytest.mark.parametrize(
    ("arphrd", "rdma", "name", "kind"),
    [
        (32, False, "ib0", "infiniband"),
        (1, True, "ens1f0", "roce"),
        (1, False, "eth0", "ethernet"),
        (772, False, "lo", "loopback"),
        (65534, False, "tun0", "other"),
    ],
)
def test_classify(arphrd: int, rdma: bool, name: str, kind: str) -> None:
    assert classify(arphrd, rdma, name) == kind


@pytest.mark.parametrize(
    ("interfaces", "override", "chosen", "why"),
    [
        ([LO, ETH, IB], None, "ib0", "InfiniBand"),
        ([LO, ETH, ROCE], None, "ens1f0", "RoCE"),
        ([LO, ETH, IB, ROCE], "ens1f0", "ens1f0", "--iface"),
        (
            [LO, ETH, Interface("eth1", "ethernet", "10.0.0.2", True, 25000)],
            None,
            "eth1",
            "fastest",
        ),
        (
            [LO, ETH, Interface("eth1", "ethernet", "10.0.0.2", True, 1000)],
            None,
            "eth0",
            "default route",
        ),
        ([LO, Interface("ib0", "ethernet", "10.77.0.11", True)], None, "ib0", "only interface"),
        ([LO, IB, Interface("ib1", "infiniband", "172.18.0.1", False)], None, "ib0", "InfiniBand"),
    ],
)
def test_choose(interfaces: list[Interface], override: str | None, chosen: str, why: str) -> None:
    iface, reason = choose_interface(interfaces, override)
    assert iface.name == chosen
    assert why in reason


def test_choose_errors() -> None:
    with pytest.raises(InputError, match="--iface: no interface named 'ib9'"):
        choose_interface([LO, IB], "ib9")
    with pytest.raises(InputError, match="network: no interface with an IPv4 address is up"):
        choose_interface([LO, Interface("ib0", "infiniband", None, True)])


def test_exports() -> None:
    assert network_env(IB) == {
        "VLLM_HOST_IP": "172.17.1.1",
        "NCCL_SOCKET_IFNAME": "ib0",
        "GLOO_SOCKET_IFNAME": "ib0",
        "TP_SOCKET_IFNAME": "ib0",
        "NCCL_IB_HCA": "mlx5_0",
    }
    assert "NCCL_IB_HCA" not in network_env(ETH)


def _addr(address: str, netmask: str | None, family: int = socket.AF_INET) -> SimpleNamespace:
    return SimpleNamespace(family=family, address=address, netmask=netmask)


ADDRS = {
    "lo": [_addr("127.0.0.1", "255.0.0.0")],
    "eth0": [_addr("192.168.1.13", "255.255.255.0"), _addr("fe80::1", "ffff:ffff:ffff:ffff::",
                                                            socket.AF_INET6)],
    "ib0": [_addr("10.0.0.11", "255.255.0.0")],
    "ib1": [_addr("10.78.0.12", None)],
}  # fmt: skip


@pytest.mark.parametrize(
    ("ip", "held"),
    [
        ("10.0.0.11", ("ib0", 16)),
        ("192.168.1.13", ("eth0", 24)),
        ("fe80::1", ("eth0", 64)),
        ("10.0.0.99", None),  # no interface holds it
        ("10.78.0.12", None),  # no mask to read
    ],
)
def test_the_interface_that_holds_an_address_and_its_prefix(
    ip: str, held: tuple[str, int] | None
) -> None:
    assert prefix_in(ADDRS, ip) == held
