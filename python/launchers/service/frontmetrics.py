"""The front's own metrics (``GET /metrics`` on the front, with a scrape key or the
service's internal key), made with prometheus-client in a registry of the front's own,
and the summary ``vllm-hpc service metrics NAME`` prints from them.

    vllm_hpc_front_requests_total{key,route,code}           every answer (401/403/404 too)
    vllm_hpc_front_time_to_first_byte_seconds{key,route}    request in -> first byte out
    vllm_hpc_front_request_duration_seconds{key,route}      request in -> last byte out
    vllm_hpc_front_requests_in_flight                       forwarded, not yet answered
    vllm_hpc_front_requests_waiting                         of those, waiting for a replica
    vllm_hpc_front_tokens_total{key,direction}              from the answers' usage
    vllm_hpc_front_replicas{role,state}                     the controller's last tick
    vllm_hpc_front_replicas_routed                          replicas in the router
    vllm_hpc_front_handovers_total                          drains handed over, this front
    vllm_hpc_front_cold_starts_total                        requests that waited for a replica
    vllm_hpc_front_cold_start_wait_seconds                  how long they waited
    vllm_hpc_front_scale_decisions_total{direction}         the load's decisions, this front
    vllm_hpc_front_replicas_wanted                          the controller's count, last tick

``key`` is a key's label (``none`` without a valid key), ``route`` the route's pattern
(``/v1/responses/{id}``; ``other`` for anything not served), so the label sets stay few.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from launchers.observe.metrics import Histogram, histogram_quantile
from launchers.service.definition import ServiceState

PREFIX = "vllm_hpc_front_"
REQUESTS = f"{PREFIX}requests"
TTFB = f"{PREFIX}time_to_first_byte_seconds"
DURATION = f"{PREFIX}request_duration_seconds"
IN_FLIGHT = f"{PREFIX}requests_in_flight"
WAITING = f"{PREFIX}requests_waiting"
TOKENS = f"{PREFIX}tokens"
REPLICAS = f"{PREFIX}replicas"
ROUTED = f"{PREFIX}replicas_routed"
HANDOVERS = f"{PREFIX}handovers"
COLD_STARTS = f"{PREFIX}cold_starts"
COLD_START_WAIT = f"{PREFIX}cold_start_wait_seconds"
SCALE_DECISIONS = f"{PREFIX}scale_decisions"
WANTED = f"{PREFIX}replicas_wanted"
DIRECTIONS = ("up", "down")
# Every family the front exports (the dashboard's queries may name only these).
FAMILIES = (REQUESTS, TTFB, DURATION, IN_FLIGHT, WAITING, TOKENS, REPLICAS, ROUTED,
            HANDOVERS, COLD_STARTS, COLD_START_WAIT, SCALE_DECISIONS, WANTED)  # fmt: skip
NO_KEY = "none"  # the key label of a request without a valid key

TTFB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                    1800.0, 3600.0)  # fmt: skip
COLD_START_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 1200.0, 1800.0)
QUANTILES = (0.5, 0.9, 0.99)


def _none() -> Mapping[tuple[str, str], int]:
    return {}


def replica_counts(state: ServiceState | None) -> dict[tuple[str, str], int]:
    """How many replicas of ``state`` are in each (role, state). Pure."""
    counts: dict[tuple[str, str], int] = {}
    for r in state.replicas if state is not None else ():
        counts[(r.role, r.state)] = counts.get((r.role, r.state), 0) + 1
    return counts


def _zero() -> int:
    return 0


def _no_decisions() -> Mapping[str, int]:
    return {}


def _not_known() -> int | None:
    return None


class FrontMetrics:
    """The front's metrics in a registry of its own. ``replicas``, ``routed``,
    ``handovers``, ``scale_decisions`` (by direction) and ``wanted`` (None: no tick yet)
    are read at each scrape (from the controller, on its thread: plain reads of what it
    last wrote)."""

    def __init__(
        self,
        replicas: Callable[[], Mapping[tuple[str, str], int]] = _none,
        routed: Callable[[], int] = _zero,
        handovers: Callable[[], int] = _zero,
        scale_decisions: Callable[[], Mapping[str, int]] = _no_decisions,
        wanted: Callable[[], int | None] = _not_known,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge
        from prometheus_client import Histogram as PromHistogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(REQUESTS, "Answers of the front, by key label, route and "
                                "status code", ["key", "route", "code"],
                                registry=self.registry)  # fmt: skip
        self.ttfb = PromHistogram(TTFB, "Seconds from a request to the first byte of its answer",
                                  ["key", "route"], buckets=TTFB_BUCKETS,
                                  registry=self.registry)  # fmt: skip
        self.duration = PromHistogram(DURATION, "Seconds from a request to the end of its answer",
                                      ["key", "route"], buckets=DURATION_BUCKETS,
                                      registry=self.registry)  # fmt: skip
        self.in_flight = Gauge(IN_FLIGHT, "Requests forwarded and not yet answered",
                               registry=self.registry)  # fmt: skip
        self.waiting = Gauge(WAITING, "Requests waiting for a replica to be routed (a cold "
                             "start; their clients still connected)",
                             registry=self.registry)  # fmt: skip
        self.tokens = Counter(TOKENS, "Tokens in (prompt) and out (completion), from the "
                              "answers' usage", ["key", "direction"],
                              registry=self.registry)  # fmt: skip
        self.cold_starts = Counter(COLD_STARTS, "Requests that found no replica routed and "
                                   "waited for one (served or not)",
                                   registry=self.registry)  # fmt: skip
        self.cold_start_wait = PromHistogram(COLD_START_WAIT, "Seconds a request waited for a "
                                             "replica to be routed", buckets=COLD_START_BUCKETS,
                                             registry=self.registry)  # fmt: skip
        self.registry.register(_State(replicas, routed, handovers, scale_decisions, wanted))

    def answered(self, key: str, route: str, code: int) -> None:
        self.requests.labels(key, route, str(code)).inc()

    def timed(self, key: str, route: str, first_byte: float | None, total: float) -> None:
        if first_byte is not None:
            self.ttfb.labels(key, route).observe(first_byte)
        self.duration.labels(key, route).observe(total)

    def cold_started(self, waited: float) -> None:
        """A request found no replica routed and waited ``waited`` seconds for one."""
        self.cold_starts.inc()
        self.cold_start_wait.observe(waited)

    def used(self, key: str, tokens: tuple[int, int] | None) -> None:
        if tokens is None:
            return
        self.tokens.labels(key, "in").inc(tokens[0])
        self.tokens.labels(key, "out").inc(tokens[1])

    def exposition(self) -> tuple[bytes, str]:
        """The text a scrape gets, and its Content-Type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _State:
    """What the controller knows, read at scrape time."""

    def __init__(
        self,
        replicas: Callable[[], Mapping[tuple[str, str], int]],
        routed: Callable[[], int],
        handovers: Callable[[], int],
        scale_decisions: Callable[[], Mapping[str, int]] = _no_decisions,
        wanted: Callable[[], int | None] = _not_known,
    ) -> None:
        self._replicas, self._routed, self._handovers = replicas, routed, handovers
        self._decisions, self._wanted = scale_decisions, wanted

    def describe(self) -> Iterator[Any]:
        """The families, without reading the controller (the registry asks at register)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily(REPLICAS, "", labels=["role", "state"])
        yield GaugeMetricFamily(ROUTED, "")
        yield CounterMetricFamily(HANDOVERS, "")
        yield CounterMetricFamily(SCALE_DECISIONS, "", labels=["direction"])
        yield GaugeMetricFamily(WANTED, "")

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        replicas = GaugeMetricFamily(REPLICAS, "Replicas of the service by role and state, "
                                     "at the controller's last tick",
                                     labels=["role", "state"])  # fmt: skip
        for (role, state), count in sorted(self._replicas().items()):
            replicas.add_metric([role, state], count)
        yield replicas
        yield GaugeMetricFamily(ROUTED, "Replicas in the router", value=self._routed())
        yield CounterMetricFamily(HANDOVERS, "Replicas drained after a successor took "
                                  "over (since this front started)",
                                  value=self._handovers())  # fmt: skip
        decisions = CounterMetricFamily(SCALE_DECISIONS, "Replicas added (up) or drained "
                                        "(down) by the load, autoscaling (since this front "
                                        "started)", labels=["direction"])  # fmt: skip
        counted = self._decisions()
        for direction in DIRECTIONS:
            decisions.add_metric([direction], counted.get(direction, 0))
        yield decisions
        wanted = GaugeMetricFamily(WANTED, "Replicas the service wants, at the controller's "
                                   "last tick (autoscaling and idling move it)")  # fmt: skip
        known = self._wanted()
        if known is not None:  # no tick yet: no sample
            wanted.add_metric([], known)
        yield wanted


def summarize(text: str) -> dict[str, Any]:
    """What ``service metrics`` shows, from the front's exposition text (parsed with
    prometheus-client's parser): per key, requests, errors and tokens; in flight (and waiting);
    replicas by state; handovers; time-to-first-byte and duration percentiles since the
    front started. Pure."""
    from prometheus_client.parser import text_string_to_metric_families

    tally = _Tally()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            tally.take(family.name, sample.name, sample.labels, sample.value)
    out: dict[str, Any] = {**tally.single, "scale_decisions": tally.decisions}
    keys, replicas, hists = tally.keys, tally.replicas, tally.hists
    out["keys"] = keys
    out["replicas"] = replicas
    for name, title in ((TTFB, "ttfb"), (DURATION, "duration")):
        for q in QUANTILES:
            out[f"{title}_p{round(q * 100)}_s"] = histogram_quantile(q, hists[name])
    return out


# The families of one sample each (a gauge, or a counter's _total), by their summary name.
_SINGLE = {IN_FLIGHT: "in_flight", WAITING: "waiting", ROUTED: "routed",
           HANDOVERS: "handovers", COLD_STARTS: "cold_starts", WANTED: "wanted"}  # fmt: skip


class _Tally:
    """``summarize``'s sums, one sample at a time."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, float]] = {}
        self.replicas: dict[str, float] = {}
        self.hists = {TTFB: Histogram(), DURATION: Histogram()}
        # the families of one sample each, by the summary's name (wanted: None, no sample)
        self.single: dict[str, float | None] = {"in_flight": 0.0, "waiting": 0.0, "routed": 0.0,
                                                "handovers": 0.0, "cold_starts": 0.0,
                                                "wanted": None}  # fmt: skip
        self.decisions: dict[str, float] = {}

    def row(self, label: str) -> dict[str, float]:
        return self.keys.setdefault(label, {"requests": 0.0, "errors": 0.0, "tokens_in": 0.0,
                                            "tokens_out": 0.0})  # fmt: skip

    def take(self, family: str, name: str, labels: dict[str, str], value: float) -> None:
        if family in self.hists:
            hist = self.hists[family]
            if name.endswith("_bucket"):
                bound = float(labels["le"])
                hist.buckets[bound] = hist.buckets.get(bound, 0.0) + value
            elif name.endswith("_count"):
                hist.count += value
        elif family == REQUESTS and name.endswith("_total"):
            counted = self.row(labels["key"])
            counted["requests"] += value
            counted["errors"] += value if int(labels["code"]) >= 400 else 0.0
        elif family == TOKENS and name.endswith("_total"):
            self.row(labels["key"])[f"tokens_{labels['direction']}"] += value
        elif family == REPLICAS:
            self.replicas[labels["state"]] = self.replicas.get(labels["state"], 0.0) + value
        elif family in _SINGLE and name in (family, f"{family}_total"):  # not _created
            self.single[_SINGLE[family]] = value
        elif family == SCALE_DECISIONS and name.endswith("_total"):
            self.decisions[labels["direction"]] = value


