"""The controller's rules (launchers.service.decide), one tick at a time."""

from __future__ import annotations

from typing import Any

import pytest

from launchers.service.decide import (
    DRAIN_OVERDUE,
    Action,
    Demand,
    backoff_seconds,
    decide,
    waking_news,
)
from launchers.service.definition import LoadRun, Replica, Scaling, ServiceSpec, ServiceState

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
    # once it is READY: routed, and the old one drains
    ready = rep("3", 1, role="successor", successor_of="2")
    routed = {"http://10.0.0.1:8000", "http://10.0.0.2:8000"}
    actions, state = tick([a, b, ready], routed=routed, now=NOW + 90)
    assert kinds(actions) == [
        ("add", "http://10.0.0.3:8000"), ("remove", "http://10.0.0.2:8000"), ("drain", "2"),
    ]  # fmt: skip
    # while it drains (its job still in SLURM, whatever its file says) the next waits:
    # SLURM holds three replicas' nodes, not four
    routed = {"http://10.0.0.1:8000", "http://10.0.0.3:8000"}
    for file, slurm in (("DRAINING", "RUNNING"), ("STOPPED", "RUNNING")):
        draining = [r.model_copy(update={"state": file, "slurm_state": slurm})
                    if r.job_id == "2" else r for r in state.replicas]  # fmt: skip
        actions, state = tick(draining, routed=routed, previous=state, now=NOW + 100)
        assert actions == [], file
    # once SLURM has let go of it, the next handover starts
    ended = [r.model_copy(update={"state": "STOPPED", "slurm_state": "ENDED"})
             if r.job_id == "2" else r for r in state.replicas]  # fmt: skip
    actions, _ = tick(ended, routed=routed, previous=state, now=NOW + 110)
    assert kinds(actions) == [("submit", "0")] and actions[-1].successor_of == "1"


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
    # a drain holds it back too, until its job has ended: SLURM still holds its nodes
    draining = rep("4", 1, state="STOPPED", role="draining", slurm_state="RUNNING")
    actions, _ = tick([a, draining, rep("5", 1)])
    assert actions == []
    actions, _ = tick([a, rep("5", 1)])
    assert kinds(actions) == [("submit", "0")], actions


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


# --- what is true: a replica has ended when its job file and SLURM both say so ----------


def leaving(state: str, slurm: str, **changes: Any) -> Replica:
    """Replica 1 of slot 0, drained for a handover: its job file says ``state``, SLURM
    ``slurm`` (set the way the controller sets it, whatever this code's fields are)."""
    base = rep("1", 0, state=state, role="draining", url="http://10.0.0.1:8000",
               ever_ready=True, **{"drain_asked_at": NOW - 30, **changes})  # fmt: skip
    return base.model_copy(update={"slurm_state": slurm})


@pytest.mark.parametrize("state", ["STOPPED", "DRAINING"])
def test_a_drained_replica_slurm_still_runs_is_kept_until_slurm_says_it_ended(
    state: str,
) -> None:
    routed = {"http://10.0.0.2:8000", "http://10.0.0.3:8000"}
    others = [rep("2", 1), rep("3", 0)]
    actions, kept = tick([leaving(state, "RUNNING"), *others], routed=routed)
    assert actions == []
    assert sorted(r.job_id for r in kept.replicas) == ["1", "2", "3"]
    assert not any("drained and ended" in e for e in kept.events), kept.events
    # SLURM's word: the job left (COMPLETED); now it is forgotten, and said so once
    actions, gone = tick([leaving("STOPPED", "ENDED"), *others], routed=routed, previous=kept)
    assert actions == []
    assert sorted(r.job_id for r in gone.replicas) == ["2", "3"]
    assert [e for e in gone.events if "drained and ended" in e] == [
        "13:46:40 UTC replica 1 (slot 0) drained and ended"
    ]


def test_a_job_slurm_says_ended_is_ended_whatever_its_file_says() -> None:
    """The controller reads SLURM's end into the state (observe.status.combine): a
    DRAINING file of a CANCELLED job is STOPPED; either way the replica is forgotten."""
    actions, state = tick([leaving("STOPPED", "CANCELLED"), rep("2", 1), rep("3", 0)])
    assert actions == [] and sorted(r.job_id for r in state.replicas) == ["2", "3"]


def test_the_overdue_drain_is_cancelled_while_slurm_still_runs_the_stopped_job() -> None:
    stuck = leaving("STOPPED", "RUNNING", drain_asked_at=NOW - DRAIN_OVERDUE - 1)
    routed = {"http://10.0.0.2:8000", "http://10.0.0.3:8000"}
    actions, state = tick([stuck, rep("2", 1), rep("3", 0)], routed=routed)
    assert kinds(actions) == [("cancel", "1")]
    assert "1" in {r.job_id for r in state.replicas}  # until SLURM says it ended
    # not cancelled again before another DRAIN_OVERDUE
    again = [r.model_copy(update={"slurm_state": "RUNNING"}) for r in state.replicas]
    actions, _ = tick(again, routed=routed, previous=state, now=NOW + DRAIN_OVERDUE / 2)
    assert actions == []


