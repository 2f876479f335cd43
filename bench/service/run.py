"""A service on the mini cluster, measured: ``make bench-service``
(``python -m bench.service.run``).

1. Front vs direct: a 1-replica service of the tiny model; vllm-hpc's built-in streaming
   load client (``launchers.observe.loadtest``) at concurrency 8, alternately through the
   front (proxy + vllm-router) and straight to the replica's own endpoint, ``--reps``
   times each: request throughput, TTFT p50, and the CPU time each part (client, front,
   router, replica job) spent per request, which says where a gap comes from on a
   CPU-bound bed; then one request at a time (the hop itself, nothing queued).
2. Cold start: a 1-replica service that scales to zero (``--min-replicas 0 --idle 60s
   --cold-start-wait 10m``), ``--cold-starts`` times: wait until it is IDLE with no
   replica left (its replica drained and its job ended), then ONE streaming chat request
   through the front (the real ``openai`` client, no retry): seconds from the request to
   the first byte of its answer (the front sends nothing, not even the head, until a
   replica answers) and to the whole answer.
3. Handover: a 2-replica service whose replicas have an 18-minute limit and a 12-minute
   handover (about 5 minutes of steady state first), under a steady loop of chat
   requests through the front (the real ``openai`` client, 4 threads): failed requests
   and p99 latency while both replicas are handed over, against the steady state
   before.

Results: ``bench/results/service-<date>.json`` (``front_over_direct_throughput``,
``ttft_p50_added_ms``, ``cold_start_first_byte_s``, ``cold_start_answer_s``,
``handover_failed_requests``, ``handover_p99_over_steady`` next to the raw figures) and
``.md``.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import openai
import psutil
from tests.cluster import bed

from launchers import waits
from launchers.errors import WaitTimeout
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
        self.cpus = len(os.sched_getaffinity(0))
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

    def text(self, *args: str) -> str:
        """What a person sees: the command's plain output."""
        argv = [sys.executable, "-m", "launchers", "service", *args]
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        return done.stdout

    def up(
        self, name: str, replicas: int, limit: str, handover: str, port: int, *more: str
    ) -> dict[str, Any]:
        return self.service(
            "up", name, "--model", str(self.model), "--nodes", "1", "--gpus-per-node", "1",
            "--partition", "debug", "--time", limit, "--handover", handover, "--replicas",
            str(replicas), "--front-port", str(port), *more, "--wait", "--wait-timeout", "600",
            "--", "--max-model-len", "512",
        )  # fmt: skip


Part = str  # one of PARTS
PARTS = ("client", "front", "router", "replica")


# The router's launcher (`python -m vllm_router.launch_router`, under its guard) and the
# router once it has renamed itself.
ROUTER_NAMES = ("vllm_router", "vllm::router")


class Parts:
    """The processes of one service on the bed, by part: the bench's own (the client),
    the front, its router, and everything else in the nodes' PID namespaces (the replica
    job: slurmstepd, the runtime, vLLM and its engine)."""

    def __init__(self, b: Bed) -> None:
        self.b = b

    def now(self) -> dict[int, Part]:
        parts: dict[int, Part] = {os.getpid(): "client"}
        procs = [p for node in self.b.cluster.nodes for p in self.b.cluster.node_processes(node)]
        front = {p.pid for p in procs if "launchers service front" in p.cmdline}
        for p in procs:
            if p.pid in front:
                parts[p.pid] = "front"
            elif any(name in p.cmdline for name in ROUTER_NAMES):
                parts[p.pid] = "router"
            else:
                parts[p.pid] = "replica"
        return parts

    @staticmethod
    def cpu(pids: dict[int, Part]) -> dict[int, float]:
        seconds: dict[int, float] = {}
        for pid in pids:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            seconds[pid] = times.user + times.system
        return seconds


