"""The service's front at line rate, on loopback: ``make bench-front``
(``python -m bench.front.run``).

A stand-in upstream in Go (``bench/front/upstream``: vLLM's chat and plain completions,
streamed as server-sent events or whole, as fast as it can or in a lock-step where every
open stream gets its next token on the same tick), the real vllm-router started with the
project's ``router_argv``, and the real proxy served as the front serves it
(``bench.front.serve_proxy``); a Go load client (``bench/front/load``). Each run sends
``concurrency`` streams of ``tokens`` tokens at one of three paths:

- direct: client -> upstream
- router: client -> vllm-router -> upstream
- front:  client -> proxy -> vllm-router -> upstream

and records tokens/s, time to first chunk p50/p99, and the CPU time of each process
(psutil: the process and its children) per streamed token and per request. Paths are
interleaved within each repetition; the upstream, router and proxy are started once per
pace. From the 32- and 256-token runs of one path, pace and concurrency, each process's
CPU per request is split into a cost per token and a cost per request (two points, a
line).

Results: ``bench/front/results/front-<date>.{json,md}`` (``--out`` elsewhere). Go is built
with ``go build``; without ``go``, the distribution's ``golang-go`` is installed with
apt-get (as root). See bench/front/README.md for what the numbers mean.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import itertools
import json
import math
import os
import platform
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from launchers import _proc, health, waits
from launchers.errors import RuntimeFailure
from launchers.service.router import LOOPBACK, router_argv

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BUILD = HERE / ".build"
PATHS = ("direct", "router", "front")
PACES = {"fast": 0.0, "gpu": 0.010}  # seconds per lock-step tick (0: as fast as it can)
PROCESSES = ("upstream", "router", "proxy", "client")
IN_PATH = {
    "direct": ("upstream", "client"),
    "router": ("upstream", "router", "client"),
    "front": ("upstream", "router", "proxy", "client"),
}
START_TIMEOUT = 60.0  # seconds for each process to open its port and route
RUN_SECONDS = 6.0  # a paced run lasts about this long (the requests per stream follow)
FAST_TOKENS = 200_000  # an unpaced run streams about this many tokens in all
MAX_REQUESTS = 500  # per stream, whatever the sizes
GO_PACKAGE = "golang-go"
PORT_BASE = 28100  # the first port tried (outside Ray's worker ports)


def say(text: str) -> None:
    print(f"bench-front: {text}", file=sys.stderr, flush=True)


# --- building the Go programs -----------------------------------------------------------


def ensure_go() -> str:
    """The ``go`` command; when missing, the distribution's golang-go installed with
    apt-get (root only)."""
    found = shutil.which("go")
    if found:
        return found
    policy = _proc.run(["apt-cache", "policy", GO_PACKAGE], timeout=60)
    if "Candidate:" not in policy.stdout or "Candidate: (none)" in policy.stdout:
        raise RuntimeFailure(
            f"no go on PATH and the distribution has no {GO_PACKAGE}",
            fix="install Go 1.19 or later and put go on PATH",
        )
    if os.geteuid() != 0:
        raise RuntimeFailure(
            "no go on PATH", fix=f"apt-get install {GO_PACKAGE} (as root), or install Go"
        )
    say(f"installing {GO_PACKAGE} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", GO_PACKAGE]
    done = _proc.run(argv, env=env, timeout=900)
    if done.returncode != 0:
        _proc.run(["apt-get", "update", "-qq"], env=env, timeout=900)
        done = _proc.run(argv, env=env, timeout=900)
    found = shutil.which("go")
    if done.returncode != 0 or not found:
        raise RuntimeFailure(f"apt-get install {GO_PACKAGE} failed: {done.stderr.strip()[-300:]}")
    return found


def build() -> tuple[Path, Path, str]:
    """``go build`` the upstream and the load client into bench/front/.build; their paths
    and Go's version."""
    go = ensure_go()
    BUILD.mkdir(exist_ok=True)
    for name in ("upstream", "load"):
        # env -C: the module's directory (go's own -C needs Go 1.20; Debian 12 has 1.19)
        done = _proc.run(
            ["env", "-C", str(HERE), go, "build", "-o", str(BUILD / name), f"./{name}"],
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeFailure(f"go build ./{name} failed: {done.stderr.strip()[-500:]}")
    version = _proc.run([go, "version"], timeout=30).stdout.strip()
    return BUILD / "upstream", BUILD / "load", version


# --- the processes ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in (root, *root.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
    except psutil.Error:
        pass
    return total


def client_cpu() -> float:
    """CPU seconds of this process's reaped children (the load client, once it ended)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Stack:
    """The upstream, vllm-router and the proxy, running on loopback at one pace."""

    children: dict[str, _proc.Child]
    urls: dict[str, str]  # the base URL of each path

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(child.pid) for name, child in self.children.items()}

    def stop(self) -> None:
        for child in reversed(self.children.values()):
            child.stop(grace=5.0)


def _wait_port(child: _proc.Child, port: int, what: str) -> None:
    health.wait_for_port(
        LOOPBACK, port, timeout=START_TIMEOUT, what=what, log=child.log_path,
        alive=lambda: child.poll() is None,
    )  # fmt: skip


def _wait_routed(url: str, key: str, what: str, log: str) -> None:
    waits.wait_for(
        lambda: waits.seen(health.http_get(f"{url}/v1/models", api_key=key).ok),
        what=f"{what} to answer /v1/models", timeout=START_TIMEOUT, log=log,
    )  # fmt: skip


@contextlib.contextmanager
def stack(upstream: Path, pace: float, work: Path, key_file: Path) -> Iterator[Stack]:
    """Start the three processes (ports picked free from PORT_BASE on); stop them after."""
    key = key_file.read_text().strip()
    env = health.without_proxies(os.environ)
    children: dict[str, _proc.Child] = {}
    try:
        up_port = health.pick_port(PORT_BASE)
        children["upstream"] = _proc.start(
            "upstream",
            [str(upstream), "-addr", f"{LOOPBACK}:{up_port}", "-pace", f"{pace * 1e3:g}ms"],
            env=env, log_path=str(work / "upstream.log"),
        )  # fmt: skip
        _wait_port(children["upstream"], up_port, "the stand-in upstream")
        up_url = f"http://{LOOPBACK}:{up_port}"
        router_port = health.pick_port(up_port + 1)
        metrics_port = health.pick_port(router_port + 1)
        children["router"] = _proc.start(
            "vllm-router", router_argv(sys.executable, router_port, metrics_port, [up_url]),
            env=env, log_path=str(work / "router.log"),
        )  # fmt: skip
        _wait_port(children["router"], router_port, "vllm-router")
        router_url = f"http://{LOOPBACK}:{router_port}"
        _wait_routed(router_url, key, "vllm-router", str(work / "router.log"))
        proxy_port = health.pick_port(metrics_port + 1)
        children["proxy"] = _proc.start(
            "proxy",
            [sys.executable, "-m", "bench.front.serve_proxy", "--port", str(proxy_port),
             "--router-url", router_url, "--key-file", str(key_file)],
            env={**env, "PYTHONPATH": os.pathsep.join(_python_path())},
            log_path=str(work / "proxy.log"), cwd=str(REPO),
        )  # fmt: skip
        _wait_port(children["proxy"], proxy_port, "the proxy")
        front_url = f"http://{LOOPBACK}:{proxy_port}"
        _wait_routed(front_url, key, "the proxy", str(work / "proxy.log"))
        made = Stack(children, {"direct": up_url, "router": router_url, "front": front_url})
    except BaseException:
        for child in reversed(children.values()):
            child.stop(grace=5.0)
        raise
    try:
        yield made
    finally:
        made.stop()


def _python_path() -> list[str]:
    """This checkout's package and the repository (for ``bench``), then what was set."""
    given = os.environ.get("PYTHONPATH", "")
    return [str(REPO / "python"), str(REPO), *(p for p in given.split(os.pathsep) if p)]


# --- one run --------------------------------------------------------------------------------


def requests_per_stream(pace: float, concurrency: int, tokens: int) -> int:
    """How many requests each stream sends one after another: a paced run lasts about
    RUN_SECONDS, an unpaced one streams about FAST_TOKENS tokens. Pure."""
    if pace > 0:
        wanted = math.ceil(RUN_SECONDS / (tokens * pace))
    else:
        wanted = math.ceil(FAST_TOKENS / (concurrency * tokens))
    return max(2, min(MAX_REQUESTS, wanted))


@dataclass(frozen=True)
class Load:
    load: Path
    key_file: Path
    chat: bool = True
    stream: bool = True

    def run(
        self, made: Stack, path: str, concurrency: int, tokens: int, requests: int
    ) -> dict[str, Any]:
        """One run of the load client at ``path``: its summary, and each process's CPU."""
        argv = [
            str(self.load), "-url", made.urls[path], "-key-file", str(self.key_file),
            "-concurrency", str(concurrency), "-tokens", str(tokens),
            "-requests", str(requests), f"-chat={str(self.chat).lower()}",
            f"-stream={str(self.stream).lower()}",
        ]  # fmt: skip
        before, client_before = made.cpu(), client_cpu()
        done = _proc.run(argv, env=health.without_proxies(os.environ), timeout=3600)
        after, client_after = made.cpu(), client_cpu()
        try:
            summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise RuntimeFailure(
                f"the load client gave no summary (exit {done.returncode}): "
                f"{done.stderr.strip()[-300:]}"
            ) from None
        cpu = {name: after[name] - before[name] for name in before}
        cpu["client"] = client_after - client_before
        return {**summary, "path": path, "tokens_each": tokens, "cpu_s": cpu}


def per_unit(row: dict[str, Any]) -> dict[str, Any]:
    """CPU µs per streamed token and ms per request of each process in the row's path.
    Pure."""
    tokens, requests = max(row["tokens"], 1), max(row["requests"] - row["failed"], 1)
    names = IN_PATH[row["path"]]
    return {
        "cpu_us_per_token": {n: row["cpu_s"][n] / tokens * 1e6 for n in names},
        "cpu_ms_per_request": {n: row["cpu_s"][n] / requests * 1e3 for n in names},
    }


# --- the series -------------------------------------------------------------------------


def rotated(items: Sequence[str], by: int) -> list[str]:
    """``items`` starting at ``by`` (mod len): each repetition runs the paths in another
    order. Pure."""
    k = by % len(items)
    return [*items[k:], *items[:k]]


def series(
    load: Load,
    upstream: Path,
    work: Path,
    *,
    paces: Sequence[str],
    paths: Sequence[str],
    concurrencies: Sequence[int],
    tokens: Sequence[int],
    reps: int,
    requests: int | None,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for pace_name in paces:
        pace = PACES[pace_name]
        with stack(upstream, pace, work, load.key_file) as made:
            for path in paths:  # warm-up: connections, caches; not recorded
                load.run(made, path, 4, 8, 1)
            for rep in range(reps):
                for conc, size in itertools.product(concurrencies, tokens):
                    count = requests or requests_per_stream(pace, conc, size)
                    for path in rotated(paths, rep):
                        row = load.run(made, path, conc, size, count)
                        row.update(pace=pace_name, rep=rep, **per_unit(row))
                        say(
                            f"{pace_name} {conc:>3} x {size:>3} tok {path:<6} "
                            f"{row['tokens_per_s']:>9.0f} tok/s  TTFC p50 "
                            f"{row['ttfc_p50_ms']:.1f} ms p99 {row['ttfc_p99_ms']:.1f} ms  "
                            f"failed {row['failed']}"
                        )
                        rows.append(row)
    return rows


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def medians(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (pace, tokens, concurrency, path): the medians over repetitions.
    Pure."""
    groups: dict[tuple[str, int, int, str], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["pace"], row["tokens_each"], row["concurrency"], row["path"])
        groups.setdefault(key, []).append(row)
    out = []
    for (pace, size, conc, path), group in groups.items():
        names = IN_PATH[path]
        out.append({
            "pace": pace, "tokens_each": size, "concurrency": conc, "path": path,
            "reps": len(group), "failed": sum(r["failed"] for r in group),
            **{k: _median([r[k] for r in group])
               for k in ("tokens_per_s", "ttfc_p50_ms", "ttfc_p99_ms", "latency_p50_ms")},
            "cpu_us_per_token": {n: _median([r["cpu_us_per_token"][n] for r in group])
                                 for n in names},
            "cpu_ms_per_request": {n: _median([r["cpu_ms_per_request"][n] for r in group])
                                   for n in names},
        })  # fmt: skip
    return out


def fits(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each process's CPU per request as a line in the tokens per answer, from the
    shortest and longest answers of one pace, concurrency and path: µs per token (its
    slope) and ms per request (its intercept). Pure."""
    groups: dict[tuple[str, int, str], dict[int, dict[str, Any]]] = {}
    for row in summary:
        groups.setdefault((row["pace"], row["concurrency"], row["path"]), {})[
            row["tokens_each"]
        ] = row
    out = []
    for (pace, conc, path), by_size in groups.items():
        if len(by_size) < 2:
            continue
        low, high = min(by_size), max(by_size)
        for name in IN_PATH[path]:
            lo = by_size[low]["cpu_ms_per_request"][name]
            hi = by_size[high]["cpu_ms_per_request"][name]
            slope = (hi - lo) / (high - low)  # ms per token
            out.append({
                "pace": pace, "concurrency": conc, "path": path, "process": name,
                "us_per_token": slope * 1e3, "ms_per_request": lo - slope * low,
            })  # fmt: skip
    return out


def comparisons(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The front against the router alone, and the router against direct: tokens/s
    ratio and TTFC p50 added, per pace, answer length and concurrency. Pure."""
    index = {(r["pace"], r["tokens_each"], r["concurrency"], r["path"]): r for r in summary}
    out = []
    for (pace, size, conc, path), row in index.items():
        for over in ("router", "direct"):
            if (path, over) not in (("front", "router"), ("router", "direct")):
                continue
            base = index.get((pace, size, conc, over))
            if base is None or not base["tokens_per_s"]:
                continue
            out.append({
                "pace": pace, "tokens_each": size, "concurrency": conc, "path": path,
                "over": over, "tokens_per_s_ratio": row["tokens_per_s"] / base["tokens_per_s"],
                "ttfc_p50_added_ms": row["ttfc_p50_ms"] - base["ttfc_p50_ms"],
            })  # fmt: skip
    return out


# --- the record -------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine(go_version: str) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "platform": platform.platform(), "cpu": model, "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "python": platform.python_version(),
        "go": go_version, "vllm_router": _version("vllm-router"),
        "aiohttp": _version("aiohttp"), "uvloop": _version("uvloop"),
        "psutil": _version("psutil"),
    }  # fmt: skip


def _us(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.1f}"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# The front at line rate, {result['date']}",
        "",
        f"{m['cpus']} CPUs ({m['cpu'] or 'unknown'}), {m['platform']}; Python {m['python']}, "
        f"{m['go']}, vllm-router {m['vllm_router']}, aiohttp {m['aiohttp']}, uvloop "
        f"{m['uvloop']}; load average before {m['load_average'][0]:.2f}, after "
        f"{result['load_average_after'][0]:.2f}. {result['settings']['api']}, "
        f"{'streamed' if result['settings']['stream'] else 'whole answers'}; medians of "
        f"{result['settings']['reps']}.",
        "",
        "| pace | tokens | streams | path | tokens/s | TTFC p50 ms | TTFC p99 ms | "
        "CPU µs/token: upstream | router | proxy | client | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["summary"]:
        cpu = r["cpu_us_per_token"]
        lines.append(
            f"| {r['pace']} | {r['tokens_each']} | {r['concurrency']} | {r['path']} | "
            f"{r['tokens_per_s']:.0f} | {r['ttfc_p50_ms']:.1f} | {r['ttfc_p99_ms']:.1f} | "
            + " | ".join(_us(cpu.get(n, math.nan)) for n in PROCESSES)
            + f" | {r['failed']} |"
        )
    if result["comparisons"]:
        lines += [
            "",
            "| pace | tokens | streams | path / over | tokens/s ratio | TTFC p50 added ms |",
            "|---|---|---|---|---|---|",
        ]
        for c in result["comparisons"]:
            lines.append(
                f"| {c['pace']} | {c['tokens_each']} | {c['concurrency']} | {c['path']} / "
                f"{c['over']} | {c['tokens_per_s_ratio']:.3f} | {c['ttfc_p50_added_ms']:.1f} |"
            )
    if result["fits"]:
        lines += [
            "",
            "CPU per request as a line in the answer's length (shortest and longest answers):",
            "",
            "| pace | streams | path | process | µs per token | ms per request |",
            "|---|---|---|---|---|---|",
        ]
        for f in result["fits"]:
            lines.append(
                f"| {f['pace']} | {f['concurrency']} | {f['path']} | {f['process']} | "
                f"{f['us_per_token']:.1f} | {f['ms_per_request']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=_numbers, default=[1, 64, 256])
    parser.add_argument("--tokens", type=_numbers, default=[32, 256])
    parser.add_argument("--paces", default="fast,gpu", help="fast, gpu (a 10 ms lock-step)")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--requests", type=int, default=None, help="requests per stream (default: sized per run)"
    )
    parser.add_argument("--api", choices=("chat", "completions"), default="chat")
    parser.add_argument("--no-stream", action="store_true", help="whole answers")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    paces = [p for p in args.paces.split(",") if p]
    paths = [p for p in args.paths.split(",") if p]
    unknown = [p for p in paces if p not in PACES] + [p for p in paths if p not in PATHS]
    if unknown:
        parser.error(f"unknown pace or path: {', '.join(unknown)}")
    upstream, load_bin, go_version = build()
    record = machine(go_version)
    with tempfile.TemporaryDirectory(prefix="bench-front-") as scratch:
        work = Path(scratch)
        key_file = work / "key"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(32))
        load = Load(load_bin, key_file, chat=args.api == "chat", stream=not args.no_stream)
        started = time.time()
        try:
            rows = series(
                load, upstream, work, paces=paces, paths=paths,
                concurrencies=args.concurrency, tokens=args.tokens, reps=args.reps,
                requests=args.requests,
            )  # fmt: skip
        except BaseException:
            for name in ("upstream", "router", "proxy"):
                say(f"{name} log: " + " | ".join(_proc.tail_lines(str(work / f"{name}.log"), 5)))
            raise
    summary = medians(rows)
    date = datetime.date.today().isoformat()
    result = {
        "date": date, "seconds": round(time.time() - started, 1), "machine": record,
        "load_average_after": os.getloadavg(),
        "settings": {
            "paces": {p: PACES[p] for p in paces}, "paths": paths, "reps": args.reps,
            "concurrency": args.concurrency, "tokens": args.tokens, "api": args.api,
            "stream": not args.no_stream, "requests_per_stream": args.requests,
        },
        "summary": summary, "comparisons": comparisons(summary), "fits": fits(summary),
        "runs": rows,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"front-{date}"
    base.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    base.with_suffix(".md").write_text(markdown(result))
    say(f"wrote {base}.json and {base}.md")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