def test_down_says_down_only_once_slurm_has_ended_every_replica() -> None:
    s = spec(desired="DOWN")
    actions, state = tick([rep("1", 0), rep("2", 1)], s=s)
    assert state.state == "STOPPING"
    stopped = [r.model_copy(update={"state": "STOPPED", "slurm_state": "RUNNING"})
               for r in state.replicas]  # fmt: skip
    actions, state = tick(stopped, routed=set(), s=s, previous=state)
    assert actions == [] and state.state == "STOPPING" and len(state.replicas) == 2
    ended = [r.model_copy(update={"slurm_state": "ENDED"}) for r in state.replicas]
    actions, state = tick(ended, routed=set(), s=s, previous=state)
    assert state.state == "DOWN" and state.replicas == ()


class World:
    """SLURM and the replica jobs for ``decide``, one tick every 10 s: a submitted job
    is PENDING one tick, LOADING three, then READY; a drained job is DRAINING three
    ticks, then its file says STOPPED while SLURM still runs it one tick, then it has
    left SLURM. ``alive`` counts the jobs SLURM holds."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.next_id = 10

    def start(self, job: str, now: float, ends_at: float, phase: str = "READY") -> None:
        self.jobs[job] = {"phase": phase, "since": now, "ends_at": ends_at}

    def alive(self) -> int:
        return sum(1 for j in self.jobs.values() if j["phase"] != "GONE")

    def advance(self, now: float) -> None:
        for job in self.jobs.values():
            age = now - job["since"]
            nxt = {("PENDING", 10): "LOADING", ("LOADING", 30): "READY",
                   ("DRAINING", 30): "STOPPED", ("STOPPED", 10): "GONE"}  # fmt: skip
            for (phase, after), then in nxt.items():
                if job["phase"] == phase and age >= after:
                    job.update(phase=then, since=now)
                    break

    def observe(self, r: Replica) -> Replica:
        job = self.jobs[r.job_id]
        phase = job["phase"]
        state = {"GONE": "STOPPED", "PENDING": "PENDING"}.get(phase, phase)
        slurm = {"GONE": "ENDED", "PENDING": "PENDING"}.get(phase, "RUNNING")
        update: dict[str, Any] = {"state": state, "slurm_state": slurm}
        if phase == "READY":
            update.update(url=f"http://10.0.0.{r.job_id}:8000", ever_ready=True,
                          ends_at=job["ends_at"])  # fmt: skip
        return r.model_copy(update=update)

    def act(self, action: Action, now: float) -> Replica | None:
        if action.kind == "drain":
            self.jobs[action.job_id].update(phase="DRAINING", since=now)
        elif action.kind == "cancel":
            self.jobs[action.job_id].update(phase="GONE", since=now)
        elif action.kind == "submit":
            job = str(self.next_id)
            self.next_id += 1
            self.start(job, now, now + 3600, phase="PENDING")
            return Replica(job_id=job, slot=action.slot, generation=action.generation,
                           role="successor" if action.successor_of else "serving",
                           successor_of=action.successor_of, submitted_at=now)  # fmt: skip
        return None


def test_a_handover_of_two_replicas_never_holds_more_than_three_jobs() -> None:
    world = World()
    world.start("1", NOW, NOW + 500)
    world.start("2", NOW, NOW + 450)
    state = ServiceState(name="llama", replicas=(rep("1", 0, ends_at=NOW + 500),
                                                 rep("2", 1, ends_at=NOW + 450)))  # fmt: skip
    routed = {"http://10.0.0.1:8000", "http://10.0.0.2:8000"}
    most = 0
    for n in range(40):
        now = NOW + 10 * n
        world.advance(now)
        observed = [world.observe(r) for r in state.replicas]
        step = decide(spec(), state, observed, routed, now)
        assert step.state is not None
        new = []
        for action in step.actions:
            if action.kind == "add":
                routed.add(action.url)
            elif action.kind == "remove":
                routed.discard(action.url)
            made = world.act(action, now)
            if made is not None:
                new.append(made)
        state = step.state.model_copy(update={"replicas": (*step.state.replicas, *new)})
        most = max(most, world.alive())
    assert most <= 3, f"{most} replica jobs at once for 2 replicas"
    # both handed over: two new READY replicas serve, the old jobs have left SLURM
    assert sorted(r.job_id for r in state.replicas) == ["10", "11"]
    assert {r.state for r in state.replicas} == {"READY"} and state.state == "UP"
    assert world.jobs["1"]["phase"] == world.jobs["2"]["phase"] == "GONE"
    # why the second successor waited: said once per reason, not every tick
    waits = [e.split(": ", 1)[1] for e in state.events if "successor waits" in e]
    assert waits == [
        "its successor waits for replica 10 (slot 1) to load",
        "its successor waits for replica 2 (slot 1) to drain",
    ], state.events


def test_a_waiting_successor_says_why_once() -> None:
    a, b = rep("1", 0, ends_at=NOW + 500), rep("2", 1, ends_at=NOW + 450)
    loading = rep("3", 1, state="LOADING", role="successor", successor_of="2")
    _, state = tick([a, b, loading])
    said = [e for e in state.events if "successor waits" in e]
    assert said == ["13:46:40 UTC replica 1 (slot 0) ends in 500 s: its successor waits "
                    "for replica 3 (slot 1) to load"]  # fmt: skip
    _, state = tick(list(state.replicas), previous=state, now=NOW + 10)  # as the controller
    assert [e for e in state.events if "successor waits" in e] == said


def test_a_replica_stopping_on_its_own_leaves_at_once_and_is_waited_for() -> None:
    """scancel'd by hand (its file says DRAINING, SLURM RUNNING): out of the router, its
    slot filled again, said once; kept as ``ending`` until its job has ended."""
    stopping = rep("1", 0, state="DRAINING", message="stopping on SIGTERM (scancel or shutdown)",
                   url="http://10.0.0.1:8000", ever_ready=True, slurm_state="RUNNING")  # fmt: skip
    routed = {"http://10.0.0.1:8000", "http://10.0.0.2:8000"}
    actions, state = tick([stopping, rep("2", 1)], routed=routed)
    assert kinds(actions) == [("remove", "http://10.0.0.1:8000"), ("submit", "0")]
    assert {r.job_id: r.role for r in state.replicas} == {"1": "ending", "2": "serving"}
    assert state.events[-2:] == (
        "13:46:40 UTC replica 1 (slot 0) was lost: stopping on SIGTERM (scancel or shutdown)",
        "13:46:40 UTC slot 0: a new replica",
    )
    assert state.state == "DEGRADED" and state.failures_in_row == 0
    # the next ticks (the new replica 4 loading): nothing more is said or done until
    # SLURM lets go of it
    replicas = [*state.replicas, rep("4", 0, state="PENDING", generation=2)]
    state = state.model_copy(update={"replicas": tuple(replicas)})
    routed = {"http://10.0.0.2:8000"}
    actions, later = tick(replicas, routed=routed, previous=state, now=NOW + 10)
    assert actions == [] and later.events == state.events
    # still there DRAIN_OVERDUE after it began to end: cancelled
    actions, _ = tick(replicas, routed=routed, previous=state, now=NOW + DRAIN_OVERDUE + 1)
    assert kinds(actions) == [("cancel", "1")]
    gone = [r.model_copy(update={"state": "STOPPED", "slurm_state": "CANCELLED"})
            if r.job_id == "1" else r for r in replicas]  # fmt: skip
    actions, last = tick(gone, routed=routed, previous=state, now=NOW + 20)
    assert actions == [] and [r.job_id for r in last.replicas] == ["2", "4"]
    assert last.events == state.events  # its end was said when it began


def test_a_successor_takes_the_slot_when_its_replica_stops_before_it_is_ready() -> None:
    """The time-limit warning came before the successor was READY: the old replica is
    ending, the successor holds the slot; nothing more is submitted."""
    old = rep("1", 0, state="DRAINING", ever_ready=True, url="http://10.0.0.1:8000",
              slurm_state="RUNNING", ends_at=NOW + 100)  # fmt: skip
    new = rep("3", 0, state="LOADING", role="successor", successor_of="1")
    actions, state = tick([old, rep("2", 1), new], routed={"http://10.0.0.1:8000",
                                                           "http://10.0.0.2:8000"})  # fmt: skip
    assert kinds(actions) == [("remove", "http://10.0.0.1:8000")]
    roles = {r.job_id: r.role for r in state.replicas}
    assert roles == {"1": "ending", "2": "serving", "3": "serving"}


# --- scale to zero: idle without requests, woken by one -----------------------------------

IDLE = 1800.0


def idling(**changes: Any) -> ServiceSpec:
    """Two replicas, none kept after 30 minutes without a request."""
    return spec(**{"min_replicas": 0, "idle_seconds": IDLE, **changes})


def test_no_request_for_the_idle_time_drains_every_replica_and_says_idle() -> None:
    served = [rep("1", 0, since=NOW - 3000), rep("2", 1, since=NOW - 3000)]
    quiet = ServiceState(name="llama", replicas=tuple(served), last_request=NOW - IDLE + 60)
    actions, state = tick(served, s=idling(), previous=quiet)
    assert actions == [] and state.state == "UP"  # a request came 29 minutes ago
    actions, state = tick(served, s=idling(), previous=state, now=NOW + 60)
    assert kinds(actions) == [("remove", "http://10.0.0.1:8000"), ("drain", "1"),
                              ("remove", "http://10.0.0.2:8000"), ("drain", "2")]  # fmt: skip
    assert {a.reason for a in actions if a.kind == "drain"} == {"idle"}
    assert state.events[-2:] == (
        "13:47:40 UTC replica 1 (slot 0) drains: idle for 30m (the last request at 13:17:40 UTC)",
        "13:47:40 UTC replica 2 (slot 1) drains: idle for 30m (the last request at 13:17:40 UTC)",
    )
    assert (state.state, state.message) == ("IDLE", "idle: 0 replicas, wakes on the next request")
    assert state.last_request == NOW - IDLE + 60  # kept for a successor front
    # once they have ended: nothing is submitted, the service stays idle
    ended = [r.model_copy(update={"state": "STOPPED", "slurm_state": "ENDED"})
             for r in state.replicas]  # fmt: skip
    actions, state = tick(ended, routed=set(), s=idling(), previous=state, now=NOW + 200)
    assert actions == [] and state.replicas == () and state.state == "IDLE"
    actions, state = tick([], routed=set(), s=idling(), previous=state, now=NOW + 90_000)
    assert actions == [] and state.state == "IDLE"


@pytest.mark.parametrize(
    "demand",
    [Demand(last_request=NOW - 1), Demand(waiting=True)],
    ids=["a-request-came", "a-request-waits"],
)
def test_a_request_while_idle_at_zero_submits_on_the_next_tick(demand: Demand) -> None:
    asleep = ServiceState(name="llama", state="IDLE", last_request=NOW - 5 * IDLE)
    actions, state = tick([], routed=set(), s=idling(), previous=asleep)
    assert actions == [] and state.state == "IDLE"
    step = decide(idling(), state, [], set(), NOW + 1, demand)
    assert step.state is not None
    assert kinds(step.actions) == [("submit", "0"), ("submit", "1")]
    assert step.state.events[-2:] == (
        "13:46:41 UTC a request woke the service: slot 0: a new replica",
        "13:46:41 UTC a request woke the service: slot 1: a new replica",
    )
    assert step.state.state == "STARTING"


def test_the_last_request_is_the_later_of_the_front_s_and_state_json_s() -> None:
    before = ServiceState(name="llama", last_request=NOW - 10)
    cases = ((Demand(last_request=NOW - 50), NOW - 10), (Demand(last_request=NOW - 5), NOW - 5),
             (Demand(), NOW - 10))  # fmt: skip
    for demand, kept in cases:
        step = decide(idling(), before, [], set(), NOW, demand)
        assert step.state is not None and step.state.last_request == kept


class Service:
    """A service with scale to zero over the World's jobs: one tick every 10 s, the
    front's last request given by ``requests`` (the times clients asked)."""

    def __init__(self, s: ServiceSpec) -> None:
        self.world, self.spec = World(), s
        self.state = ServiceState(name="llama")
        self.routed: set[str] = set()

    def says(self) -> str:
        return self.state.state

    def run(self, start: float, end: float, requests: list[float]) -> None:
        for now in range(int(start), int(end), 10):
            self.world.advance(now)
            asked = [t for t in requests if t <= now]
            demand = Demand(last_request=max(asked) if asked else None)
            observed = [self.world.observe(r) for r in self.state.replicas]
            step = decide(self.spec, self.state, observed, self.routed, now, demand)
            assert step.state is not None
            new = []
            for action in step.actions:
                if action.kind == "add":
                    self.routed.add(action.url)
                elif action.kind == "remove":
                    self.routed.discard(action.url)
                made = self.world.act(action, now)
                if made is not None:
                    new.append(made)
            self.state = step.state.model_copy(
                update={"replicas": (*step.state.replicas, *new)})  # fmt: skip


