"""vLLM's ``/metrics`` read with a maintained Prometheus text parser (prometheus_client),
summed over engines (DP ranks, API servers), and turned into what an operator reads:
requests running/waiting, KV-cache usage, token throughput, latency percentiles.

``parse_metrics``, ``histogram_quantile`` and ``summarize`` are pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"
PROMPT_TOKENS = "vllm:prompt_tokens"
GENERATION_TOKENS = "vllm:generation_tokens"
SUCCESS = "vllm:request_success"
TTFT = "vllm:time_to_first_token_seconds"
E2E = "vllm:e2e_request_latency_seconds"
ITL = "vllm:inter_token_latency_seconds"
HISTOGRAMS = (TTFT, E2E, ITL)
QUANTILES = (0.5, 0.9, 0.99)


@dataclass
class Histogram:
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative
    count: float = 0.0
    total: float = 0.0


@dataclass
class MetricsSnapshot:
    """Gauges and counters summed over label sets (KV usage: averaged), histograms merged."""

    values: dict[str, float] = field(default_factory=dict)
    kv_usage: list[float] = field(default_factory=list)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    series: int = 0


def parse_metrics(text: str) -> MetricsSnapshot:
    from prometheus_client.parser import text_string_to_metric_families

    snap = MetricsSnapshot()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            snap.series += 1
            name = sample.name
            if family.type == "histogram" and family.name in HISTOGRAMS:
                hist = snap.histograms.setdefault(family.name, Histogram())
                if name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    hist.buckets[bound] = hist.buckets.get(bound, 0.0) + sample.value
                elif name.endswith("_count"):
                    hist.count += sample.value
                elif name.endswith("_sum"):
                    hist.total += sample.value
                continue
            if family.name == KV_USAGE:
                snap.kv_usage.append(sample.value)
                continue
            key = family.name if family.type in ("counter", "gauge") else name
            if name.endswith("_created"):
                continue
            snap.values[key] = snap.values.get(key, 0.0) + sample.value
    return snap


def waiting_requests(text: str) -> float | None:
    """vLLM's waiting requests (``vllm:num_requests_waiting``) in a ``/metrics`` page,
    summed over its engines; None when the page has none (not 0: nothing was said).
    Only that family's lines reach the parser (a page has hundreds; a service's front
    reads one from every replica every few seconds). Pure."""
    from prometheus_client.parser import text_string_to_metric_families

    def ours(line: str) -> bool:
        words = line.split(maxsplit=3)
        if line.startswith("#"):
            return len(words) > 2 and words[1] in ("HELP", "TYPE") and words[2] == WAITING
        return line.startswith((f"{WAITING}{{", f"{WAITING} "))

    kept = "\n".join(line for line in text.splitlines() if ours(line))
    values = [
        sample.value
        for family in text_string_to_metric_families(kept + "\n")
        if family.name == WAITING
        for sample in family.samples
    ]
    return sum(values) if values else None


def histogram_quantile(q: float, hist: Histogram) -> float | None:
    """The q-quantile from cumulative buckets, interpolated inside a bucket as
    Prometheus' ``histogram_quantile`` does. None without observations."""
    bounds = sorted(hist.buckets)
    if not bounds or hist.buckets[bounds[-1]] <= 0:
        return None
    total = hist.buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = hist.buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            width = count - below
            return lower + (bound - lower) * ((rank - below) / width if width else 0.0)
        lower, below = bound, count
    return lower


def _delta(
    now: MetricsSnapshot, before: MetricsSnapshot | None, name: str, seconds: float
) -> float | None:
    if before is None or seconds <= 0:
        return None
    return max(0.0, now.values.get(name, 0.0) - before.values.get(name, 0.0)) / seconds


def _window(now: Histogram, before: Histogram | None) -> Histogram:
    """Observations made between two scrapes (the whole history without ``before``)."""
    if before is None:
        return now
    buckets = {b: c - before.buckets.get(b, 0.0) for b, c in now.buckets.items()}
    return Histogram(buckets, now.count - before.count, now.total - before.total)


def summarize(
    now: MetricsSnapshot, before: MetricsSnapshot | None = None, seconds: float = 0.0
) -> dict[str, object]:
    """What ``vllm-hpc metrics`` shows. Rates and percentiles cover the window between the
    two scrapes when ``before`` is given, else everything since the server started."""
    out: dict[str, object] = {
        "requests_running": now.values.get(RUNNING, 0.0),
        "requests_waiting": now.values.get(WAITING, 0.0),
        "kv_cache_usage": (sum(now.kv_usage) / len(now.kv_usage)) if now.kv_usage else None,
        "prompt_tokens_total": now.values.get(PROMPT_TOKENS, 0.0),
        "generation_tokens_total": now.values.get(GENERATION_TOKENS, 0.0),
        "requests_finished_total": now.values.get(SUCCESS, 0.0),
        "prompt_tokens_per_s": _delta(now, before, PROMPT_TOKENS, seconds),
        "generation_tokens_per_s": _delta(now, before, GENERATION_TOKENS, seconds),
    }
    labels = {TTFT: "ttft", E2E: "e2e_latency", ITL: "inter_token_latency"}
    for name, label in labels.items():
        hist = now.histograms.get(name)
        if hist is None:
            continue
        window = _window(hist, before.histograms.get(name) if before else None)
        if window.count <= 0 < hist.count:
            # nothing finished in the window: the history since the server started
            window = hist
            out["percentiles_since_start"] = True
        for q in QUANTILES:
            out[f"{label}_p{round(q * 100)}_s"] = histogram_quantile(q, window)
    return out


def render_summary(summary: dict[str, object]) -> str:
    def fmt(value: object, unit: str = "") -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}{unit}" if unit == " s" else f"{value:,.1f}{unit}"
        return f"{value}{unit}"

    kv = summary.get("kv_cache_usage")
    lines = [
        f"requests   running {fmt(summary['requests_running'])}  waiting "
        f"{fmt(summary['requests_waiting'])}  finished {fmt(summary['requests_finished_total'])}",
        f"kv cache   {'-' if kv is None else f'{float(str(kv)) * 100:.1f}%'} used",
        f"tokens/s   prompt {fmt(summary['prompt_tokens_per_s'])}  generation "
        f"{fmt(summary['generation_tokens_per_s'])}  (totals {fmt(summary['prompt_tokens_total'])}"
        f" / {fmt(summary['generation_tokens_total'])})",
    ]
    for label, title in (("ttft", "TTFT"), ("e2e_latency", "latency"),
                         ("inter_token_latency", "ITL")):  # fmt: skip
        if f"{label}_p50_s" in summary:
            parts = "  ".join(f"p{p} {fmt(summary[f'{label}_p{p}_s'], ' s')}" for p in (50, 90, 99))
            lines.append(f"{title:<10} {parts}")
    if summary.get("percentiles_since_start"):
        lines.append("           (no request finished in the window: percentiles since start)")
    return "\n".join(lines)
