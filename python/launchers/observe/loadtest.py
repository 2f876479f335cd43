"""``vllm-hpc bench``: a load test against a job's endpoint.

Two tools, one summary:

* ``vllm bench serve`` (vLLM's own benchmark) wherever vLLM is importable: this
  Python, or the job's Python on the leader node (one ``srun --overlap`` step);
* a small built-in streaming client (threads + ``http.client``) only where it is not.

Both give the same summary dict (``summarize_vllm`` / ``summarize_builtin``): request
and token throughput and TTFT / TPOT / ITL / end-to-end latency percentiles in ms.
Building argv and reading results is pure; running them goes through ``_proc``.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

PERCENTILES = (50, 90, 99)
METRICS = ("ttft", "tpot", "itl", "e2el")
VLLM_TOOL = "vllm bench serve"
BUILTIN_TOOL = "built-in client"


@dataclass(frozen=True)
class LoadSpec:
    """What to send: ``requests`` prompts of about ``input_len`` tokens, at most
    ``concurrency`` in flight, each asking for exactly ``output_len`` tokens."""

    base_url: str  # http://host:port (no /v1)
    model: str  # the served model name
    tokenizer: str  # model path or id, for vLLM's random dataset
    requests: int = 20
    concurrency: int = 4
    input_len: int = 64
    output_len: int = 32
    seed: int = 0


def vllm_bench_argv(python: str, spec: LoadSpec, result_dir: str, result_file: str) -> list[str]:
    """``vllm bench serve`` over the OpenAI completions API with random prompts."""
    return [
        python,
        "-m",
        "vllm.entrypoints.cli.main",
        "bench",
        "serve",
        "--backend",
        "openai",
        "--base-url",
        spec.base_url,
        "--endpoint",
        "/v1/completions",
        "--model",
        spec.tokenizer,
        "--served-model-name",
        spec.model,
        "--tokenizer",
        spec.tokenizer,
        "--dataset-name",
        "random",
        f"--random-input-len={spec.input_len}",
        f"--random-output-len={spec.output_len}",
        f"--num-prompts={spec.requests}",
        f"--max-concurrency={spec.concurrency}",
        f"--seed={spec.seed}",
        "--ignore-eos",
        "--percentile-metrics",
        ",".join(METRICS),
        "--metric-percentiles",
        ",".join(str(p) for p in PERCENTILES),
        "--save-result",
        "--result-dir",
        result_dir,
        "--result-filename",
        result_file,
    ]


def _metric(raw: Mapping[str, Any], name: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {"mean": _num(raw.get(f"mean_{name}_ms"))}
    for p in PERCENTILES:
        out[f"p{p}"] = _num(raw.get(f"p{p}_{name}_ms"))
    return out


def _num(value: Any) -> float | None:
    return round(float(value), 3) if isinstance(value, int | float) else None


def summarize_vllm(raw: Mapping[str, Any], spec: LoadSpec) -> dict[str, Any]:
    """The summary from ``vllm bench serve``'s saved result JSON."""
    completed = int(raw.get("completed", 0) or 0)
    return {
        "tool": VLLM_TOOL,
        "requests": spec.requests,
        "concurrency": spec.concurrency,
        "input_len": spec.input_len,
        "output_len": spec.output_len,
        "completed": completed,
        "failed": int(raw.get("failed", spec.requests - completed) or 0),
        "duration_s": _num(raw.get("duration")),
        "request_throughput": _num(raw.get("request_throughput")),
        "output_throughput": _num(raw.get("output_throughput")),
        "total_output_tokens": int(raw.get("total_output_tokens", 0) or 0),
        **{f"{m}_ms": _metric(raw, m) for m in METRICS},
    }


# --- the built-in client -----------------------------------------------------------


@dataclass
class Sample:
    """One streamed request: when each chunk with text arrived."""

    start: float
    chunks: list[float] = field(default_factory=list)
    end: float = 0.0
    tokens: int = 0
    error: str | None = None


def percentiles_ms(values: Sequence[float]) -> dict[str, float | None]:
    """The mean and PERCENTILES of ``values`` (seconds) in ms, interpolated between the
    closest ranks as ``vllm bench serve`` does (numpy's default, ``statistics``'
    inclusive method), so the two tools' summaries compare."""
    if not values:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else []
    out: dict[str, float | None] = {"mean": round(statistics.fmean(values) * 1000, 3)}
    for p in PERCENTILES:
        out[f"p{p}"] = round((cuts[p - 1] if cuts else values[0]) * 1000, 3)
    return out