def measured(
    parts: Parts, run: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, float]]:
    """``run()``'s summary, and the CPU ms each part spent per request during it."""
    pids = parts.now()
    before = parts.cpu(pids)
    summary = run()
    after = parts.cpu(pids)
    spent: dict[str, float] = {}
    for pid, part in pids.items():
        if pid in before and pid in after:
            spent[part] = spent.get(part, 0.0) + after[pid] - before[pid]
    done = max(1, int(summary.get("completed", 0) or summary.get("requests", 1)))
    return summary, {part: round(1000 * s / done, 2) for part, s in sorted(spent.items())}


def key_of(row: dict[str, Any]) -> str:
    return Path(row["directory"], "key").read_text().strip()


def judged(summary: dict[str, Any], what: str) -> dict[str, Any]:
    """``summary``, or a loud stop when it has nothing to judge (no request completed)."""
    if not summary.get("completed") or summary.get("ttft_ms", {}).get("p50") is None:
        raise SystemExit(
            f"bench-service: {what}: {summary.get('failed')} of {summary.get('requests')} "
            f"requests failed, nothing to measure; errors: {summary.get('errors')}"
        )
    return summary


def front_vs_direct(b: Bed, reps: int, requests: int) -> dict[str, Any]:
    row = b.up("benchfront", 1, "00:30:00", "5m", 8300)
    try:
        key = key_of(row)
        front = row["url"].removesuffix("/v1")
        direct = next(r["url"] for r in row["replicas"] if r["state"] == "READY")
        spec: dict[str, Any] = {
            "model": b.model.name, "tokenizer": str(b.model), "requests": requests,
            "concurrency": 8, "input_len": 64, "output_len": 32,
        }  # fmt: skip
        run_builtin(LoadSpec(base_url=direct, **spec), key)  # warm-up, not recorded
        parts = Parts(b)
        runs: dict[str, list[dict[str, Any]]] = {"front": [], "direct": []}
        cpu: dict[str, list[dict[str, float]]] = {"front": [], "direct": []}
        for i in range(reps):
            for where, base in (("front", front), ("direct", direct)):
                load = LoadSpec(base_url=base, **spec)

                def one(
                    load: LoadSpec = load, what: str = f"rep {i + 1} {where}"
                ) -> dict[str, Any]:
                    return judged(run_builtin(load, key), what)

                summary, used = measured(parts, one)
                runs[where].append(summary)
                cpu[where].append(used)
                say(f"rep {i + 1} {where}: {summary['request_throughput']:.2f} req/s, "
                    f"TTFT p50 {summary['ttft_ms']['p50']:.1f} ms, {summary['failed']} failed, "
                    f"CPU ms/request {used}")  # fmt: skip
        thr = {w: statistics.median(s["request_throughput"] for s in runs[w]) for w in runs}
        ttft = {w: statistics.median(s["ttft_ms"]["p50"] for s in runs[w]) for w in runs}
        alone: dict[str, list[float]] = {"front": [], "direct": []}  # the hop, unloaded
        for i in range(reps):
            for where, base in (("front", front), ("direct", direct)):
                load = LoadSpec(base_url=base, **{**spec, "requests": 32, "concurrency": 1})
                single = judged(run_builtin(load, key), f"concurrency 1, rep {i + 1} {where}")
                alone[where].append(single["ttft_ms"]["p50"])
        ttft_alone = {w: statistics.median(alone[w]) for w in alone}
        say(f"concurrency 1: TTFT p50 front {ttft_alone['front']:.1f} ms, "
            f"direct {ttft_alone['direct']:.1f} ms")  # fmt: skip
        return {
            "ttft_p50_added_ms_concurrency_1": round(ttft_alone["front"] - ttft_alone["direct"], 2),
            "ttft_p50_ms_concurrency_1": ttft_alone,
            "front_over_direct_throughput": round(thr["front"] / thr["direct"], 3),
            "ttft_p50_added_ms": round(ttft["front"] - ttft["direct"], 2),
            "throughput_req_s": thr,
            "ttft_p50_ms": ttft,
            "failed_requests": {w: sum(s["failed"] for s in runs[w]) for w in runs},
            "cpu_ms_per_request": {
                w: {
                    p: round(statistics.median(c[p] for c in cpu[w] if p in c), 2)
                    for p in sorted({p for c in cpu[w] for p in c})
                }
                for w in cpu
            },
            "runs": runs,
            "load": spec,
        }
    finally:
        b.service("down", "benchfront")