def render(summary: dict[str, Any]) -> str:
    """``summarize``'s result as ``service metrics`` prints it."""

    def seconds(value: object) -> str:
        return "-" if value is None else f"{float(str(value)):.3f} s"

    table = [("KEY", "REQUESTS", "ERRORS", "TOKENS_IN", "TOKENS_OUT")]
    for label, counted in sorted(summary["keys"].items()):
        columns = ("requests", "errors", "tokens_in", "tokens_out")
        table.append((label, *(f"{int(counted[c])}" for c in columns)))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table]
    states = ", ".join(f"{int(n)} {s}" for s, n in sorted(summary["replicas"].items()) if n)
    waiting = int(summary.get("waiting", 0))
    waits = f" ({waiting} waiting for a replica)" if waiting else ""
    lines += [
        f"in flight  {int(summary['in_flight'])}{waits}   routed replicas "
        f"{int(summary['routed'])}   "
        f"handovers {int(summary['handovers'])} (this front)   "
        f"cold starts {int(summary.get('cold_starts', 0))}",
        f"replicas   {states or 'none'}",
    ]
    decided = summary.get("scale_decisions") or {}
    if summary.get("wanted") is not None:
        lines[-1] += f"   wanted {int(summary['wanted'])}"
    if any(decided.values()):
        lines[-1] += (f"   scaled up {int(decided.get('up', 0))}, down "
                      f"{int(decided.get('down', 0))} (this front)")  # fmt: skip
    for title, name in (("first byte", "ttfb"), ("duration", "duration")):
        parts = "  ".join(f"p{p} {seconds(summary[f'{name}_p{p}_s'])}" for p in (50, 90, 99))
        lines.append(f"{title:<10} {parts}  (since the front started)")
    return "\n".join(lines)