def summarize_builtin(samples: Sequence[Sample], duration: float, spec: LoadSpec) -> dict[str, Any]:
    """The summary from the built-in client's samples (times in seconds)."""
    good = [s for s in samples if s.error is None and s.chunks]
    ttft = [s.chunks[0] - s.start for s in good]
    itl = [b - a for s in good for a, b in zip(s.chunks, s.chunks[1:], strict=False)]
    tpot = [(s.end - s.chunks[0]) / (s.tokens - 1) for s in good if s.tokens > 1]
    e2el = [s.end - s.start for s in good]
    tokens = sum(s.tokens for s in good)
    return {
        "tool": BUILTIN_TOOL,
        "requests": spec.requests,
        "concurrency": spec.concurrency,
        "input_len": spec.input_len,
        "output_len": spec.output_len,
        "completed": len(good),
        "failed": len(samples) - len(good),
        "errors": sorted({s.error for s in samples if s.error})[:3],
        "duration_s": round(duration, 3),
        "request_throughput": round(len(good) / duration, 3) if duration > 0 else None,
        "output_throughput": round(tokens / duration, 3) if duration > 0 else None,
        "total_output_tokens": tokens,
        "ttft_ms": percentiles_ms(ttft),
        "tpot_ms": percentiles_ms(tpot),
        "itl_ms": percentiles_ms(itl),
        "e2el_ms": percentiles_ms(e2el),
    }


def _prompt(index: int, words: int) -> str:
    # distinct prompts (no prefix-cache hits between requests), about one token a word
    return " ".join(f"w{(index * 7919 + i) % 997}" for i in range(max(1, words)))


def _one_request(spec: LoadSpec, index: int, api_key: str | None, timeout: float) -> Sample:
    parts = urlsplit(spec.base_url)
    body = json.dumps(
        {
            "model": spec.model,
            "prompt": _prompt(index, spec.input_len),
            "max_tokens": spec.output_len,
            "min_tokens": spec.output_len,
            "ignore_eos": True,
            "stream": True,
            "temperature": 0.0,
        }
    )
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    sample = Sample(start=time.perf_counter())
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
    try:
        conn.request("POST", "/v1/completions", body=body, headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            sample.error = f"HTTP {response.status}: {response.read(200)!r}"
            return sample
        for raw in response:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            choices = json.loads(line[5:]).get("choices") or [{}]
            if choices[0].get("text"):
                sample.chunks.append(time.perf_counter())
                sample.tokens += 1
    except (OSError, ValueError, http.client.HTTPException) as exc:
        sample.error = f"{type(exc).__name__}: {exc}"
    finally:
        sample.end = time.perf_counter()
        conn.close()
    return sample


def run_builtin(spec: LoadSpec, api_key: str | None, timeout: float = 300.0) -> dict[str, Any]:
    """Send the load with ``spec.concurrency`` threads; return the summary."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=spec.concurrency) as pool:
        samples = list(
            pool.map(lambda i: _one_request(spec, i, api_key, timeout), range(spec.requests))
        )
    return summarize_builtin(samples, time.perf_counter() - start, spec)


def render(summary: Mapping[str, Any]) -> str:
    """A short table for people."""
    lines = [
        f"tool        {summary['tool']} ({summary.get('where', 'here')})",
        f"requests    {summary['completed']}/{summary['requests']} ok, "
        f"{summary['failed']} failed, concurrency {summary['concurrency']}, "
        f"input ~{summary['input_len']} / output {summary['output_len']} tokens",
        f"throughput  {summary['request_throughput']} req/s, "
        f"{summary['output_throughput']} output tok/s over {summary['duration_s']} s",
        f"{'ms':<10}  {'mean':>9} " + " ".join(f"{'p' + str(p):>9}" for p in PERCENTILES),
    ]
    for name in METRICS:
        row = summary.get(f"{name}_ms") or {}
        cells = [row.get("mean")] + [row.get(f"p{p}") for p in PERCENTILES]
        lines.append(
            f"{name.upper():<10}  "
            + " ".join(f"{'-' if v is None else format(v, '.1f'):>9}" for v in cells)
        )
    return "\n".join(lines)