def test_replicas_stay_while_requests_keep_coming_then_idle_then_wake() -> None:
    svc = Service(idling(idle_seconds=300.0))
    every_minute = [NOW + 60 * m for m in range(60)]
    svc.run(NOW, NOW + 3600, every_minute)
    assert svc.state.state == "UP" and len(svc.routed) == 2
    assert not any("drains: idle" in e for e in svc.state.events)  # handovers only
    # no request after the last one (NOW + 3540): idle 300 s later, all gone
    svc.run(NOW + 3600, NOW + 4000, every_minute)
    assert svc.says() == "IDLE" and svc.routed == set() and svc.world.alive() == 0
    assert sum("drains: idle for 5m" in e for e in svc.state.events) == 2
    # a request wakes it: READY again within a minute of stand-in SLURM
    svc.run(NOW + 4000, NOW + 4060, [*every_minute, NOW + 4000])
    assert svc.state.state == "UP" and len(svc.routed) == 2
    assert sum("a request woke the service" in e for e in svc.state.events) == 2


def test_a_new_service_starts_its_replicas_and_idles_only_after_they_served() -> None:
    svc = Service(idling(idle_seconds=60.0))
    svc.run(NOW, NOW + 90, [])  # no request ever: the replicas load (40 s), then serve
    assert svc.state.state == "UP" and len(svc.routed) == 2
    svc.run(NOW + 90, NOW + 200, [])
    assert svc.says() == "IDLE" and svc.routed == set()