# A service that scales to zero: idle after a minute without a request (the shortest the
# cluster tests use), and a cold-start wait far past a load here (about 40 s), so the one
# request is answered, not refused.
COLD_IDLE = "60s"
COLD_START_WAIT = "10m"
# The replica drains once the idle minute is up; the front ticks every second and forgets
# it once SLURM has ended its job: IDLE with no replica left within this.
IDLE_WITHIN = 300.0
COLD_ANSWER_TIMEOUT = 900.0  # the one request waits a whole load (and the 10 m wait)


def one_cold_request(client: openai.OpenAI, model: str) -> dict[str, Any]:
    """One streaming chat request to an idle service: seconds from sending it to the
    first byte of the answer (its head: ``create`` returns once the head is in) and to
    the end of the stream; ``error`` says why it failed ("" when answered)."""
    began = time.monotonic()
    first_byte: float | None = None
    try:
        stream = client.with_options(timeout=COLD_ANSWER_TIMEOUT).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hello"}], temperature=0,
            max_tokens=16, stream=True,
        )  # fmt: skip
        first_byte = time.monotonic() - began
        chunks = sum(1 for _ in stream)
    except Exception as exc:
        head = None if first_byte is None else round(first_byte, 2)
        return {"first_byte_s": head, "answer_s": None, "chunks": 0,
                "error": f"{type(exc).__name__}: {str(exc)[:300]}"}  # fmt: skip
    answer = time.monotonic() - began
    return {"first_byte_s": round(first_byte, 2), "answer_s": round(answer, 2),
            "chunks": chunks, "error": ""}  # fmt: skip


def cold_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The cold starts' medians (of the answered requests), the failed count and the
    samples themselves. Pure."""
    answered = [s for s in samples if not s["error"]]

    def spread(key: str) -> dict[str, float] | None:
        values = [float(s[key]) for s in answered]
        if not values:
            return None
        return {"median": round(statistics.median(values), 2), "min": min(values),
                "max": max(values)}  # fmt: skip

    return {
        "requests": len(samples),
        "failed": len(samples) - len(answered),
        "first_byte_s": spread("first_byte_s"),
        "answer_s": spread("answer_s"),
        "idle_s": spread("idle_s"),
        "samples": samples,
    }


def cold_headline(c: dict[str, Any]) -> dict[str, Any]:
    """The cold start's figures at the top of the results JSON. Pure."""
    return {
        "cold_start_first_byte_s": (c["first_byte_s"] or {}).get("median"),
        "cold_start_answer_s": (c["answer_s"] or {}).get("median"),
        "cold_start_failed_requests": c["failed"],
    }


