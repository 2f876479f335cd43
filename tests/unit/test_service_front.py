"""The front as an object (service.front.ServiceFront): its controller loop ends when the
router exits or the service is down, a failed tick is logged and the next one runs, a
stop from its own time-limit warning asks for a successor; served for real on loopback,
it writes its heartbeat and returns once the service is down."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launchers.client import Client
from launchers.defaults import FRONT_MAX_CONNECTIONS, FRONT_UPSTREAM_REPLICAS, SERVICE_MAX_REPLICAS
from launchers.health import pick_port
from launchers.jobdir.safe import private_dir
from launchers.service import store
from launchers.service.activity import Activity
from launchers.service.definition import ServiceState
from launchers.service.front import (
    ReplicaFacts,
    ServiceFront,
    replica_facts,
    replica_seqs,
    upstream_limit,
)
from launchers.spec.request import SubmitRequest

from .helpers.runtime import FakeClock


class Router:
    """vllm-router as the front sees it: running until ``exit_code`` is set."""

    def __init__(self, exit_code: int | None = None) -> None:
        self.exit_code = exit_code

    def poll(self) -> int | None:
        return self.exit_code


class Controller:
    """Ticks that say what ``states`` say, in order (an exception is raised)."""

    url = "http://127.0.0.1:9/v1"
    routed_count = 1
    last: ServiceState | None = None  # what the front's metrics read
    handovers = 0

    def __init__(self, *states: Any) -> None:
        self.states = list(states)
        self.ticks = 0
        self.activity = Activity()  # shared with the proxy

    def tick(self) -> ServiceState:
        self.ticks += 1
        if self.ticks > 50:  # a loop that never ends fails the test instead of hanging it
            raise SystemExit("the controller loop did not stop")
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if isinstance(state, Exception):
            raise state
        return ServiceState(name="llama", state=state)


def front(tmp_path: Path, controller: Controller, router: Router, **changes: Any) -> ServiceFront:
    directory = tmp_path / "services" / "llama"
    private_dir(directory, "service directory")
    logged: list[str] = []
    made = ServiceFront(
        service_dir=str(directory), name="llama", address="127.0.0.1", port=pick_port(20500),
        router_port=9, key="k" * 32, controller=controller, router=router,  # type: ignore[arg-type]
        log=logged.append, clock=FakeClock().clock(), **changes,
    )  # fmt: skip
    return made


def test_the_loop_ends_when_the_router_exits(tmp_path: Path) -> None:
    controller = Controller("UP")
    f = front(tmp_path, controller, Router(exit_code=3))
    f.control()
    assert f.stopping.is_set() and controller.ticks == 0 and not f.successor


def test_the_loop_ends_when_the_service_is_down(tmp_path: Path) -> None:
    controller = Controller("UP", "UP", "DOWN")
    f = front(tmp_path, controller, Router())
    f.control()
    assert controller.ticks == 3 and f.stopping.is_set()


def test_a_failed_tick_is_logged_and_the_next_one_runs(tmp_path: Path) -> None:
    controller = Controller(OSError("stale NFS handle"), "DOWN")
    logged: list[str] = []
    f = front(tmp_path, controller, Router())
    f.log = logged.append
    f.control()
    assert controller.ticks == 2
    assert logged[0] == "controller tick failed: OSError: stale NFS handle"


def test_its_own_time_limit_asks_for_a_successor_a_signal_does_not(tmp_path: Path) -> None:
    f = front(tmp_path, Controller("UP"), Router())
    woken = threading.Event()
    f._wake = woken.set
    f.stop("stopping on SIGTERM; replicas keep serving")
    assert f.stopping.is_set() and woken.is_set() and not f.successor
    f.stop("stopping on SIGUSR1", successor=True)
    assert f.successor


def test_served_on_loopback_it_beats_and_returns_when_the_service_is_down(
    tmp_path: Path,
) -> None:
    f = front(tmp_path, Controller("DOWN"), Router())
    store.write_state(f.service_dir, ServiceState(name="llama"))
    assert f.serve() == 0
    written = store.read_front(f.service_dir)
    assert written is not None and written.port == f.port and written.host == "127.0.0.1"
    assert f.stopping.is_set()


@pytest.mark.parametrize(
    ("seqs", "limit"),
    [
        (None, 0),  # not known: no connector limit, the front's own bound holds
        (1, FRONT_UPSTREAM_REPLICAS),
        (8, 8 * FRONT_UPSTREAM_REPLICAS),
        (64, 0),  # 64 x 32 is past FRONT_MAX_CONNECTIONS: that bound comes first
    ],
)
def test_the_upstream_limit_is_what_the_replicas_can_take(seqs: int | None, limit: int) -> None:
    assert upstream_limit(seqs) == limit
    assert FRONT_UPSTREAM_REPLICAS >= 2 * SERVICE_MAX_REPLICAS  # a scale never outgrows it
    assert limit == 0 or limit < FRONT_MAX_CONNECTIONS


def test_a_replica_takes_its_max_num_seqs_times_its_dp_ranks(tmp_path: Path) -> None:
    config = Client(job_root=str(tmp_path)).config(
        {"model": "llama-3.1-70b-instruct", "nodes": 2, "gpus_per_node": 4}
    )
    assert config.spec.max_num_seqs == 64 and replica_seqs(config) == 64
    dp2 = config.model_copy(update={"layout": config.layout.model_copy(update={"dp": 2})})
    assert replica_seqs(dp2) == 128
    for extra in (("--max-num-seqs", "16"), ("--max-num-seqs=16",)):
        assert replica_seqs(config.model_copy(update={"extra_args": extra})) == 16
    unset = config.spec.model_copy(update={"max_num_seqs": None})
    assert replica_seqs(config.model_copy(update={"spec": unset})) is None


def test_the_front_knows_the_name_its_replicas_serve(
    tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    """What the front lists at GET /v1/models while no replica is routed: the name every
    replica is started with (--served-model-name), from the service's own request."""
    client = Client(job_root=str(tmp_path))
    asked = SubmitRequest.checked({"model": "llama-3.1-70b-instruct", "nodes": 2,
                                   "gpus_per_node": 4})  # fmt: skip
    facts = replica_facts(client, asked)
    assert facts.models == (client.config(asked).served_model_name,) == ("Llama-3.1-70B-Instruct",)
    assert facts.upstream_limit == upstream_limit(64)
    directory = tiny_model()
    path = SubmitRequest.checked({"model": str(directory)})
    assert replica_facts(client, path).models == (directory.name,)  # as vLLM is told


def test_a_request_that_does_not_resolve_here_leaves_the_facts_unknown(tmp_path: Path) -> None:
    unknown = SubmitRequest.checked({"model": "no-such-model-in-any-registry"})
    assert replica_facts(Client(job_root=str(tmp_path)), unknown) == ReplicaFacts()
