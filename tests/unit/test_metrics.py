from __future__ import annotations

import pytest

from launchers.observe.metrics import (
    Histogram,
    histogram_quantile,
    parse_metrics,
    render_summary,
    summarize,
)


def exposition(gen: float, ttft_counts: tuple[int, int, int], running: int = 1) -> str:
    """A /metrics excerpt as vLLM's prometheus_client writes it: two engines (DP ranks),
    labelled series, counters typed under their ``_total`` name with a ``_created`` gauge."""
    lines = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        f'vllm:num_requests_running{{engine="0",model_name="tiny"}} {running}',
        f'vllm:num_requests_running{{engine="1",model_name="tiny"}} {running}',
        "# TYPE vllm:num_requests_waiting gauge",
        'vllm:num_requests_waiting{engine="0",model_name="tiny"} 2.0',
        "# TYPE vllm:kv_cache_usage_perc gauge",
        'vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25',
        'vllm:kv_cache_usage_perc{engine="1",model_name="tiny"} 0.75',
        "# TYPE vllm:generation_tokens_total counter",
        f'vllm:generation_tokens_total{{engine="0",model_name="tiny"}} {gen}',
        "# TYPE vllm:generation_tokens_created gauge",
        'vllm:generation_tokens_created{engine="0",model_name="tiny"} 1.7e9',
        "# TYPE vllm:prompt_tokens_total counter",
        'vllm:prompt_tokens_total{engine="0",model_name="tiny"} 100.0',
        "# TYPE vllm:time_to_first_token_seconds histogram",
    ]
    a, b, c = ttft_counts
    for le, count in (("0.1", a), ("0.5", a + b), ("1.0", a + b + c), ("+Inf", a + b + c)):
        lines.append(
            f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="{le}",model_name="tiny"}} '
            f"{count}"
        )
    lines += [
        f'vllm:time_to_first_token_seconds_count{{engine="0",model_name="tiny"}} {a + b + c}',
        'vllm:time_to_first_token_seconds_sum{engine="0",model_name="tiny"} 3.0',
        "",
    ]
    return "\n".join(lines)


def test_parse_sums_engines_and_averages_kv_usage() -> None:
    snap = parse_metrics(exposition(50.0, (2, 2, 0), running=3))
    assert snap.values["vllm:num_requests_running"] == 6
    assert snap.values["vllm:generation_tokens"] == 50.0
    assert snap.kv_usage == [0.25, 0.75]
    hist = snap.histograms["vllm:time_to_first_token_seconds"]
    assert hist.count == 4 and hist.buckets[float("inf")] == 4


def test_quantile_interpolates_like_prometheus() -> None:
    hist = Histogram({0.1: 2.0, 0.5: 4.0, 1.0: 4.0, float("inf"): 4.0}, 4, 1.0)
    assert histogram_quantile(0.5, hist) == pytest.approx(0.1)
    assert histogram_quantile(0.75, hist) == pytest.approx(0.3)
    assert histogram_quantile(0.5, Histogram({float("inf"): 0.0})) is None


def test_summary_rates_over_the_window() -> None:
    before = parse_metrics(exposition(50.0, (2, 0, 0)))
    now = parse_metrics(exposition(70.0, (2, 0, 2)))
    summary = summarize(now, before, 2.0)
    assert summary["generation_tokens_per_s"] == pytest.approx(10.0)
    assert summary["prompt_tokens_per_s"] == 0.0
    assert summary["kv_cache_usage"] == pytest.approx(0.5)
    # Only the two requests of the window count: both between 0.5 s and 1.0 s.
    assert 0.5 < float(str(summary["ttft_p50_s"])) <= 1.0
    text = render_summary(summary)
    assert "generation 10.0" in text and "50.0% used" in text and "TTFT" in text


def test_summary_without_a_window_has_no_rates() -> None:
    summary = summarize(parse_metrics(exposition(5.0, (1, 0, 0))))
    assert summary["generation_tokens_per_s"] is None
    assert "generation -" in render_summary(summary)


def test_watching_a_job_gives_each_windows_rate_through_the_wait_helper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from launchers.observe.job import Job

    from .helpers.runtime import FakeClock

    scrapes = iter([exposition(100, (1, 1, 1)), exposition(300, (1, 1, 1)),
                    exposition(400, (1, 1, 1))])  # fmt: skip
    monkeypatch.setattr(Job, "metrics_text", lambda self: next(scrapes))
    clock = FakeClock()
    watch = Job("7", "/nonexistent").watch_metrics(2.0, clock=clock.clock())
    first, second = next(watch), next(watch)
    assert first["generation_tokens_per_s"] == 100.0  # 200 tokens in the first 2 s
    assert second["generation_tokens_per_s"] == 50.0  # 100 in the next 2 s
    assert clock.slept == 4.0  # two windows, slept by the helper's fake clock


def test_waiting_requests_are_summed_over_engines_and_absent_is_none() -> None:
    from launchers.observe.metrics import waiting_requests

    page = (
        exposition(50.0, (2, 2, 0))
        + 'vllm:num_requests_waiting{engine="1",model_name="tiny"} 5.0\n'
    )
    assert waiting_requests(page) == 7.0
    assert waiting_requests(page.replace("vllm:num_requests_waiting", "vllm:other")) is None
    assert waiting_requests("") is None
    assert waiting_requests("vllm:num_requests_waiting 0.0\n") == 0.0  # said, and 0
    look_alike = (
        "# TYPE vllm:num_requests_waiting_by_reason gauge\n"
        'vllm:num_requests_waiting_by_reason{reason="x"} 9\n'
    )
    assert waiting_requests(look_alike) is None