def cold_start(b: Bed, times: int) -> dict[str, Any]:
    """``times`` cold starts of one service: each from IDLE with no replica left."""
    name = "benchcold"
    row = b.up(name, 1, "00:30:00", "5m", 8500, "--min-replicas", "0", "--idle", COLD_IDLE,
               "--cold-start-wait", COLD_START_WAIT)  # fmt: skip
    client = openai.OpenAI(base_url=row["url"], api_key=key_of(row), max_retries=0)
    samples: list[dict[str, Any]] = []
    shown: dict[str, str] = {}  # `service status`, idle and just woken (the first time)
    try:
        for i in range(times):

            def idle() -> dict[str, Any] | None:
                status = b.service("status", name)
                return status if status["state"] == "IDLE" and not status["replicas"] else None

            try:
                waited = waits.wait_for(
                    idle, what=f"service {name} IDLE with no replica left", timeout=IDLE_WITHIN,
                    interval=2.0,
                    detail=lambda: f"; last: {json.dumps(b.service('status', name))}"[:3000],
                )  # fmt: skip
            except WaitTimeout as exc:
                raise SystemExit(f"bench-service: cold start {i + 1}: {exc.one_line()}") from None
            # from the last answer (the first time: from READY) to IDLE with no replica
            went_idle = waited.seconds
            shown.setdefault("idle", b.text("status", name))
            sample = one_cold_request(client, b.model.name)
            sample["idle_s"] = round(went_idle, 1)
            samples.append(sample)
            shown.setdefault("woken", b.text("status", name))
            say(f"cold start {i + 1}: idle with no replica after {went_idle:.0f} s; first "
                f"byte {sample['first_byte_s']} s, answer {sample['answer_s']} s "
                f"{sample['error']}")  # fmt: skip
        counted = b.service("metrics", name)
    finally:
        b.service("down", name)
    summary = cold_summary(samples)
    summary["front_cold_starts"] = counted.get("cold_starts")
    summary["settings"] = {"idle": COLD_IDLE, "cold_start_wait": COLD_START_WAIT,
                           "replicas": 1, "min_replicas": 0}  # fmt: skip
    summary["status_idle"] = shown.get("idle", "")
    summary["status_woken"] = shown.get("woken", "")
    return summary


# README's rule for --handover: twice the queue wait plus the load, plus the 120 s warning.
# A successor loads in about 4.5 minutes here under the loop's 4 threads (2026-12-03), so
# 12 minutes; the limit leaves about 5 minutes of steady state before the first handover.
RELAY_LIMIT_MINUTES = 18
RELAY_HANDOVER_MINUTES = 12


def handover(b: Bed) -> dict[str, Any]:
    row = b.up("benchrelay", 2, f"00:{RELAY_LIMIT_MINUTES}:00", f"{RELAY_HANDOVER_MINUTES}m", 8400)
    samples: list[tuple[float, float, bool, str]] = []  # start, seconds, ok, error
    shown: list[str] = []  # `service status` each time the replicas' roles or states changed
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
        seen: set[tuple[tuple[str, str, str], ...]] = set()
        deadline = time.time() + 1200
        for _ in waits.ticks(2.0):
            status = b.service("status", "benchrelay")
            roles = {r["job_id"]: r["role"] for r in status["replicas"]}
            if began is None and any(role == "successor" for role in roles.values()):
                began = time.time()
            shape = tuple(
                sorted(
                    (r["job_id"], r["role"], str(r["state"] == "READY")) for r in status["replicas"]
                )
            )
            if began is not None and shape not in seen:  # what a person saw at each step
                seen.add(shape)
                shown.append(b.text("status", "benchrelay"))
            if began is not None and not set(first) & set(roles):
                ended = time.time()
                break
            if time.time() > deadline:
                raise SystemExit("bench-service: the handover did not finish in 1200 s")
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
        "status_samples": shown,
    }