def test_a_loading_replica_is_not_drained_for_idleness_and_serves_the_idle_time() -> None:
    """A request that gave up waiting (its replica loads longer than the cold-start
    wait) leaves a replica that still serves the client's retry."""
    loading = rep("3", 0, state="LOADING", since=NOW - 500)
    long_ago = ServiceState(name="llama", replicas=(loading,), last_request=NOW - 5 * IDLE)
    s = idling(replicas=1)
    actions, state = tick([loading], routed=set(), s=s, previous=long_ago)
    assert actions == [] and state.state == "STARTING"
    ready = rep("3", 0)  # READY now: it serves the idle time before it idles
    actions, state = tick([ready], routed=set(), s=s, previous=state, now=NOW + 10)
    assert kinds(actions) == [("add", "http://10.0.0.3:8000")] and state.state == "UP"
    actions, state = tick(list(state.replicas), s=s, previous=state, now=NOW + IDLE)
    assert actions == []
    actions, state = tick(list(state.replicas), s=s, previous=state, now=NOW + IDLE + 20)
    assert kinds(actions) == [("remove", "http://10.0.0.3:8000"), ("drain", "3")]


def test_an_idle_minimum_of_one_keeps_slot_0_and_its_replacement_wakes_nothing() -> None:
    s = idling(replicas=3, min_replicas=1)
    served = [rep("1", 0, since=NOW - 9000), rep("2", 1, since=NOW - 9000),
              rep("3", 2, since=NOW - 9000)]  # fmt: skip
    quiet = ServiceState(name="llama", replicas=tuple(served), last_request=NOW - 9000)
    actions, state = tick(served, s=s, previous=quiet)
    assert [k for k in kinds(actions) if k[0] != "remove"] == [("drain", "2"), ("drain", "3")]
    assert state.message == "idle: 1/3 replicas READY, all 3 on the next request"
    # slot 0 lost while idle: its replacement loads, the other slots stay empty
    lost = rep("1", 0, state="FAILED", message="NODE_FAIL", ever_ready=True)
    actions, state = tick([lost], routed=set(), s=s, previous=state.model_copy(
        update={"replicas": (lost,)}), now=NOW + 10)  # fmt: skip
    assert kinds(actions) == [("submit", "0")]


