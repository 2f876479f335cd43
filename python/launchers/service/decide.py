"""The controller's decisions, pure: from the spec, the replicas as just observed, the
router's worker list and the time, what to do next.

Rules, in order:
1. A replica has ended when its job file says so (STOPPED, FAILED) and SLURM no longer
   holds its job; SLURM's word wins when they disagree (a file that says STOPPED while
   SLURM says RUNNING is a job still there: its batch step, its other ranks or the
   epilog run on; a job SLURM says ended has ended whatever its file says). An ended
   replica leaves the router and the service ("drained and ended" once, for a drained
   one). One that stops or fails on its own (its file says DRAINING, STOPPED or FAILED;
   not drained by the controller) leaves the service at once: it is ``ending`` until its
   job has ended, counts as a failure if it never became READY (one in a row more), and
   its slot is filled again. A drained or ending replica whose job is still there
   ``DRAIN_OVERDUE`` after the drain was asked (or it was seen ending) is cancelled.
2. DOWN asked: every replica is drained (READY ones: out of the router, then SLURM's
   time-limit warning so vLLM finishes what it holds) or cancelled (not READY yet); the
   service is DOWN once every one of them has ended.
3. A READY replica not draining goes into the router; a routed URL that is no replica's
   (a stranger's, or an old one) comes out.
4. Handover: a READY replica whose end is nearer than ``handover_seconds`` gets a
   successor in its slot; once the successor is READY and routed, the old one drains.
   Handovers roll, the earliest end first: while any other replica loads (a successor,
   or one that fills a slot) or drains (until its job has ended), the next successor
   waits (said once in the events, with whom it waits for), so the service asks SLURM
   for one replica's nodes more at a time (N + 1, not 2N) and one model load at a time
   shares the nodes' file systems; a replica with less than ``SERVICE_ROLLING_SHARE`` of
   the handover left gets its successor anyway.
5. Each slot ``0 .. wanted-1`` holds one live replica (a successor pair counts once):
   missing slots are submitted, unless the controller is backing off after repeated
   failures; slots past ``wanted`` drain (scaled down by hand or by the load, or the
   service idles).
6. Idle (only a service whose ``min_replicas`` is below ``replicas``): ``wanted`` is
   ``replicas`` while a request waits for a replica, or came within ``idle_seconds``, or
   a replica of a slot past the minimum loads or became READY within ``idle_seconds``
   (a replica is never drained for idleness before it has served that long, so one
   woken by a request that gave up waiting still serves the retry); otherwise the
   service is IDLE and keeps ``min_replicas``. With neither a request nor such a
   replica yet, a new service starts its replicas and an IDLE one stays IDLE. The
   front's proxy says when it last forwarded a request (``Demand``); the time is kept
   in state.json, so a new front keeps counting. Awake, the service wants ``replicas``,
   or what rule 7 last asked for; an idle one forgets that and wakes to ``replicas``.
7. Load (only a service that autoscales: ``max_replicas`` above its fewest): the
   controller reads vLLM's waiting requests from each READY replica (``Queue``, by job
   id; a replica it could not read is absent, not 0) and a sample is their average per
   replica read. Samples above ``scale_up_waiting`` in a row for ``scale_up_seconds``
   add one replica (up to ``most``); samples at most half of it in a row for
   ``scale_down_seconds`` drain one (down to ``fewest``, one at least: zero is rule
   6's). A sample between the two, or on the other side, starts the count again, so a
   flapping queue never scales; so does one that comes more than ``LOAD_GAP`` after the
   run's last (no replica read meanwhile, or no front ran). Nothing is decided, and the
   count starts again, while the service is not settled: a replica loading (a successor,
   a new slot) or leaving (until SLURM has ended its job), a slot missing, or backing
   off. Scaling down drains the replica that ends first (the soonest to need a
   successor, with its queue wait and model load): the replica of the top slot takes its
   slot. Each decision is an event with its reason; the run, the count asked for and the
   last decision are kept in state.json (``Scaling``); a ``service scale`` since
   (``replicas`` changed) starts again from the count it gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from launchers.defaults import (
    DRAIN_SECONDS,
    SERVICE_BACKOFF_MAX_SECONDS,
    SERVICE_BACKOFF_SECONDS,
    SERVICE_FAILURES_BEFORE_BACKOFF,
    SERVICE_LOAD_SAMPLE_SECONDS,
    SERVICE_ROLLING_SHARE,
    TEARDOWN_SECONDS,
)
from launchers.jobdir.jobfiles import StopWhy
from launchers.service.definition import (
    LoadRun,
    Replica,
    Scaling,
    ServiceSpec,
    ServiceState,
    event_stamp,
)

IDLE_STATE = "IDLE"

EVENTS_KEPT = 20
# A drained replica ends within vLLM's drain and the runtime's teardown; one still there
# after this long is cancelled (so is one ending on its own, this long after it was seen).
DRAIN_OVERDUE = DRAIN_SECONDS + TEARDOWN_SECONDS + 60.0
# A run of the queue's samples (rule 7) with no sample for this long starts again: what
# was not seen is not counted as above or below.
LOAD_GAP = 6 * SERVICE_LOAD_SAMPLE_SECONDS


@dataclass(frozen=True)
class Action:
    kind: Literal["add", "remove", "submit", "drain", "cancel"]
    url: str = ""  # add / remove
    job_id: str = ""  # drain / cancel
    job_dir: str = ""  # drain: where the reason goes (its leader names it as it stops)
    reason: StopWhy | None = None  # drain
    slot: int = 0  # submit
    generation: int = 1  # submit
    successor_of: str | None = None  # submit


@dataclass(frozen=True)
class Demand:
    """What the front's proxy saw of its clients (``service.activity``): when it last
    forwarded a request (epoch seconds), and whether a request waits for a replica now."""

    last_request: float | None = None
    waiting: bool = False


# vLLM's waiting requests (vllm:num_requests_waiting, summed over its engines) of the
# replicas the controller could read this tick, by job id (rule 7).
Queue = Mapping[str, float]


@dataclass
class Step:
    """What ``decide`` returns: the actions, the state to write once they are done, and
    whether the load scaled the service this tick (the front's metrics count it)."""

    actions: list[Action] = field(default_factory=list)
    state: ServiceState | None = None
    scaled: Literal["up", "down"] | None = None


def backoff_seconds(failures_in_row: int) -> float:
    """How long to wait before the next submission after ``failures_in_row`` failures."""
    over = failures_in_row - SERVICE_FAILURES_BEFORE_BACKOFF
    if over < 0:
        return 0.0
    return float(min(SERVICE_BACKOFF_SECONDS * 2**over, SERVICE_BACKOFF_MAX_SECONDS))


class _Tick:
    """One call of ``decide``: the replicas by job id, the actions, the events."""

    def __init__(
        self, spec: ServiceSpec, previous: ServiceState, routed: set[str], now: float,
        demand: Demand,
    ):  # fmt: skip
        self.spec, self.previous, self.routed, self.now = spec, previous, set(routed), now
        self.step = Step()
        self.events = list(previous.events)
        self.failures = previous.failures_in_row
        self.backoff_until = previous.backoff_until
        self.by_id: dict[str, Replica] = {}
        self.demand = demand
        asked = [t for t in (previous.last_request, demand.last_request) if t is not None]
        self.last_request = max(asked) if asked else None
        self.wanted = spec.replicas  # rule 6 sets it once the replicas are known
        self.target = spec.replicas  # awake: the spec's count, or the load's (rule 7)
        self.idle = False  # rule 6 keeps only the minimum
        self.scaling = previous.scaling

    def act(self, action: Action) -> None:
        self.step.actions.append(action)
        if action.kind == "add":  # what the router will list once this is done
            self.routed.add(action.url)
        elif action.kind == "remove":
            self.routed.discard(action.url)

    def event(self, text: str) -> None:
        self.events.append(f"{event_stamp(self.now)} {text}")

    def update(self, job_id: str, **changes: object) -> None:
        self.by_id[job_id] = self.by_id[job_id].model_copy(update=changes)

    @property
    def can_submit(self) -> bool:
        return self.backoff_until is None or self.now >= self.backoff_until

    # rule 1
    def forget_ended(self, replicas: list[Replica]) -> None:
        was = {p.job_id: p.state for p in self.previous.replicas}
        for seen in replicas:  # since when each is in its state
            moved = seen.since is None or was.get(seen.job_id, seen.state) != seen.state
            r = seen.model_copy(update={"since": self.now}) if moved else seen
            if r.url and r.url in self.routed and (r.final or r.state == "DRAINING"):
                self.act(Action("remove", url=r.url))  # it serves no more
            if r.ended:
                if r.role == "draining":
                    self.event(f"replica {r.job_id} (slot {r.slot}) drained and ended")
                elif r.role != "ending":  # an ending one was said when it began to end
                    self.lost(r)
                continue
            self.by_id[r.job_id] = r
            if not r.leaving and (r.final or r.state == "DRAINING"):
                self.lost(r)  # stopping or failed on its own; its job is still there
                self.update(r.job_id, role="ending", drain_asked_at=self.now)
        for r in list(self.by_id.values()):  # a successor whose predecessor is gone or
            before = self.by_id.get(str(r.successor_of))  # leaving holds the slot
            if r.role == "successor" and (before is None or before.leaving):
                self.update(r.job_id, role="serving", successor_of=None)
        if self.failures and any(r.ready for r in self.by_id.values()):
            self.failures, self.backoff_until = 0, None

    def lost(self, r: Replica) -> None:
        """``r`` stopped or failed without being drained: a failure if it never served."""
        if r.ever_ready:
            self.event(f"replica {r.job_id} (slot {r.slot}) was lost: {r.message}")
            return
        self.failures += 1
        self.event(f"replica {r.job_id} (slot {r.slot}) failed: {r.message}")
        pause = backoff_seconds(self.failures)
        if pause:
            self.backoff_until = self.now + pause

    def drain(self, r: Replica, why: str, reason: StopWhy | None = None) -> None:
        if r.leaving:
            overdue = r.drain_asked_at is not None and self.now - r.drain_asked_at > DRAIN_OVERDUE
            if overdue:  # the drain did not end it: cancel (again every DRAIN_OVERDUE)
                self.act(Action("cancel", job_id=r.job_id))
                self.update(r.job_id, drain_asked_at=self.now)
            return
        if r.ready:
            if r.url in self.routed:
                self.act(Action("remove", url=str(r.url)))
            self.act(Action("drain", job_id=r.job_id, job_dir=r.job_dir, reason=reason))
        else:
            self.act(Action("cancel", job_id=r.job_id))
        self.update(r.job_id, role="draining", drain_asked_at=self.now)
        self.event(f"replica {r.job_id} (slot {r.slot}) drains: {why}")

    # rule 2
    def go_down(self) -> ServiceState:
        for r in list(self.by_id.values()):
            self.drain(r, "the service is going down", "service down")
        left = tuple(self.by_id.values())
        return self.state(
            "STOPPING" if left else "DOWN",
            f"draining {len(left)} replica(s)" if left else "down",
            url=self.previous.url if left else None,
        )

    # rule 3
    def route(self) -> None:
        wanted = {str(r.url) for r in self.by_id.values() if r.ready and not r.leaving}
        for url in sorted(wanted - self.routed):
            self.act(Action("add", url=url))
        for url in sorted(self.routed - wanted):
            self.act(Action("remove", url=url))

    # rule 4
    def hand_over(self) -> None:
        for r in list(self.by_id.values()):
            if r.role == "successor" and r.ready and r.successor_of in self.by_id:
                old = self.by_id[str(r.successor_of)]
                self.drain(old, f"handed over to {r.job_id}", "handover")
                self.update(r.job_id, role="serving", successor_of=None)
        followed = {r.successor_of for r in self.by_id.values() if r.role == "successor"}
        # any model loading in the service holds the next handover back (a successor, one
        # whose predecessor ended first, a lost replica's replacement), and so does any job
        # still draining or ending: SLURM holds its nodes until it has ended
        busy = [r for r in self.by_id.values() if r.leaving or not r.ready]
        submitted = False
        window = self.spec.handover_seconds
        due = [
            r
            for r in self.by_id.values()
            if r.role == "serving" and r.ready and r.ends_at is not None
            and r.job_id not in followed and r.slot < self.wanted
            and r.ends_at - self.now <= window
        ]  # fmt: skip
        for r in sorted(due, key=lambda r: (r.ends_at or 0.0, r.slot)):
            left = (r.ends_at or 0.0) - self.now
            if not self.can_submit:
                continue
            if (busy or submitted) and left > window * SERVICE_ROLLING_SHARE:
                if busy and not submitted:  # (one submitted now: the next tick says whom)
                    self.wait_for(r, left, busy)
                continue
            self.act(Action("submit", slot=r.slot, generation=r.generation + 1,
                            successor_of=r.job_id))  # fmt: skip
            submitted = True
            self.update(r.job_id, waiting_for="")
            self.event(f"replica {r.job_id} (slot {r.slot}) ends in {left:.0f} s: successor")

    def wait_for(self, r: Replica, left: float, busy: list[Replica]) -> None:
        """Say (once for each reason, not every tick) why ``r``'s successor waits."""
        doing = {"draining": "drain", "ending": "end"}
        why = " and ".join(
            f"replica {b.job_id} (slot {b.slot}) to {doing.get(b.role, 'load')}"
            for b in sorted(busy, key=lambda b: (b.slot, b.job_id))
        )
        if why != r.waiting_for:
            self.update(r.job_id, waiting_for=why)
            self.event(f"replica {r.job_id} (slot {r.slot}) ends in {left:.0f} s: "
                       f"its successor waits for {why}")  # fmt: skip

    # rule 5
    def fill_slots(self, generations: dict[int, int]) -> None:
        holders: dict[int, list[Replica]] = {}
        for r in list(self.by_id.values()):
            if r.role == "successor" and r.slot >= self.wanted:
                self.leave_slot(r)
            elif r.role == "serving":
                holders.setdefault(r.slot, []).append(r)
        for slot, held in holders.items():
            if slot >= self.wanted:
                for r in held:
                    self.leave_slot(r)
                continue
            held.sort(key=lambda r: (not r.ready, r.submitted_at))  # keep the READY/older
            for r in held[1:]:
                self.drain(r, f"slot {slot} is already held by {held[0].job_id}", "duplicate")
        woke = self.previous.state == IDLE_STATE and self.wanted > self.spec.least
        for slot in range(self.wanted):
            if slot not in holders and self.can_submit:
                self.act(Action("submit", slot=slot, generation=generations.get(slot, 0) + 1))
                said = "a request woke the service: " if woke else ""
                self.event(f"{said}slot {slot}: a new replica")

    def leave_slot(self, r: Replica) -> None:
        """``r``'s slot is past ``wanted``: scaled down, or the service idles."""
        if r.slot >= self.target:
            self.drain(r, f"scaled to {self.target}", "scale down")
            return
        idle = _duration_text(self.spec.idle_seconds)
        last = self.last_request
        said = f"the last request at {event_stamp(last)}" if last is not None else "no request yet"
        self.drain(r, f"idle for {idle} ({said})", "idle")

    # rule 6
    def count_wanted(self) -> int:
        """How many replicas the service wants now (rule 6): ``target`` awake, its
        minimum while idle (then ``idle`` is set)."""
        spec = self.spec
        if not spec.idles or self.demand.waiting:
            return self.target
        awake = [] if self.last_request is None else [self.last_request]
        for r in self.by_id.values():
            if r.slot < spec.least or r.leaving:
                continue
            if not r.ready:
                return self.target  # loading: it serves before it idles
            awake.append(r.since if r.since is not None else r.submitted_at)
        if not awake:  # no request yet, no replica past the minimum: as it was
            self.idle = self.previous.state == IDLE_STATE
        else:
            self.idle = self.now - max(awake) >= spec.idle_seconds
        return spec.least if self.idle else self.target

    # rule 7
    def remembered_target(self) -> int:
        """The count the load asked for last (within the range), else ``replicas``."""
        spec, kept = self.spec, self.previous.scaling
        if not spec.autoscales or kept.replicas is None or kept.base != spec.replicas:
            return spec.replicas
        return min(max(kept.replicas, spec.fewest), spec.most)

    def scale_by_load(self, queue: Queue | None) -> None:
        """Rule 7: one replica more or fewer when the queue has stayed on one side of
        its thresholds for the window."""
        spec, kept = self.spec, self.previous.scaling
        if not spec.autoscales or self.idle:  # an idle service wakes to ``replicas``
            self.scaling = Scaling(base=spec.replicas if spec.autoscales else None,
                                   last=kept.last)  # fmt: skip
            return
        run = kept.run if kept.base == spec.replicas else None  # a `scale` starts again
        self.scaling = kept.model_copy(
            update={"replicas": self.target, "base": spec.replicas, "run": run})  # fmt: skip
        live = list(self.by_id.values())
        settled = (
            self.can_submit and len(live) == self.target
            and all(r.ready and r.role == "serving" and r.slot < self.target for r in live)
        )  # fmt: skip
        if not settled:  # a replica loads or leaves, a slot is missing: count again after
            self.scaling = self.scaling.model_copy(update={"run": None})
            return
        sample = self.sample(queue)
        if sample is None:  # no replica read this tick: the run goes on as it was
            return
        side: Literal["above", "below"] | None = (
            "above" if sample > spec.scale_up_waiting
            else "below" if sample <= spec.scale_down_waiting else None
        )  # fmt: skip
        gap = run is not None and run.last is not None and self.now - run.last > LOAD_GAP
        if side is None:
            run = None
        elif run is None or run.side != side or gap:
            run = LoadRun(side=side, since=self.now, last=self.now, total=sample, samples=1)
        else:
            run = run.model_copy(update={"total": run.total + sample, "samples": run.samples + 1,
                                         "last": self.now})  # fmt: skip
        self.scaling = self.scaling.model_copy(update={"run": run})
        if run is None:
            return
        lasted = self.now - run.since
        if run.side == "above" and lasted >= spec.scale_up_seconds and self.target < spec.most:
            self.rescale(1, run)
        elif (run.side == "below" and lasted >= spec.scale_down_seconds
              and self.target > spec.fewest):  # fmt: skip
            self.rescale(-1, run)

    def sample(self, queue: Queue | None) -> float | None:
        """The waiting requests per READY replica read this tick (None: none read)."""
        read = [queue[r.job_id] for r in self.by_id.values()
                if queue and r.ready and not r.leaving and r.job_id in queue]  # fmt: skip
        return sum(read) / len(read) if read else None

    def rescale(self, by: int, run: LoadRun) -> None:
        """Rule 7's decision: ``by`` (+1, -1) replicas, said with its reason."""
        spec = self.spec
        self.target += by
        self.wanted = self.target
        level = (f"above {_number(spec.scale_up_waiting)}" if by > 0
                 else f"at most {_number(spec.scale_down_waiting)}")  # fmt: skip
        average = _number(run.total / run.samples)
        requests = "request" if average == "1" else "requests"
        replicas = "replica" if self.target == 1 else "replicas"
        self.event(
            f"load: {average} {requests} waiting per replica on average over "
            f"{self.now - run.since:.0f} s ({level}): scaling {'up' if by > 0 else 'down'} "
            f"to {self.target} {replicas}"
        )
        self.scaling = self.scaling.model_copy(
            update={"replicas": self.target, "run": None, "last": self.events[-1]})  # fmt: skip
        self.step.scaled = "up" if by > 0 else "down"
        if by < 0:
            self.choose_leaver()

    def choose_leaver(self) -> None:
        """Scaling down: the replica that ends first drains (fill_slots drains the slot
        past ``target``): the replica of that slot takes the leaver's place. Keeping the
        longest-lived replicas puts the next handover (a queue wait and a model load) off
        the longest."""
        live = list(self.by_id.values())
        leaver = min(live, key=lambda r: (r.ends_at is None, r.ends_at or 0.0, -r.slot))
        top = next((r for r in live if r.slot == self.target), None)
        if top is None or top.job_id == leaver.job_id:
            return
        self.update(top.job_id, slot=leaver.slot, generation=leaver.generation + 1)
        self.update(leaver.job_id, slot=self.target)
        self.event(f"replica {top.job_id} moves from slot {self.target} to slot {leaver.slot}: "
                   f"replica {leaver.job_id} ends first")  # fmt: skip

    def summary(self) -> ServiceState:
        live = [r for r in self.by_id.values() if not r.leaving]
        ready = sum(1 for r in live if r.ready)
        wanted = self.wanted
        if not self.can_submit:
            assert self.backoff_until is not None
            last = next((e for e in reversed(self.events) if " failed: " in e), "")
            return self.state(
                "BACKING_OFF",
                f"{self.failures} replicas in a row failed before READY; next try in "
                f"{self.backoff_until - self.now:.0f} s (last: {last})",
            )
        if ready >= wanted and self.idle:
            return self.state(IDLE_STATE, idle_message(ready, self.spec.replicas))
        if ready >= wanted:
            return self.state("UP", f"{ready}/{wanted} replicas READY")
        return self.state("DEGRADED" if ready else "STARTING", f"{ready}/{wanted} replicas READY")

    def state(self, name: str, message: str, **more: object) -> ServiceState:
        return self.previous.model_copy(
            update={
                "state": name,
                "message": message,
                "replicas": tuple(self.by_id.values()),
                "failures_in_row": self.failures,
                "backoff_until": self.backoff_until,
                "events": tuple(self.events[-EVENTS_KEPT:]),
                "updated_at": self.now,
                "last_request": self.last_request,
                "wanted": self.wanted,
                "scaling": self.scaling,
                **more,
            }
        )


def _number(value: float) -> str:
    """``6``, ``6.3``, ``0``: a count of waiting requests as events say it. Pure."""
    return f"{value:.1f}".removesuffix(".0")


def _duration_text(seconds: float) -> str:
    """``30m``, ``1h30m``, ``45s``: an idle time as events say it. Pure."""
    whole = int(seconds)
    hours, minutes, secs = whole // 3600, whole % 3600 // 60, whole % 60
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "",
             f"{secs}s" if secs or not whole else ""]  # fmt: skip
    return "".join(parts)


