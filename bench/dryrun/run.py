"""The dry run's start-up: ``make bench-dryrun`` (``python -m bench.dryrun.run``).

What a user types to see a plan, ``python -m launchers.submit --nodes 2 -m
llama-3.1-70b-instruct --dry-run``, timed against a bare ``python -c "import pydantic,
click, yaml"`` (the libraries every vllm-hpc command imports) and against pydantic's own
floor (click and yaml, and one pydantic model with a constrained field, validated once:
what a command that plans with pydantic models cannot go below). The commands run
interleaved, each once per repetition in a rotating order, so that every ratio is taken
within one repetition while the machine's speed drifts; medians are quoted. No SLURM,
no cluster: seconds of CPU on this machine.

Whole processes, from outside: wall seconds (a monotonic clock around the child) and
CPU seconds (the child's user + system time, from ``getrusage``). The children cache
their bytecode, as an installed package does (in a scratch ``PYTHONPYCACHEPREFIX``, so
the checkout stays clean; warm-up runs fill it), and see no ``VLLM_HPC_*`` variable and
no user registry, so the plan is the shipped registry's.

``--tree LABEL=PATH`` (repeatable) times the dry run of other source trees in the same
series, e.g. the tree before a change (``git archive <commit> python | tar -x -C
/tmp/before``, then ``--tree before=/tmp/before/python --tree after=python``). Then one
``-X importtime`` run of each tree's dry run says what it imports beyond the bare import.
Results: ``bench/results/dryrun-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from launchers import _proc

REPO = Path(__file__).resolve().parents[2]
BARE = "bare"
FLOOR = "pydantic floor"
BARE_CODE = "import pydantic, click, yaml"
FLOOR_CODE = (
    "import click, yaml\n"
    "from pydantic import BaseModel, Field\n"
    "class A(BaseModel):\n"
    "    x: int = Field(1, ge=0)\n"
    "A(x=2)\n"
)


def say(text: str) -> None:
    print(f"bench-dryrun: {text}", file=sys.stderr, flush=True)


def child_env(tree: str, scratch: Path) -> dict[str, str]:
    """The environment every timed child gets (bytecode cached in ``scratch``)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VLLM_HPC_") and k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")
    }
    (scratch / "config").mkdir(exist_ok=True)
    env.update(
        PYTHONPATH=tree,
        PYTHONPYCACHEPREFIX=str(scratch / "pycache"),
        XDG_CONFIG_HOME=str(scratch / "config"),
    )
    return env


def dry_run_argv(model: str, nodes: int) -> list[str]:
    return [sys.executable, "-m", "launchers.submit", "--nodes", str(nodes), "-m", model,
            "--dry-run"]  # fmt: skip


def timed(argv: Sequence[str], env: Mapping[str, str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one run of ``argv``, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = _proc.run(argv, env=env, timeout=120)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"bench-dryrun: {' '.join(argv)} failed: {done.stderr.strip()[-400:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def rotated(items: Sequence[str], by: int) -> list[str]:
    by %= max(len(items), 1)
    return [*items[by:], *items[:by]]


def series(
    commands: Mapping[str, tuple[list[str], dict[str, str]]], reps: int, warmup: int
) -> dict[str, list[tuple[float, float]]]:
    """Every command once per repetition, in a rotating order; ``warmup`` uncounted
    repetitions first (they also fill the bytecode cache)."""
    labels = list(commands)
    for _ in range(warmup):
        for label in labels:
            timed(*commands[label])
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label in labels}
    for rep in range(reps):
        for label in rotated(labels, rep):
            runs[label].append(timed(*commands[label]))
    return runs


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "n": len(values)}  # fmt: skip


def ratios(runs: Mapping[str, Sequence[tuple[float, float]]], over: str) -> dict[str, Any]:
    """Per command, its wall and CPU time over ``over``'s, repetition by repetition."""
    out: dict[str, Any] = {}
    for label, rows in runs.items():
        if label == over:
            continue
        pairs = list(zip(rows, runs[over], strict=True))
        out[label] = {
            "wall": summary([a[0] / b[0] for a, b in pairs]),
            "cpu": summary([a[1] / b[1] for a, b in pairs]),
        }
    return out


def parse_importtime(text: str) -> list[tuple[int, int, str]]:
    """``-X importtime`` lines -> (self µs, cumulative µs, module), in import order."""
    rows = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
            rows.append((int(parts[0]), int(parts[1]), parts[2]))
    return rows


def beyond(
    dry: Sequence[tuple[int, int, str]], bare: Sequence[tuple[int, int, str]]
) -> dict[str, Any]:
    """What the dry run imports that the bare import does not: how many modules, their
    own (self) time, and the heaviest of them (self time)."""
    seen = {name for _, _, name in bare}
    extra = [(us, name) for us, _, name in dry if name not in seen]
    ours = [(us, name) for us, name in extra if name.split(".")[0] == "launchers"]
    return {
        "modules": len(extra),
        "self_ms": round(sum(us for us, _ in extra) / 1000, 1),
        "launchers_modules": len(ours),
        "launchers_self_ms": round(sum(us for us, _ in ours) / 1000, 1),
        "heaviest_self_ms": [
            {"module": name, "ms": round(us / 1000, 1)} for us, name in sorted(extra)[::-1][:12]
        ],
    }