@pytest.mark.parametrize("least", [None, 2])
def test_a_service_whose_minimum_is_its_count_never_idles(least: int | None) -> None:
    served = [rep("1", 0, since=NOW - 9 * IDLE), rep("2", 1, since=NOW - 9 * IDLE)]
    quiet = ServiceState(name="llama", replicas=tuple(served), last_request=NOW - 9 * IDLE)
    actions, state = tick(served, s=spec(min_replicas=least), previous=quiet)
    assert actions == [] and state.state == "UP"


def test_a_request_that_waits_in_vain_hears_what_the_service_is_doing() -> None:
    pending = rep("7", 0, state="PENDING", since=NOW - 95,
                  message="waiting for an allocation (Resources)")  # fmt: skip
    loading = rep("8", 1, state="LOADING", since=NOW - 240, message="loading the model")
    state = ServiceState(name="llama", state="STARTING", replicas=(pending, loading))
    assert waking_news(state, NOW) == (
        "replica 7 (slot 0) PENDING since 13:45:05 UTC (95 s): waiting for an allocation "
        "(Resources); replica 8 (slot 1) LOADING since 13:42:40 UTC (240 s): loading the model"
    )
    backing = ServiceState(name="llama", state="BACKING_OFF", message="3 failed; next in 30 s")
    assert waking_news(backing, NOW) == "BACKING_OFF: 3 failed; next in 30 s"
    assert waking_news(ServiceState(name="llama", state="IDLE"), NOW) == (
        "a replica is being submitted"
    )
    assert waking_news(None, NOW) == "the service has not started yet"


# --- autoscaling by load: the replicas' queue, sampled, moves the count -------------------


def scaling(**changes: Any) -> ServiceSpec:
    """One replica to start with, up to three by load: one more after 60 s above 4
    waiting requests per replica, one fewer after 300 s at 2 or below."""
    return spec(**{"replicas": 1, "max_replicas": 3, "scale_up_waiting": 4.0,
                   "scale_up_seconds": 60.0, "scale_down_seconds": 300.0, **changes})  # fmt: skip


def load(
    s: ServiceSpec, state: ServiceState, now: float, queue: dict[str, float] | None,
    replicas: list[Replica] | None = None,
) -> tuple[list[Action], ServiceState, str | None]:  # fmt: skip
    """One tick with ``queue`` read from the replicas; the state as the controller writes
    it (a submitted replica joins it, PENDING)."""
    observed = list(state.replicas) if replicas is None else replicas
    routed = {str(r.url) for r in observed if r.ready and not r.leaving}
    step = decide(s, state, observed, routed, now, queue=queue)
    assert step.state is not None
    made = [rep(f"n{a.slot}", a.slot, state="PENDING", submitted_at=now, since=now)
            for a in step.actions if a.kind == "submit"]  # fmt: skip
    after = step.state.model_copy(update={"replicas": (*step.state.replicas, *made)})
    return step.actions, after, step.scaled


