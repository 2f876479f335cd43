from __future__ import annotations

import pytest

from launchers.errors import InputError
from launchers.runtime.network import (
    Interface,
    choose_interface,
    classify,
    network_env,
    parse_proc_net_route,
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
