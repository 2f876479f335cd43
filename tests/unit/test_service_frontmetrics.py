"""The front's own metrics (launchers.service.frontmetrics): what the front exports
parses with prometheus-client's parser and sums up for `vllm-hpc service metrics`, the
shipped Grafana dashboard names only what the front exports, and `service metrics NAME`
reads a running front's /metrics with the service's key."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from launchers import jobdir
from launchers.jobdir.paths import ServiceDir
from launchers.jobdir.safe import private_dir
from launchers.service import store
from launchers.service.definition import Front, Replica, ServiceState
from launchers.service.frontmetrics import (
    FAMILIES,
    NO_KEY,
    FrontMetrics,
    render,
    replica_counts,
    summarize,
)
from launchers.service.proxy import make_app

from .conftest import service_spec
from .helpers.cli import run as cli_run
from .helpers.docs import block_after

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "front.json"


def busy() -> FrontMetrics:
    """A front that has answered a few requests and knows three replicas."""
    replicas = {("serving", "READY"): 2, ("successor", "LOADING"): 1}
    metrics = FrontMetrics(replicas=lambda: replicas, routed=lambda: 2, handovers=lambda: 3,
                           scale_decisions=lambda: {"up": 2, "down": 1},
                           wanted=lambda: 3)  # fmt: skip
    for _ in range(3):
        metrics.answered("alice", "/v1/chat/completions", 200)
        metrics.timed("alice", "/v1/chat/completions", 0.2, 1.5)
    metrics.used("alice", (30, 12))
    metrics.answered("bob", "/v1/completions", 502)
    metrics.timed("bob", "/v1/completions", None, 0.01)
    metrics.answered("none", "other", 404)
    metrics.in_flight.inc()
    metrics.in_flight.inc()
    metrics.waiting.inc()  # of the two in flight, one waits for a replica
    metrics.cold_started(12.0)
    metrics.cold_started(30.5)
    return metrics


def test_the_exposition_parses_and_sums_up() -> None:
    text = busy().exposition()[0].decode()
    families = {f.name for f in text_string_to_metric_families(text)}
    assert set(FAMILIES) <= families
    summary = summarize(text)
    assert summary["keys"] == {
        "alice": {"requests": 3.0, "errors": 0.0, "tokens_in": 30.0, "tokens_out": 12.0},
        "bob": {"requests": 1.0, "errors": 1.0, "tokens_in": 0.0, "tokens_out": 0.0},
        "none": {"requests": 1.0, "errors": 1.0, "tokens_in": 0.0, "tokens_out": 0.0},
    }
    assert summary["replicas"] == {"READY": 2.0, "LOADING": 1.0}
    assert (summary["in_flight"], summary["waiting"]) == (2.0, 1.0)
    assert (summary["routed"], summary["handovers"], summary["cold_starts"]) == (2.0, 3.0, 2.0)
    assert 0.1 < summary["ttfb_p50_s"] <= 0.25  # three at 0.2 s: inside the (0.1, 0.25] bucket
    assert 1.0 < summary["duration_p99_s"] <= 2.5
    lines = render(summary).splitlines()
    assert lines[0].split() == ["KEY", "REQUESTS", "ERRORS", "TOKENS_IN", "TOKENS_OUT"]
    assert lines[1].split() == ["alice", "3", "0", "30", "12"]
    assert "1 LOADING, 2 READY" in render(summary)
    assert "handovers 3" in render(summary)
    assert lines[4].startswith("in flight  2 (1 waiting for a replica)   routed replicas 2")
    assert "cold starts 2" in lines[4]
    assert (summary["wanted"], summary["scale_decisions"]) == (3.0, {"up": 2.0, "down": 1.0})
    assert "wanted 3   scaled up 2, down 1 (this front)" in render(summary)


def test_scale_decisions_are_counted_by_direction_and_the_wanted_count_said_once_known() -> None:
    text = FrontMetrics(scale_decisions=lambda: {"up": 1}).exposition()[0].decode()
    assert 'vllm_hpc_front_scale_decisions_total{direction="up"} 1.0' in text
    assert 'vllm_hpc_front_scale_decisions_total{direction="down"} 0.0' in text
    assert "\nvllm_hpc_front_replicas_wanted " not in text  # no tick yet: not 0
    summary = summarize(text)
    assert summary["wanted"] is None and "wanted" not in render(summary)
    text = FrontMetrics(wanted=lambda: 0).exposition()[0].decode()
    assert "\nvllm_hpc_front_replicas_wanted 0.0" in text  # an idle service wants none


def test_an_idle_front_sums_up_to_nothing_without_failing() -> None:
    summary = summarize(FrontMetrics().exposition()[0].decode())
    assert summary["keys"] == {} and summary["ttfb_p50_s"] is None
    assert "p50 -" in render(summary)
    assert summary["waiting"] == 0.0 and "waiting" not in render(summary)


def test_replicas_are_counted_by_role_and_state() -> None:
    def replica(job: str, role: str, state: str) -> Replica:
        return Replica.model_validate(
            {"job_id": job, "slot": 0, "role": role, "state": state, "submitted_at": 0.0}
        )

    state = ServiceState(name="x", replicas=(replica("1", "serving", "READY"),
                                             replica("2", "serving", "READY"),
                                             replica("3", "draining", "DRAINING")))  # fmt: skip
    assert replica_counts(state) == {("serving", "READY"): 2, ("draining", "DRAINING"): 1}
    assert replica_counts(None) == {}


# --- the Grafana dashboard --------------------------------------------------------------------


def exported() -> dict[str, set[str]]:
    """Every sample name the front exports, with the labels it carries."""
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(busy().exposition()[0].decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_the_dashboard_is_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 6
    for p in dashboard["panels"]:
        assert p["type"] in ("timeseries", "stat", "bargauge", "table")
        grid = p["gridPos"]
        assert set(grid) == {"x", "y", "w", "h"} and grid["x"] + grid["w"] <= 24
        assert p["targets"] and all(t["refId"] and t["expr"] for t in p["targets"])
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for expr in expressions():
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
        assert set(re.findall(r"\$(\w+)", expr)) <= variables | {"__rate_interval", "__range"}


def test_the_dashboard_asks_only_for_what_the_front_exports() -> None:
    names = exported()
    used: set[str] = set()
    for expr in expressions():
        for name in re.findall(r"vllm_hpc_front_\w+", expr):
            assert name in names, f"{name} is not exported by the front ({expr})"
            used.add(name)
        labels = set(re.findall(r"(?:by \(|, )(\w+)(?=[,)])", expr))
        labels |= set(re.findall(r"(\w+)\s*(?:=~|!=|=)\s*\"", expr))
        metric_labels = set().union(*(names[n] for n in re.findall(r"vllm_hpc_front_\w+", expr)))
        # `service` comes from the scrape job, `le` from the histogram
        assert labels <= metric_labels | {"service", "le"}, (expr, labels - metric_labels)
    families = {name.removesuffix("_total").removesuffix("_bucket") for name in used}
    assert families >= set(FAMILIES)  # every family has a panel


# --- `vllm-hpc service metrics NAME` --------------------------------------------------------


@pytest.fixture
def a_running_front(tmp_path: Path) -> Iterator[Path]:
    """A service directory whose front.json names a real front (the proxy, no router
    behind it) on loopback, running on a thread; yields the job root."""
    directory = tmp_path / "services" / "llama"
    private_dir(directory, "service directory")
    key_file = ServiceDir(str(directory)).key
    jobdir.ensure_secret(key_file, "service key")
    store.write_spec(str(directory), service_spec(key_file=key_file))
    key = Path(key_file).read_text().strip()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []
    runner = web.AppRunner(make_app("http://127.0.0.1:9", key, healthy=lambda: True))

    async def serve() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.append(int(runner.addresses[0][1]))
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    assert ready.wait(10)
    url = f"http://127.0.0.1:{port[0]}"
    store.write_front(str(directory), Front(url=f"{url}/v1", host="127.0.0.1", port=port[0],
                                            hostname="here", pid=1, started_at=time.time(),
                                            heartbeat=time.time()))  # fmt: skip
    try:
        yield tmp_path
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_service_metrics_reads_the_fronts_metrics_with_the_services_key(
    a_running_front: Path,
) -> None:
    code, out, err = cli_run(["service", "metrics", "llama", "--job-root", str(a_running_front),
                              "--json"])  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary) >= {"keys", "replicas", "in_flight", "handovers", "ttfb_p50_s"}
    code, out, _ = cli_run(["service", "metrics", "llama", "--job-root", str(a_running_front)])
    assert code == 0 and out.splitlines()[0].split()[0] == "KEY"
    # the scrape itself was counted, under the key that made it
    assert "default" in out


def test_the_metrics_summary_in_the_docs_is_what_service_metrics_prints() -> None:
    """docs/services.md shows `service metrics` of the idle service after a morning's use:
    the front's own metrics, counted as the proxy counts them, summed up and printed."""
    metrics = FrontMetrics(replicas=dict, routed=lambda: 0, handovers=lambda: 0,
                           wanted=lambda: 0)  # fmt: skip
    chat = "/v1/chat/completions"
    for key, times, first, total, tokens in (("alice", 212, 0.31, 2.4, (412, 187)),
                                             ("bob", 57, 0.28, 1.9, (903, 240))):  # fmt: skip
        for _ in range(times):
            metrics.answered(key, chat, 200)
            metrics.timed(key, chat, first, total)
        metrics.used(key, (times * tokens[0], times * tokens[1]))
    for _ in range(2):
        metrics.answered("bob", chat, 400)
        metrics.timed("bob", chat, 0.02, 0.02)
    metrics.answered("alice", chat, 200)  # the request that woke the service
    metrics.timed("alice", chat, 95.4, 97.1)
    metrics.used("alice", (35, 120))
    metrics.cold_started(95.2)
    for _ in range(3):
        metrics.answered(NO_KEY, chat, 401)
    for _ in range(1322):
        metrics.answered("prom", "/metrics", 200)
    metrics.answered("default", "/metrics", 200)  # `service metrics` itself
    shown = render(summarize(metrics.exposition()[0].decode())) + "\n"
    assert shown == block_after("services.md", "of the idle `chat` service")