def said(state: ServiceState) -> list[str]:
    return [e.split(" UTC ", 1)[1] for e in state.events]


def test_a_queue_above_the_threshold_for_the_window_adds_one_replica_not_before() -> None:
    s = scaling()
    state = ServiceState(name="llama", replicas=(rep("1", 0),))
    for t in range(0, 60, 5):  # 7 waiting for 55 s: not yet
        actions, state, scaled = load(s, state, NOW + t, {"1": 7.0})
        assert actions == [] and scaled is None, t
        assert state.scaling.run is not None and state.scaling.run.since == NOW
    actions, state, scaled = load(s, state, NOW + 60, {"1": 7.0})
    assert kinds(actions) == [("submit", "1")] and scaled == "up"
    assert said(state) == [
        "load: 7 requests waiting per replica on average over 60 s (above 4): scaling up to "
        "2 replicas",
        "slot 1: a new replica",
    ]
    assert state.wanted == 2 and state.scaling.replicas == 2 and state.scaling.run is None
    assert state.scaling.last == state.events[0]
    assert (state.state, state.message) == ("DEGRADED", "1/2 replicas READY")


def test_the_average_over_the_run_is_said_and_every_sample_must_be_above() -> None:
    s = scaling()
    state = ServiceState(name="llama", replicas=(rep("1", 0),))
    for t, waiting in zip(range(0, 65, 5), [5, 9, 5, 9, 5, 9, 5, 9, 5, 9, 5, 9, 5], strict=True):
        _, state, _ = load(s, state, NOW + t, {"1": float(waiting)})
    assert said(state)[0].startswith("load: 6.8 requests waiting per replica on average over 60 s")


def test_no_more_replicas_while_the_new_one_loads_and_never_past_the_maximum() -> None:
    s = scaling()
    one = rep("1", 0)
    state = ServiceState(name="llama", replicas=(one,),
                         scaling=Scaling(replicas=2, base=1))  # fmt: skip
    loading = rep("2", 1, state="LOADING")
    for t in range(0, 600, 5):  # the queue stays long while slot 1 loads: nothing more
        actions, state, _ = load(s, state, NOW + t, {"1": 9.0}, [one, loading])
        assert actions == [], t
    assert state.scaling.run is None and state.wanted == 2
    two = [one, rep("2", 1)]  # READY: the count starts again from here
    for t in range(600, 660, 5):
        actions, state, _ = load(s, state, NOW + t, {"1": 9.0, "2": 9.0}, two)
        assert actions == [], t
    actions, state, _ = load(s, state, NOW + 660, {"1": 9.0, "2": 9.0}, two)
    assert kinds(actions) == [("submit", "2")] and state.wanted == 3
    three = [*two, rep("3", 2)]
    for t in range(700, 2000, 5):  # at the maximum: the queue may stay long
        actions, state, scaled = load(s, state, NOW + t, {"1": 9.0, "2": 9.0, "3": 9.0}, three)
        assert actions == [] and scaled is None, t
    assert state.wanted == 3 and sum("scaling up" in e for e in said(state)) == 1


def test_a_low_queue_for_the_longer_window_drains_the_replica_that_ends_first() -> None:
    """Slot 1's replica ends first: it drains, and the top slot's replica takes slot 1
    (the replicas that serve longest stay: the next handover is furthest off)."""
    s = scaling()
    replicas = [rep("1", 0, ends_at=NOW + 5000), rep("2", 1, ends_at=NOW + 2000, generation=3),
                rep("3", 2, ends_at=NOW + 7000)]  # fmt: skip
    state = ServiceState(name="llama", replicas=tuple(replicas),
                         scaling=Scaling(replicas=3, base=1))  # fmt: skip
    idle = {"1": 0.0, "2": 1.0, "3": 2.0}  # 1 per replica: at most half the threshold
    for t in range(0, 300, 5):
        actions, state, _ = load(s, state, NOW + t, idle)
        assert actions == [], t
    actions, state, scaled = load(s, state, NOW + 300, idle)
    assert scaled == "down"
    assert kinds(actions) == [("remove", "http://10.0.0.2:8000"), ("drain", "2")]
    assert actions[-1].reason == "scale down"
    assert said(state) == [
        "load: 1 request waiting per replica on average over 300 s (at most 2): scaling "
        "down to 2 replicas",
        "replica 3 moves from slot 2 to slot 1: replica 2 ends first",
        "replica 2 (slot 2) drains: scaled to 2",
    ]
    slots = {r.job_id: (r.slot, r.generation, r.role) for r in state.replicas}
    assert slots == {"1": (0, 1, "serving"), "2": (2, 3, "draining"), "3": (1, 4, "serving")}
    assert state.wanted == 2 and (state.state, state.message) == ("UP", "2/2 replicas READY")


