"""The built-in load client's summary (observe.loadtest): percentiles interpolated as
``vllm bench serve`` computes them (numpy's default), so both tools' numbers compare."""

from __future__ import annotations

import pytest

from launchers.observe.loadtest import LoadSpec, Sample, percentiles_ms, summarize_builtin


def test_percentiles_interpolate_between_ranks_as_numpy_does() -> None:
    # numpy.percentile([1..100], [50, 90, 99]) == [50.5, 90.1, 99.01]
    got = percentiles_ms([n / 1000 for n in range(1, 101)])
    assert got == {"mean": 50.5, "p50": 50.5, "p90": 90.1, "p99": 99.01}


def test_one_value_is_every_percentile_and_none_is_none() -> None:
    assert percentiles_ms([0.25]) == {"mean": 250.0, "p50": 250.0, "p90": 250.0, "p99": 250.0}
    assert percentiles_ms([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


def test_the_summary_counts_failures_and_times_each_stream() -> None:
    spec = LoadSpec(base_url="http://h:1", model="m", tokenizer="m", requests=3, output_len=3)
    ok = Sample(start=0.0, chunks=[0.1, 0.2, 0.4], end=0.4, tokens=3)
    ok2 = Sample(start=1.0, chunks=[1.3, 1.4, 1.5], end=1.5, tokens=3)
    bad = Sample(start=0.0, end=0.01, error="HTTP 401: b'no key'")
    summary = summarize_builtin([ok, bad, ok2], duration=2.0, spec=spec)
    assert (summary["completed"], summary["failed"]) == (2, 1)
    assert summary["errors"] == ["HTTP 401: b'no key'"]
    assert summary["output_throughput"] == 3.0 and summary["request_throughput"] == 1.0
    assert summary["ttft_ms"]["mean"] == pytest.approx(200.0)
    assert summary["tpot_ms"]["p50"] == pytest.approx(125.0)  # (0.4-0.1)/2, (1.5-1.3)/2
    assert summary["e2el_ms"]["p99"] == pytest.approx(499.0)