def markdown(result: dict[str, Any]) -> str:
    f, h = result["front_vs_direct"], result["handover"]
    thr, ttft = f["throughput_req_s"], f["ttft_p50_ms"]
    lines = [
        f"# Service bench, {result['date']} (mini cluster, tiny model, {result['cpus']} CPUs)",
        "", "| Measure | Value | Target |", "|---|---|---|",
        f"| throughput front / direct (concurrency 8) | {f['front_over_direct_throughput']} "
        f"({thr['front']:.1f} vs {thr['direct']:.1f} req/s) | >= 0.95 |",
        f"| TTFT p50 added by the front | {f['ttft_p50_added_ms']} ms "
        f"({ttft['front']:.1f} vs {ttft['direct']:.1f} ms) | <= 5 ms |",
        f"| TTFT p50 added by the front, one request at a time | "
        f"{f['ttft_p50_added_ms_concurrency_1']} ms ({f['ttft_p50_ms_concurrency_1']['front']:.1f}"
        f" vs {f['ttft_p50_ms_concurrency_1']['direct']:.1f} ms) | - |",
        f"| failed requests, front / direct | {f['failed_requests']['front']} / "
        f"{f['failed_requests']['direct']} | 0 |",
        f"| failed requests during the handover ({h['handover']['requests']} requests, "
        f"{h['handover']['seconds']:.0f} s) | {h['handover_failed_requests']} | 0 |",
        f"| p99 latency during / steady | {h['handover_p99_over_steady']} "
        f"({h['handover']['p99_ms']:.0f} vs {h['steady']['p99_ms']:.0f} ms) | <= 1.5 |",
        "", "CPU ms per request, by part (median of the repetitions):", "",
        "| Path | " + " | ".join(PARTS) + " | total |", "|---|" + "---|" * (len(PARTS) + 1),
    ]  # fmt: skip
    for where, used in f["cpu_ms_per_request"].items():
        cells = " | ".join(str(used.get(p, "-")) for p in PARTS)
        lines.append(f"| {where} | {cells} | {round(sum(used.values()), 1)} |")
    for text in h.get("status_samples", [])[:3]:
        lines += ["", "`service status` during the handover:", "", "```", text.rstrip(), "```"]
    if result.get("cold_start"):
        lines += cold_markdown(result["cold_start"])
    return "\n".join([*lines, ""])


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def cold_markdown(c: dict[str, Any]) -> list[str]:
    """The cold start's section of the results page. Pure."""
    s = c["settings"]
    lines = [
        "", "## Cold start (scale to zero)", "",
        f"A service of {s['replicas']} replica that scales to zero (`--min-replicas "
        f"{s['min_replicas']} --idle {s['idle']} --cold-start-wait {s['cold_start_wait']}`). "
        "Before each request it was IDLE with no replica left (the replica drained and SLURM "
        "ended its job); then one streaming chat request through the front (the `openai` "
        "client, no retry). Idle after: from the last answer (the first time: from READY) "
        "to IDLE with no replica; first byte: the answer's head (the front sends nothing "
        "before a replica answers); answer: the whole stream.", "",
        "| Cold start | idle after | first byte | answer | result |", "|---|---|---|---|---|",
    ]  # fmt: skip
    for i, one in enumerate(c["samples"], 1):
        said = "ok" if not one["error"] else f"failed: {one['error'][:120]}"
        lines.append(f"| {i} | {_seconds(one.get('idle_s'))} | {_seconds(one['first_byte_s'])} "
                     f"| {_seconds(one['answer_s'])} | {said} |")  # fmt: skip
    first, answer = c["first_byte_s"] or {}, c["answer_s"] or {}
    lines += [
        f"| median of {c['requests'] - c['failed']} answered | - | "
        f"{_seconds(first.get('median'))} | {_seconds(answer.get('median'))} | "
        f"{c['failed']} failed (target 0) |",
    ]
    if c.get("front_cold_starts") is not None:
        lines += ["", f"The front counted {int(c['front_cold_starts'])} cold start(s) "
                  "(`vllm_hpc_front_cold_starts_total`)."]  # fmt: skip
    for title, key in (("idle, before the first request", "status_idle"),
                       ("just after the first cold start", "status_woken")):  # fmt: skip
        if c.get(key):
            lines += ["", f"`service status`, {title}:", "", "```text", c[key].rstrip(), "```"]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.service.run", description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--cold-starts", type=int, default=3, help="cold starts to time")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    b = Bed()
    result: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "front_vs_direct": front_vs_direct(b, args.reps, args.requests),
        "cold_start": cold_start(b, args.cold_starts),
        "handover": handover(b),
        "cpus": os.cpu_count(),
    }
    result["front_over_direct_throughput"] = result["front_vs_direct"][
        "front_over_direct_throughput"
    ]
    result["handover_failed_requests"] = result["handover"]["handover_failed_requests"]
    result.update(cold_headline(result["cold_start"]))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"service-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"service-{result['date']}.md").write_text(markdown(result))
    say(f"wrote {path}")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