def test_the_top_slot_drains_when_it_ends_first_and_never_below_the_minimum() -> None:
    s = scaling()
    replicas = [rep("1", 0, ends_at=NOW + 5000), rep("2", 1, ends_at=NOW + 2000)]
    state = ServiceState(name="llama", replicas=tuple(replicas),
                         scaling=Scaling(replicas=2, base=1))  # fmt: skip
    for t in range(0, 300, 5):
        _, state, _ = load(s, state, NOW + t, {"1": 0.0, "2": 0.0})
    actions, state, _ = load(s, state, NOW + 300, {"1": 0.0, "2": 0.0})
    assert kinds(actions) == [("remove", "http://10.0.0.2:8000"), ("drain", "2")]
    assert not any("moves from slot" in e for e in said(state))
    one = [rep("1", 0, ends_at=NOW + 5000)]  # slot 1's job has ended: at the minimum now
    for t in range(400, 4000, 5):
        actions, state, scaled = load(s, state, NOW + t, {"1": 0.0}, one)
        assert actions == [] and scaled is None, t
    assert state.wanted == 1 and state.state == "UP"


@pytest.mark.parametrize(
    "busy",
    [
        rep("9", 0, state="LOADING", role="successor", successor_of="1"),
        rep("9", 2, state="DRAINING", role="draining", slurm_state="RUNNING",
            drain_asked_at=NOW),
        rep("9", 2, state="STOPPED", role="ending", slurm_state="RUNNING", drain_asked_at=NOW),
    ],
    ids=["a-successor-loads", "a-replica-drains", "a-replica-ends"],
)  # fmt: skip
def test_nothing_is_decided_while_a_handover_is_under_way(busy: Replica) -> None:
    s = scaling()
    two = [rep("1", 0, ends_at=NOW + 500), rep("2", 1)]
    for waiting in (9.0, 0.0):  # neither up nor down
        state = ServiceState(name="llama", replicas=(*two, busy),
                             scaling=Scaling(replicas=2, base=1))  # fmt: skip
        for t in range(0, 900, 5):
            _, state, scaled = load(s, state, NOW + t, {"1": waiting, "2": waiting},
                                    [*two, busy])  # fmt: skip
            assert scaled is None, (waiting, t)
        assert state.scaling.run is None and state.wanted == 2
        # once it is over, the window starts then
        for t in range(900, 1300, 5):
            _, state, scaled = load(s, state, NOW + t, {"1": waiting, "2": waiting}, two)
            if scaled is not None:
                break
        assert (t, scaled) == ((960, "up") if waiting else (1200, "down"))