def idle_message(ready: int, replicas: int) -> str:
    """An IDLE service's message (``service status``). Pure."""
    if ready == 0:
        return "idle: 0 replicas, wakes on the next request"
    return f"idle: {ready}/{replicas} replicas READY, all {replicas} on the next request"


def waking_news(state: ServiceState | None, now: float) -> str:
    """What a service with no replica routed is doing, for a request that waited for one
    in vain: each replica on its way (pending in SLURM's queue: SLURM's reason; loading:
    since when), else the service's own state. Pure."""
    if state is None:
        return "the service has not started yet"
    said = []
    for r in sorted(state.replicas, key=lambda r: (r.slot, r.job_id)):
        if r.leaving or r.final:
            continue
        since = "" if r.since is None else (
            f" since {event_stamp(r.since)} ({max(now - r.since, 0.0):.0f} s)")  # fmt: skip
        what = f": {r.message}" if r.message else ""
        said.append(f"replica {r.job_id} (slot {r.slot}) {r.state}{since}{what}")
    if said:
        return "; ".join(said)
    if state.state == IDLE_STATE:
        return "a replica is being submitted"
    return f"{state.state}: {state.message}" if state.message else state.state


def decide(
    spec: ServiceSpec,
    previous: ServiceState,
    replicas: list[Replica],
    routed: set[str],
    now: float,
    demand: Demand | None = None,
    queue: Queue | None = None,
) -> Step:
    """One tick of the controller. ``replicas`` are ``previous.replicas`` with their
    state just observed; ``routed`` the URLs the router lists now; ``demand`` what the
    front's proxy saw of its clients (rule 6); ``queue`` the replicas' waiting requests
    read this tick, if any (rule 7)."""
    tick = _Tick(spec, previous, routed, now, demand or Demand())
    tick.forget_ended(replicas)
    for r in list(tick.by_id.values()):
        if r.leaving:
            tick.drain(r, "")  # cancelled if the drain is overdue
    if spec.desired == "DOWN":
        tick.wanted = 0
        tick.step.state = tick.go_down()
        return tick.step
    tick.target = tick.remembered_target()
    tick.wanted = tick.count_wanted()
    tick.scale_by_load(queue)
    tick.route()
    tick.hand_over()
    tick.fill_slots({r.slot: r.generation for r in replicas})
    tick.step.state = tick.summary()
    return tick.step
