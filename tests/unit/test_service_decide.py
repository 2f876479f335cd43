"""The controller's rules (launchers.service.decide), one tick at a time."""

from __future__ import annotations

from typing import Any

import pytest

from launchers.service.decide import DRAIN_OVERDUE, Action, backoff_seconds, decide
from launchers.service.definition import Replica, ServiceSpec, ServiceState

NOW = 1_000_000.0


def spec(**changes: Any) -> ServiceSpec:
    base: dict[str, Any] = {
        "name": "llama", "request": {"model": "m"}, "replicas": 2, "handover_seconds": 600.0,
        "front_port": 8100, "front_time": "1-00:00:00", "python": "/usr/bin/python3",
        "key_file": "/k/key", "created_at": 0.0,
    }  # fmt: skip
    return ServiceSpec(**{**base, **changes})


def rep(job: str, slot: int, state: str = "READY", **changes: Any) -> Replica:
    base: dict[str, Any] = {
        "job_id": job, "slot": slot, "state": state, "submitted_at": NOW - 100,
        "url": f"http://10.0.0.{job}:8000" if state == "READY" else None,
        "ever_ready": state == "READY", "ends_at": NOW + 3600,
    }  # fmt: skip
    return Replica(**{**base, **changes})


def tick(
    replicas: list[Replica], routed: set[str] | None = None, s: ServiceSpec | None = None,
    previous: ServiceState | None = None, now: float = NOW,
) -> tuple[list[Action], ServiceState]:  # fmt: skip
    if routed is None:
        routed = {str(r.url) for r in replicas if r.ready and r.role != "draining"}
    prev = previous or ServiceState(name="llama", replicas=tuple(replicas))
    step = decide(s or spec(), prev, replicas, routed, now)
    assert step.state is not None
    return step.actions, step.state


def kinds(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.kind, a.url or a.job_id or str(a.slot)) for a in actions]


def test_a_new_service_submits_one_replica_per_slot() -> None:
    actions, state = tick([])
    assert kinds(actions) == [("submit", "0"), ("submit", "1")]
    assert state.state == "STARTING" and state.message == "0/2 replicas READY"


def test_two_ready_replicas_routed_is_a_quiet_tick() -> None:
    actions, state = tick([rep("1", 0), rep("2", 1)])
    assert actions == []
    assert state.state == "UP"


def test_a_ready_replica_goes_into_the_router_and_a_strangers_url_comes_out() -> None:
    actions, state = tick([rep("1", 0), rep("2", 1)], routed={"http://10.0.0.1:8000",
                                                              "http://6.6.6.6:80"})  # fmt: skip
    assert kinds(actions) == [("add", "http://10.0.0.2:8000"), ("remove", "http://6.6.6.6:80")]
    assert state.state == "UP"


def test_a_lost_replica_leaves_the_router_and_its_slot_is_filled_again() -> None:
    lost = rep("1", 0, state="FAILED", url="http://10.0.0.1:8000", ever_ready=True,
               message="the job ended (NODE_FAIL)", generation=3)  # fmt: skip
    actions, state = tick([lost, rep("2", 1)], routed={"http://10.0.0.1:8000",
                                                       "http://10.0.0.2:8000"})  # fmt: skip
    assert kinds(actions) == [("remove", "http://10.0.0.1:8000"), ("submit", "0")]
    assert actions[-1].generation == 4
    assert state.state == "DEGRADED" and [r.job_id for r in state.replicas] == ["2"]
    assert any("replica 1 (slot 0) was lost: the job ended (NODE_FAIL)" in e for e in state.events)
    assert state.failures_in_row == 0  # it had served: not a failure to start


def test_replicas_that_fail_before_ready_back_off_and_say_why() -> None:
    previous = ServiceState(name="llama", failures_in_row=2)
    bad = rep("7", 0, state="FAILED", message="vllm serve exited with code 1: OOM")
    actions, state = tick([bad], routed=set(), previous=previous, s=spec(replicas=1))
    assert actions == []  # no new submission while backing off
    assert state.state == "BACKING_OFF" and state.failures_in_row == 3
    assert state.backoff_until == NOW + backoff_seconds(3)
    assert "3 replicas in a row failed before READY" in state.message
    assert "OOM" in state.message
    # once the pause is over, the slot is tried again
    later = NOW + backoff_seconds(3) + 1
    actions, state = tick([], routed=set(), previous=state, s=spec(replicas=1), now=later)
    assert kinds(actions) == [("submit", "0")]


def test_backoff_doubles_and_is_bounded() -> None:
    assert backoff_seconds(2) == 0
    assert backoff_seconds(3) < backoff_seconds(4) < backoff_seconds(5)
    assert backoff_seconds(50) == backoff_seconds(60)


def test_a_replica_near_its_end_gets_a_successor_in_its_slot() -> None:
    near = rep("1", 0, ends_at=NOW + 500, generation=2)
    actions, state = tick([near, rep("2", 1)])
    assert kinds(actions) == [("submit", "0")]
    assert "ends in 500 s: successor" in state.events[-1]
    assert actions[0].successor_of == "1" and actions[0].generation == 3
    # the next tick, with the successor pending, submits nothing more
    successor = rep("3", 0, state="PENDING", role="successor", successor_of="1")
    actions, _ = tick([near, rep("2", 1), successor])
    assert actions == []


