"""``vllm-hpc doctor``: run ``vllm-hpc node doctor`` on every node at once and gather it.

For a new deployment the checks get their own short allocation (``srun -N N`` with the
plan's partition, account and GPUs) before any GPU time is spent on a model; for a
running job they share its allocation (``srun --jobid J --overlap``). The nodes meet in
a fresh directory under the job root. Argv building and output parsing are pure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from launchers import _proc, jobdir
from launchers.defaults import DOCTOR_MARK as MARK
from launchers.defaults import DOCTOR_SLOW_PAIR
from launchers.jobdir.paths import DoctorDir
from launchers.observe import doctor_network
from launchers.submit.slurmctl import need_tool

ALLOCATION_KEYS = (
    "nodes",
    "gpus-per-node",
    "partition",
    "account",
    "qos",
    "reservation",
    "constraint",
)
LEVELS = {"ok": 0, "warn": 1, "fail": 2}


def doctor_argv(
    python: str,
    plan_path: str,
    meet_dir: str,
    timeout: float,
    network: bool = False,
    offline: bool = False,
) -> list[str]:
    """``network``: the nodes measure every pair too (``--network``); ``offline``: they
    prove the model needs nothing from outside (``--offline``)."""
    return [
        python,
        "-m",
        "launchers",
        "node",
        "doctor",
        "--plan",
        plan_path,
        "--dir",
        meet_dir,
        f"--timeout={timeout:.0f}",
        *(["--network"] if network else []),
        *(["--offline"] if offline else []),
    ]


def srun_new(sbatch: Sequence[Sequence[str]], time_limit: str = "00:10:00") -> list[str]:
    """A short allocation shaped like the job's, one task per node."""
    argv = ["srun", "--ntasks-per-node=1", f"--time={time_limit}", "--job-name=vllm-hpc-doctor"]
    for key, value in sbatch:
        if key in ALLOCATION_KEYS:
            argv.append(f"--{key}={value}" if value else f"--{key}")
    return [*argv, "--quiet"]


def parse_output(text: str) -> list[dict[str, Any]]:
    """The checks in the nodes' output, by rank then in the order they ran."""
    rows = []
    for line in text.splitlines():
        _, mark, rest = line.partition(MARK)
        if not mark:
            continue
        try:
            row = json.loads(rest)
        except ValueError:
            continue
        if isinstance(row, dict) and {"rank", "check", "level"} <= row.keys():
            rows.append(row)
    return sorted(rows, key=lambda r: int(r["rank"]))


def render(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per check; the pair checks (``--network``) as a table after them."""
    lines = []
    for row in rows:
        if row.get("check") in doctor_network.TABLED:
            continue
        line = f"{row['level']:<4}  node {row['rank']} {row['host']:<10} {row['check']:<14} "
        line += str(row["detail"])
        if row.get("fix"):
            line += f"  -> {row['fix']}"
        lines.append(line)
    pairs = doctor_network.pairs_of(rows)
    if pairs:
        lines += ["", doctor_network.table(pairs, DOCTOR_SLOW_PAIR)]
    return "\n".join(lines)


def worst(rows: Sequence[Mapping[str, Any]]) -> str:
    return max((str(r["level"]) for r in rows), key=lambda v: LEVELS.get(v, 2), default="fail")


def run(
    prefix: Sequence[str],
    plan_json: str,
    python: str,
    meet_root: str,
    nodes: int,
    timeout: float,
    environ: Mapping[str, str] | None = None,
    network: bool = False,
    offline: bool = False,
) -> tuple[list[dict[str, Any]], str]:
    """Write the plan where the nodes read it, run the step, return (checks, stderr).
    Off a SLURM login node (no ``srun``) it refuses before anything is written."""
    need_tool(
        prefix[0],
        f"doctor: no {prefix[0]} here: this is not a SLURM login node",
        fix="run vllm-hpc doctor on the cluster's login node; vllm-hpc submit --dry-run "
        "plans without SLURM",
        environ=environ,
    )
    where = DoctorDir.under(meet_root, time.strftime("%Y%m%d-%H%M%S"))
    meet = jobdir.ensure_dir(where.root)
    plan_path = Path(where.plan)
    plan_path.write_text(plan_json, encoding="utf-8")
    argv = [*prefix, *doctor_argv(python, str(plan_path), str(meet), timeout, network, offline)]
    done = _proc.run(argv, env=environ, timeout=timeout + 600)
    rows = parse_output(done.stdout)
    missing = nodes - len({r["rank"] for r in rows})
    if missing > 0 or (done.returncode != 0 and not any(r["level"] == "fail" for r in rows)):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        Path(where.stderr).write_text(done.stderr, encoding="utf-8")
        rows.append(
            {
                "rank": "-",
                "host": "srun",
                "check": "step",
                "level": "fail",
                "detail": f"exit {done.returncode}, {missing} node(s) reported nothing: {tail}",
                "fix": f"read {where.stderr}",
            }
        )
    rows += doctor_network.warnings(doctor_network.pairs_of(rows), DOCTOR_SLOW_PAIR)
    return rows, done.stderr
