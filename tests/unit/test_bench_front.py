"""The front benchmark's arithmetic (bench/front/run.py), on made-up runs: how long a run
is, the order of the paths, CPU per token and per request, the medians, the split of CPU
into a cost per token and one per request, the comparisons and the table."""

from __future__ import annotations

import math
from typing import Any

import pytest
from bench.front.run import (
    MAX_REQUESTS,
    comparisons,
    fits,
    markdown,
    medians,
    per_unit,
    requests_per_stream,
    rotated,
)


@pytest.mark.parametrize(
    ("pace", "concurrency", "tokens", "requests"),
    [
        (0.010, 256, 256, 3),  # 2.56 s an answer: 3 make about 6 s
        (0.010, 1, 32, 19),
        (0.0, 256, 256, 4),  # about 200,000 tokens in all
        (0.0, 1, 32, MAX_REQUESTS),
        (0.0, 256, 4096, 2),  # at least 2 whatever the size
    ],
)
def test_a_run_is_sized_by_its_pace(
    pace: float, concurrency: int, tokens: int, requests: int
) -> None:
    assert requests_per_stream(pace, concurrency, tokens) == requests


def test_each_repetition_runs_the_paths_in_another_order() -> None:
    paths = ("direct", "router", "front")
    orders = [rotated(paths, rep) for rep in range(3)]
    assert orders[0] == list(paths)
    assert {order[0] for order in orders} == set(paths)


def run(path: str, tokens_each: int, cpu: dict[str, float], *, rep: int = 0,
        tokens_per_s: float = 1000.0, ttfc: float = 10.0) -> dict[str, Any]:  # fmt: skip
    requests = 10
    row: dict[str, Any] = {
        "pace": "gpu", "path": path, "concurrency": 4, "tokens_each": tokens_each,
        "requests": requests, "failed": 0, "tokens": requests * tokens_each,
        "tokens_per_s": tokens_per_s, "ttfc_p50_ms": ttfc, "ttfc_p99_ms": 2 * ttfc,
        "latency_p50_ms": 100.0, "rep": rep,
        "cpu_s": {"upstream": 0.0, "router": 0.0, "proxy": 0.0, "client": 0.0, **cpu},
    }  # fmt: skip
    row.update(per_unit(row))
    return row


def test_cpu_is_counted_per_token_and_per_request_for_the_processes_in_the_path() -> None:
    row = run("router", 32, {"router": 0.032, "proxy": 5.0})  # the proxy idles off the path
    assert row["cpu_us_per_token"]["router"] == pytest.approx(100.0)
    assert row["cpu_ms_per_request"]["router"] == pytest.approx(3.2)
    assert "proxy" not in row["cpu_us_per_token"]


def proxy_cpu(tokens_each: int, us_per_token: float = 40.0, ms_per_request: float = 0.5) -> float:
    """CPU seconds of 10 requests of ``tokens_each`` tokens at the given costs."""
    return 10 * (tokens_each * us_per_token * 1e-6 + ms_per_request * 1e-3)


def test_the_fit_recovers_the_cost_per_token_and_per_request() -> None:
    rows = [
        run("front", size, {"proxy": proxy_cpu(size) * scale}, rep=rep)
        for size in (32, 256)
        for rep, scale in enumerate((1.0, 1.0, 3.0))  # one noisy repetition: the median
    ]
    summary = medians(rows)
    assert [r["reps"] for r in summary] == [3, 3]
    (proxy,) = [f for f in fits(summary) if f["process"] == "proxy"]
    assert proxy["us_per_token"] == pytest.approx(40.0)
    assert proxy["ms_per_request"] == pytest.approx(0.5)


def test_the_front_is_compared_with_the_router_and_the_router_with_direct() -> None:
    rows = [
        run("direct", 32, {}, tokens_per_s=1000.0, ttfc=10.0),
        run("router", 32, {}, tokens_per_s=900.0, ttfc=11.0),
        run("front", 32, {}, tokens_per_s=450.0, ttfc=16.0),
    ]
    found = {(c["path"], c["over"]): c for c in comparisons(medians(rows))}
    assert set(found) == {("front", "router"), ("router", "direct")}
    assert found["front", "router"]["tokens_per_s_ratio"] == pytest.approx(0.5)
    assert found["front", "router"]["ttfc_p50_added_ms"] == pytest.approx(5.0)
    assert found["router", "direct"]["tokens_per_s_ratio"] == pytest.approx(0.9)


def test_the_table_has_a_line_per_median_and_blank_cells_off_the_path() -> None:
    rows = [run("direct", 32, {"upstream": 0.01}), run("front", 32, {"proxy": 0.02})]
    summary = medians(rows)
    machine = {"cpus": 2, "cpu": "x", "platform": "p", "python": "3.11", "go": "go1.19",
               "vllm_router": "0.1.17", "aiohttp": "3", "uvloop": "none",
               "load_average": (0.1, 0.0, 0.0)}  # fmt: skip
    text = markdown({
        "date": "2026-12-07", "machine": machine, "load_average_after": (0.2, 0.0, 0.0),
        "settings": {"api": "chat", "stream": True, "reps": 1},
        "summary": summary, "comparisons": comparisons(summary), "fits": fits(summary),
    })  # fmt: skip
    lines = [line for line in text.splitlines() if line.startswith("| gpu | 32 | 4 |")]
    assert len(lines) == 2  # the two medians; front / direct is no comparison
    direct = lines[0].split("|")
    assert direct[4].strip() == "direct" and direct[9].strip() == ""  # no router on its path
    assert not math.isnan(summary[0]["tokens_per_s"])