def test_handovers_roll_one_successor_loading_at_a_time() -> None:
    # both replicas inside the 600 s handover window: the earlier end goes first
    a, b = rep("1", 0, ends_at=NOW + 500), rep("2", 1, ends_at=NOW + 450)
    actions, _ = tick([a, b])
    assert kinds(actions) == [("submit", "1")] and actions[0].successor_of == "2"
    # while it loads (PENDING, then RUNNING) the other replica waits
    for phase in ("PENDING", "RUNNING"):
        loading = rep("3", 1, state=phase, role="successor", successor_of="2")
        actions, _ = tick([a, b, loading], now=NOW + 60)
        assert actions == [], phase
    # once it is READY: routed, the old one drains, and the next handover starts
    ready = rep("3", 1, role="successor", successor_of="2")
    routed = {"http://10.0.0.1:8000", "http://10.0.0.2:8000"}
    actions, _ = tick([a, b, ready], routed=routed, now=NOW + 90)
    assert kinds(actions) == [
        ("add", "http://10.0.0.3:8000"), ("remove", "http://10.0.0.2:8000"), ("drain", "2"),
        ("submit", "0"),
    ]  # fmt: skip
    assert actions[-1].successor_of == "1"


def test_a_waiting_handover_starts_anyway_when_half_its_window_is_left() -> None:
    a = rep("1", 0, ends_at=NOW + 500)
    loading = rep("3", 1, state="RUNNING", role="successor", successor_of="2")
    b = rep("2", 1, ends_at=NOW + 400)
    actions, _ = tick([a, b, loading], now=NOW + 199)  # 301 s left of a 600 s window
    assert actions == []
    actions, state = tick([a, b, loading], now=NOW + 200)  # 300 s left: half
    assert kinds(actions) == [("submit", "0")] and actions[0].successor_of == "1"
    assert "ends in 300 s: successor" in state.events[-1]


def test_a_handover_waits_for_any_replica_loading_not_only_a_successor() -> None:
    # a successor whose predecessor ended first (its time-limit warning came before the
    # successor was READY) serves its slot while it loads; a lost replica's replacement
    # loads too: either holds the next handover back while more than half is left
    a = rep("1", 0, ends_at=NOW + 505)
    for role, why in (("serving", "predecessor ended"), ("successor", "successor")):
        loading = rep("4", 1, state="RUNNING", role=role)
        actions, _ = tick([a, loading])
        assert actions == [], why
    draining = rep("4", 1, state="RUNNING", role="draining")  # a drain is no load
    actions, _ = tick([a, draining, rep("5", 1)])
    assert ("submit", "0") in kinds(actions), actions


def test_a_ready_successor_is_routed_before_the_old_one_leaves_and_drains() -> None:
    old = rep("1", 0, ends_at=NOW + 300)
    new = rep("3", 0, role="successor", successor_of="1")
    routed = {"http://10.0.0.1:8000", "http://10.0.0.2:8000"}
    actions, state = tick([old, rep("2", 1), new], routed=routed)
    assert kinds(actions) == [
        ("add", "http://10.0.0.3:8000"),
        ("remove", "http://10.0.0.1:8000"),
        ("drain", "1"),
    ]
    roles = {r.job_id: r.role for r in state.replicas}
    assert roles == {"1": "draining", "2": "serving", "3": "serving"}
    assert state.state == "UP"


def test_a_drained_replica_that_ended_is_forgotten_without_a_new_submission() -> None:
    gone = rep("1", 0, state="STOPPED", role="draining", drain_asked_at=NOW - 30,
               url="http://10.0.0.1:8000", ever_ready=True)  # fmt: skip
    routed = {"http://10.0.0.2:8000", "http://10.0.0.3:8000"}
    actions, state = tick([gone, rep("2", 1), rep("3", 0)], routed=routed)
    assert actions == []
    assert sorted(r.job_id for r in state.replicas) == ["2", "3"]
    assert state.failures_in_row == 0


def test_a_drain_that_does_not_end_the_job_is_cancelled() -> None:
    stuck = rep("1", 0, role="draining", drain_asked_at=NOW - DRAIN_OVERDUE - 1)
    routed = {"http://10.0.0.2:8000", "http://10.0.0.3:8000"}
    actions, _ = tick([stuck, rep("2", 1), rep("3", 0)], routed=routed)
    assert kinds(actions) == [("cancel", "1")]


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [
        (1, [("remove", "http://10.0.0.2:8000"), ("drain", "2")]),
        (3, [("submit", "2")]),
    ],
)
def test_scale_drains_the_slots_past_the_count_or_fills_new_ones(
    replicas: int, expected: list[tuple[str, str]]
) -> None:
    actions, _ = tick([rep("1", 0), rep("2", 1)], s=spec(replicas=replicas))
    assert kinds(actions) == expected


def test_a_replica_not_ready_yet_is_cancelled_not_drained() -> None:
    loading = rep("2", 1, state="LOADING")
    actions, _ = tick([rep("1", 0), loading], s=spec(replicas=1))
    assert kinds(actions) == [("cancel", "2")]


def test_down_drains_every_replica_then_says_down() -> None:
    s = spec(desired="DOWN")
    actions, state = tick([rep("1", 0), rep("2", 1, state="PENDING")], s=s)
    assert kinds(actions) == [("remove", "http://10.0.0.1:8000"), ("drain", "1"), ("cancel", "2")]
    assert state.state == "STOPPING"
    ended = [r.model_copy(update={"state": "STOPPED"}) for r in state.replicas]
    actions, state = tick(ended, routed=set(), s=s, previous=state)
    assert actions == [] and state.state == "DOWN" and state.replicas == () and state.url is None


def test_a_successor_whose_old_replica_was_lost_takes_the_slot() -> None:
    lost = rep("1", 0, state="FAILED", ever_ready=True, url="http://10.0.0.1:8000")
    new = rep("3", 0, state="LOADING", role="successor", successor_of="1")
    actions, state = tick([lost, rep("2", 1), new], routed={"http://10.0.0.2:8000"})
    assert actions == []  # no extra submission: the successor holds slot 0
    assert {r.job_id: r.role for r in state.replicas} == {"2": "serving", "3": "serving"}
