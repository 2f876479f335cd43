"""A service on the mini cluster, measured: ``make bench-service``
(``python -m bench.service.run``).

1. Front vs direct: a 1-replica service of the tiny model; vllm-hpc's built-in streaming
   load client (``launchers.observe.loadtest``) at concurrency 8, alternately through the
   front (proxy + vllm-router) and straight to the replica's own endpoint, ``--reps``
   times each: request throughput and TTFT p50.
2. Handover: a 2-replica service whose replicas have a 6-minute limit and a 5-minute
   handover, under a steady loop of chat requests through the front (the real ``openai``
   client, 4 threads): failed requests and p99 latency while both replicas are handed
   over, against the steady state before.

Results: ``bench/results/service-<date>.json`` (``front_over_direct_throughput``,
``ttft_p50_added_ms``, ``handover_failed_requests``, ``handover_p99_over_steady`` next to
the raw figures) and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openai
from tests.cluster import bed

from launchers import waits
from launchers.observe.loadtest import LoadSpec, run_builtin

REPO = Path(__file__).resolve().parents[2]


def say(text: str) -> None:
    print(f"bench-service: {text}", file=sys.stderr, flush=True)


class Bed:
    def __init__(self) -> None:
        reason = bed.cannot_host_reason()
        if reason:
            raise SystemExit(f"bench-service: this machine cannot host the mini cluster: {reason}")
        self.testenv = bed.make_testenv()
        self.model = bed.ensure_tiny_model(self.testenv, bed.state_dir() / "models" / "tiny-llama")
        state = bed.state_dir()
        if bed.cluster_node_count(state) < 3:
            bed.minicluster_down(state)
            bed.minicluster_up(state, 3)
        self.cluster = bed.MiniCluster.attach(state)
        root = self.cluster.job_root / "vllm-hpc"
        root.mkdir(parents=True, exist_ok=True)
        self.env = {**self.testenv.env, "VLLM_HPC_PYTHON": str(self.testenv.python),
                    "VLLM_HPC_JOB_ROOT": str(root)}  # fmt: skip

    def service(self, *args: str, timeout: float = 900) -> dict[str, Any]:
        cut = args.index("--") if "--" in args else len(args)
        argv = [sys.executable, "-m", "launchers", "service", *args[:cut], "--json", *args[cut:]]
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"bench-service: service {' '.join(args)}: {done.stderr[-2000:]}")
        out: dict[str, Any] = json.loads(done.stdout)
        return out

    def up(self, name: str, replicas: int, limit: str, handover: str, port: int) -> dict[str, Any]:
        return self.service(
            "up", name, "--model", str(self.model), "--nodes", "1", "--gpus-per-node", "1",
            "--partition", "debug", "--time", limit, "--handover", handover, "--replicas",
            str(replicas), "--front-port", str(port), "--wait", "--wait-timeout", "600",
            "--", "--max-model-len", "512",
        )  # fmt: skip


def key_of(row: dict[str, Any]) -> str:
    return Path(row["directory"], "key").read_text().strip()


def front_vs_direct(b: Bed, reps: int, requests: int) -> dict[str, Any]:
    row = b.up("benchfront", 1, "00:30:00", "5m", 8300)
    try:
        key = key_of(row)
        front = row["url"].removesuffix("/v1")
        direct = next(r["url"] for r in row["replicas"] if r["state"] == "READY")
        runs: dict[str, list[dict[str, Any]]] = {"front": [], "direct": []}
        spec: dict[str, Any] = {
            "model": b.model.name, "tokenizer": str(b.model), "requests": requests,
            "concurrency": 8, "input_len": 64, "output_len": 32,
        }  # fmt: skip
        run_builtin(LoadSpec(base_url=direct, **spec), key)  # warm-up, not recorded
        for i in range(reps):
            for where, base in (("front", front), ("direct", direct)):
                summary = run_builtin(LoadSpec(base_url=base, **spec), key)
                runs[where].append(summary)
                say(f"rep {i + 1} {where}: {summary['request_throughput']:.2f} req/s, "
                    f"TTFT p50 {summary['ttft_ms']['p50']:.1f} ms")  # fmt: skip
        thr = {w: statistics.median(s["request_throughput"] for s in runs[w]) for w in runs}
        ttft = {w: statistics.median(s["ttft_ms"]["p50"] for s in runs[w]) for w in runs}
        return {
            "front_over_direct_throughput": round(thr["front"] / thr["direct"], 3),
            "ttft_p50_added_ms": round(ttft["front"] - ttft["direct"], 2),
            "throughput_req_s": thr,
            "ttft_p50_ms": ttft,
            "runs": runs,
            "load": spec,
        }
    finally:
        b.service("down", "benchfront")


def handover(b: Bed) -> dict[str, Any]:
    row = b.up("benchrelay", 2, "00:06:00", "5m", 8400)
    samples: list[tuple[float, float, bool, str]] = []  # start, seconds, ok, error
    stop = threading.Event()
    client = openai.OpenAI(base_url=row["url"], api_key=key_of(row), max_retries=0)

    def loop() -> None:
        while not stop.is_set():
            start = time.time()
            try:
                client.chat.completions.create(
                    model=b.model.name, messages=[{"role": "user", "content": "Hello"}],
                    temperature=0, max_tokens=16,
                )  # fmt: skip
                samples.append((start, time.time() - start, True, ""))
            except Exception as exc:
                samples.append((start, time.time() - start, False, str(exc)[:200]))

    first = sorted(r["job_id"] for r in row["replicas"])
    threads = [threading.Thread(target=loop, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        began = ended = None
        deadline = time.time() + 600
        for _ in waits.ticks(2.0):
            status = b.service("status", "benchrelay")
            roles = {r["job_id"]: r["role"] for r in status["replicas"]}
            if began is None and any(role == "successor" for role in roles.values()):
                began = time.time()
            if began is not None and not set(first) & set(roles):
                ended = time.time()
                break
            if time.time() > deadline:
                raise SystemExit("bench-service: the handover did not finish in 600 s")
        done = time.time()
        for _ in waits.ticks(1.0):  # 20 s more of load after the handover
            if time.time() > done + 20:
                break
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        b.service("down", "benchrelay")
    assert began is not None and ended is not None
    steady = [s for s in samples if s[0] < began]
    during = [s for s in samples if began <= s[0] <= ended]

    def p99(xs: list[tuple[float, float, bool, str]]) -> float:
        values = sorted(x[1] for x in xs if x[2])
        return values[min(len(values) - 1, int(0.99 * len(values)))] * 1000 if values else 0.0

    return {
        "handover_failed_requests": sum(1 for s in during if not s[2]),
        "failed_requests_total": sum(1 for s in samples if not s[2]),
        "handover_p99_over_steady": round(p99(during) / p99(steady), 3) if steady else None,
        "steady": {"requests": len(steady), "p99_ms": round(p99(steady), 1)},
        "handover": {
            "requests": len(during),
            "p99_ms": round(p99(during), 1),
            "seconds": round(ended - began, 1),
        },
        "errors": sorted({s[3] for s in samples if not s[2]})[:10],
    }


def markdown(result: dict[str, Any]) -> str:
    f, h = result["front_vs_direct"], result["handover"]
    return "\n".join([
        f"# Service bench, {result['date']} (mini cluster, tiny model, 2 CPUs)", "",
        "| Measure | Value | Target |", "|---|---|---|",
        f"| throughput front / direct (concurrency 8) | {f['front_over_direct_throughput']} "
        "| >= 0.95 |",
        f"| TTFT p50 added by the front | {f['ttft_p50_added_ms']} ms | <= 5 ms |",
        f"| failed requests during the handover | {h['handover_failed_requests']} | 0 |",
        f"| p99 latency during / steady | {h['handover_p99_over_steady']} | <= 1.5 |",
        "",
    ])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.service.run", description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    b = Bed()
    result: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "front_vs_direct": front_vs_direct(b, args.reps, args.requests),
        "handover": handover(b),
        "cpus": os.cpu_count(),
    }
    result["front_over_direct_throughput"] = result["front_vs_direct"][
        "front_over_direct_throughput"
    ]
    result["handover_failed_requests"] = result["handover"]["handover_failed_requests"]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"service-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"service-{result['date']}.md").write_text(markdown(result))
    say(f"wrote {path}")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