def test_a_flapping_queue_does_not_scale() -> None:
    s = scaling(replicas=2)
    two = (rep("1", 0), rep("2", 1))
    for pattern in ([7.0, 7.0, 7.0, 0.0], [0.0] * 11 + [7.0], [7.0] * 11 + [3.0]):
        state = ServiceState(name="llama", replicas=two)  # above, below, ...; or between
        for n in range(0, 900, 5):
            waiting = pattern[(n // 5) % len(pattern)]
            actions, state, scaled = load(s, state, NOW + n, {"1": waiting, "2": waiting})
            assert actions == [] and scaled is None, (pattern, n)
        assert not any("load:" in e for e in state.events)


@pytest.mark.parametrize(
    "changes",
    [{"max_replicas": None}, {"replicas": 2, "max_replicas": 2}, {"replicas": 2}],
    ids=["no-maximum", "maximum-is-replicas", "maximum-none-with-2"],
)
def test_a_service_whose_maximum_is_its_count_never_autoscales(changes: dict[str, Any]) -> None:
    s = scaling(**{"max_replicas": None, **changes})
    replicas = [rep(str(n + 1), n) for n in range(s.replicas)]
    state = ServiceState(name="llama", replicas=tuple(replicas))
    for queue in ({r.job_id: 50.0 for r in replicas}, {r.job_id: 0.0 for r in replicas}):
        for t in range(0, 2000, 10):
            actions, state, scaled = load(s, state, NOW + t, queue)
            assert actions == [] and scaled is None
    assert state.scaling == Scaling() and state.wanted == s.replicas


def test_a_replica_that_could_not_be_read_is_left_out_not_counted_as_zero() -> None:
    s = scaling(replicas=2)
    state = ServiceState(name="llama", replicas=(rep("1", 0), rep("2", 1)))
    for t in range(0, 65, 5):  # replica 2 never answers: 7 per replica read, not 3.5
        actions, state, _ = load(s, state, NOW + t, {"1": 7.0})
    assert kinds(actions) == [("submit", "2")]
    assert said(state)[0].startswith("load: 7 requests waiting per replica")
    # a tick or a few with no replica read go on with the run as it was
    state = ServiceState(name="llama", replicas=(rep("1", 0), rep("2", 1)))
    for t in range(0, 60, 5):
        _, state, _ = load(s, state, NOW + t, None if 15 <= t < 35 else {"1": 7.0})
    actions, state, _ = load(s, state, NOW + 60, {"2": 7.0})
    assert kinds(actions) == [("submit", "2")]
    assert said(state)[0].startswith("load: 7 requests waiting per replica on average over 60 s")
    # ... but a longer gap (none read, or no front ran) starts it again
    state = ServiceState(name="llama", replicas=(rep("1", 0), rep("2", 1)))
    for t in [0, 5, 10, *range(41, 101, 5)]:  # 31 s without a sample, from 10 to 41
        actions, state, _ = load(s, state, NOW + t, {"1": 7.0, "2": 7.0})
        assert actions == [], t
    actions, state, _ = load(s, state, NOW + 101, {"1": 7.0, "2": 7.0})
    assert kinds(actions) == [("submit", "2")]
    assert said(state)[0].startswith("load: 7 requests waiting per replica on average over 60 s")


def test_a_scale_by_hand_starts_the_load_again_from_its_count() -> None:
    s = scaling(replicas=2)  # `service scale llama 2` while the load had asked for 3
    replicas = [rep("1", 0), rep("2", 1), rep("3", 2)]
    state = ServiceState(name="llama", replicas=tuple(replicas),
                         scaling=Scaling(replicas=3, base=1, run=LoadRun(
                             side="above", since=NOW - 50, total=50.0, samples=10)))  # fmt: skip
    actions, state, _ = load(s, state, NOW, {"1": 9.0, "2": 9.0, "3": 9.0})
    assert kinds(actions) == [("remove", "http://10.0.0.3:8000"), ("drain", "3")]
    assert said(state) == ["replica 3 (slot 2) drains: scaled to 2"]
    assert state.scaling.replicas == 2 and state.scaling.base == 2
    assert state.scaling.run is None


def test_the_load_and_the_idle_rule_compose() -> None:
    """Scaled up by load, then no request for the idle time: down to the idle minimum
    (0), and a request wakes it to ``replicas`` (1), not to what the load had asked."""
    s = scaling(min_replicas=0, idle_seconds=600.0)
    assert (s.fewest, s.most) == (1, 3)
    two = [rep("1", 0, since=NOW - 700), rep("2", 1, since=NOW - 700)]
    state = ServiceState(name="llama", replicas=tuple(two), last_request=NOW - 10,
                         scaling=Scaling(replicas=2, base=1))  # fmt: skip
    for t in range(0, 300, 5):  # low load, but requests come: the load drains one
        _, state, scaled = load(s, state, NOW + t, {"1": 0.0, "2": 0.0})
    _, state, scaled = load(s, state, NOW + 300, {"1": 0.0, "2": 0.0})
    assert scaled == "down" and state.wanted == 1
    one = [rep("1", 0, since=NOW - 700)]
    for t in range(310, 1200, 10):  # at the load's minimum (1): only idleness goes lower
        actions, state, scaled = load(s, state, NOW + t, {"1": 0.0}, one)
        if actions:
            break
    assert kinds(actions) == [("remove", "http://10.0.0.1:8000"), ("drain", "1")]
    assert t == 590 and state.state == "IDLE" and state.wanted == 0
    assert state.scaling.replicas is None and state.scaling.last.endswith("to 1 replica")
    step = decide(s, state, [], set(), NOW + 2000, Demand(last_request=NOW + 1999))
    assert step.state is not None and kinds(step.actions) == [("submit", "0")]
    assert step.state.wanted == 1


def test_under_a_load_the_service_grows_one_at_a_time_then_returns_to_its_minimum() -> None:
    """The World's jobs (READY 40 s after submission), a tick every 10 s: 30 requests
    wait in all while the load lasts (spread over the READY replicas), none after."""
    world, s = World(), scaling()
    state, routed = ServiceState(name="llama"), set[str]()
    counts: list[int] = []
    for now in range(int(NOW), int(NOW + 1500), 10):
        world.advance(now)
        observed = [world.observe(r) for r in state.replicas]
        ready = [r for r in observed if r.ready and not r.leaving]
        busy = now < NOW + 500
        queue = {r.job_id: (30.0 if busy else 0.0) / len(ready) for r in ready}
        step = decide(s, state, observed, routed, now, queue=queue)
        assert step.state is not None
        new = []
        for action in step.actions:
            if action.kind == "add":
                routed.add(action.url)
            elif action.kind == "remove":
                routed.discard(action.url)
            made = world.act(action, now)
            if made is not None:
                new.append(made)
        state = step.state.model_copy(update={"replicas": (*step.state.replicas, *new)})
        counts.append(world.alive())
    decisions = [e.split(": ", 2)[2] for e in said(state) if e.startswith("load: ")]
    assert decisions == ["scaling up to 2 replicas", "scaling up to 3 replicas",
                         "scaling down to 2 replicas", "scaling down to 1 replica"]  # fmt: skip
    assert max(counts) == 3 and counts[-1] == 1 and len(routed) == 1
    assert state.state == "UP" and state.wanted == 1