def import_tree(commands: Mapping[str, tuple[list[str], dict[str, str]]]) -> dict[str, Any]:
    """One ``-X importtime`` run of each command; each dry run against the bare import."""
    trees = {}
    for label, (argv, env) in commands.items():
        done = _proc.run([argv[0], "-X", "importtime", *argv[1:]], env=env, timeout=120)
        trees[label] = parse_importtime(done.stderr)
    return {
        label: beyond(rows, trees[BARE])
        for label, rows in trees.items()
        if label not in (BARE, FLOOR)
    }


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"platform": platform.platform(), "cpu": model, "cpus": os.cpu_count(),
            "python": platform.python_version(), "load_average": os.getloadavg()}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    s = result["settings"]
    lines = [
        f"# The dry run's start-up, {result['date']}",
        "",
        f"{m['cpus']} CPUs ({m['cpu'] or 'unknown'}), {m['platform']}; Python {m['python']}; "
        f"load average (1 min) before {m['load_average'][0]:.2f}, after "
        f"{result['load_average_after'][0]:.2f}. `{' '.join(s['dry_run'])}` against "
        f'`python -c "{BARE_CODE}"` ({BARE}) and {FLOOR!r} (click, yaml and one pydantic '
        f"model with a constrained field, validated once); {s['reps']} interleaved "
        f"repetitions after {s['warmup']} uncounted; medians (min-max), bytecode cached.",
        "",
        "| command | wall s | CPU s | wall / bare | CPU / bare |",
        "|---|---|---|---|---|",
    ]
    for label, times in result["runs"].items():
        wall, cpu = times["wall"], times["cpu"]
        ratio = result["ratios"].get(label)
        shown = (
            f"{ratio['wall']['median']:.2f} ({ratio['wall']['min']:.2f}-{ratio['wall']['max']:.2f})"
            f" | {ratio['cpu']['median']:.2f}"
            if ratio
            else "1 | 1"
        )
        lines.append(
            f"| {label} | {wall['median']:.3f} ({wall['min']:.3f}-{wall['max']:.3f}) | "
            f"{cpu['median']:.3f} | {shown} |"
        )
    for label, tree in result["imports"].items():
        heavy = ", ".join(f"{h['module']} {h['ms']}" for h in tree["heaviest_self_ms"][:8])
        lines += [
            "",
            f"{label}: `-X importtime` (one run, its own overhead included): "
            f"{tree['modules']} modules beyond the bare import, {tree['self_ms']} ms of their "
            f"own time, {tree['launchers_modules']} of them vllm-hpc's "
            f"({tree['launchers_self_ms']} ms, pydantic's schema building for the models "
            f"they define included). Heaviest (ms): {heavy}.",
        ]
    return "\n".join(lines) + "\n"


def _tree(text: str) -> tuple[str, str]:
    label, sep, path = text.partition("=")
    if not sep or not label or not Path(path).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: give LABEL=PATH, a source tree's python/")
    return label, str(Path(path).resolve())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--model", default="llama-3.1-70b-instruct")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument(
        "--tree", type=_tree, action="append", default=[],
        help="LABEL=PATH: time the dry run of this source tree too (default: this checkout)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    trees = dict(args.tree) or {"dry run": str(REPO / "python")}
    record = machine()
    say(f"load average {record['load_average'][0]:.2f}; {args.reps} repetitions")
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-dryrun-") as scratch:
        here = child_env(str(REPO / "python"), Path(scratch))
        commands = {
            label: (dry_run_argv(args.model, args.nodes), child_env(tree, Path(scratch)))
            for label, tree in trees.items()
        }
        commands[BARE] = ([sys.executable, "-c", BARE_CODE], here)
        commands[FLOOR] = ([sys.executable, "-c", FLOOR_CODE], here)
        runs = series(commands, args.reps, args.warmup)
        imports = import_tree(commands)
    date = datetime.date.today().isoformat()
    result = {
        "date": date, "seconds": round(time.time() - started, 1), "machine": record,
        "load_average_after": os.getloadavg(),
        "settings": {"reps": args.reps, "warmup": args.warmup, "trees": trees,
                     "dry_run": ["python", *dry_run_argv(args.model, args.nodes)[1:]]},
        "runs": {label: {"wall": summary([w for w, _ in rows]),
                         "cpu": summary([c for _, c in rows]),
                         "each": [[round(w, 4), round(c, 4)] for w, c in rows]}
                 for label, rows in runs.items()},
        "ratios": ratios(runs, BARE),
        "imports": imports,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"dryrun-{date}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / f"dryrun-{date}.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
