"""Ask an installed vLLM's own `vllm serve` parser about every command line the planner
emits, for every layout, and about the flag-alias table of ``launchers.input.resolve``.

    .venv/bin/python -m bench.vllm_flags --vllm-python /tmp/v033venv/bin/python \\
        [--out bench/results/vllm-flags-0.33.0.txt] [--write-table [DIR]]

Runs on the login side with this checkout's launchers; the vLLM side runs in a child
process of ``--vllm-python`` (a venv with `pip install --no-deps vllm==X` and what its
parser imports is enough; no GPU: VLLM_TARGET_DEVICE=cpu is set unless given). Not a
test: CI has no vLLM. Exit 0 when every argv parses and the alias table matches.

For each layout it plans with the target version set to the installed vLLM's, fills the
node-side placeholders, adds the node-chosen ``--safetensors-load-strategy prefetch``
(``ServeStart.loading``), and has vLLM parse the argv as `vllm serve` does
(``ServeSubcommand.subparser_init`` + ``validate``), then build ``EngineArgs`` from it.
For data-parallel ranks it prints the load-balancing mode vLLM derives (since 0.28 a
``--data-parallel-start-rank`` without ``--headless`` means hybrid LB, and hybrid LB with
one local rank becomes external LB, which a headless rank cannot be).

``--write-table`` also writes the parser's option table (every spelling, how many values
each option takes, the value's type where the parser's type function is int, float, a
size such as 4k, or a choice) to ``python/launchers/vllm_options/<release>.json``: the
planner checks the `vllm serve` arguments after ``--`` against it
(``launchers.input.vllm_options``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launchers.input import resolve
from launchers.input.planner import make_plan
from launchers.plan.commands import (
    API_PORT,
    DP_START_RANK,
    JOB_DIR,
    JOB_ID,
    JOB_KEY,
    LEADER_IP,
    NODE_IP,
    NODE_RANK,
    RAY_PORT,
)
from launchers.plan.launch import LaunchPlan, fill_placeholders
from launchers.spec.request import SubmitRequest as Request

MARK = "VLLM_FLAGS "
# Where the option tables the planner checks `vllm serve` arguments against are shipped.
TABLES = Path(__file__).resolve().parents[1] / "python" / "launchers" / "vllm_options"
# The vLLM side: parse each argv as `vllm serve` does; report the aliases of each flag.
CHILD = r"""
import json, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm.engine.arg_utils import EngineArgs
import vllm

job = json.loads(sys.stdin.read())
top = FlexibleArgumentParser()
sub = top.add_subparsers(dest="subparser")
serve = ServeSubcommand()
parser = serve.subparser_init(sub)
out = {"version": vllm.__version__, "argv": [], "flags": {}}
for name, argv in job["argvs"]:
    row = {"name": name}
    try:
        args = top.parse_args(argv[1:])
        serve.validate(args)
        EngineArgs.from_cli_args(args)
        row["ok"] = True
        start = args.data_parallel_start_rank
        if args.data_parallel_size > 1 and args.data_parallel_backend == "mp":
            hybrid = start is not None and not args.headless
            local = args.data_parallel_size_local
            mode = "internal"
            if hybrid:
                mode = "external" if local == 1 else "hybrid"
            row["dp"] = {"headless": args.headless, "start_rank": start,
                         "size_local": local, "lb": mode}
    except SystemExit as exc:
        row["ok"] = False
        row["error"] = f"argparse exit {exc.code}"
    except Exception as exc:
        row["ok"] = False
        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
    out["argv"].append(row)
actions = parser._option_string_actions
for flag in job["flags"]:
    action = actions.get(flag)
    if action is None:
        out["flags"][flag] = None
    else:
        same = sorted(k for k, a in actions.items() if a.dest == action.dest)
        choices = sorted(map(str, action.choices)) if action.choices else None
        out["flags"][flag] = {"dest": action.dest, "spellings": same, "choices": choices,
                              "default": repr(action.default)}

# The option table (--write-table): each option of `vllm serve` with its spellings, how
# many values it takes, and the shape of its value where the parser's own type function
# says it plainly (asked with sample values, never guessed from names).
def accepts(kind, text):
    try:
        kind(text)
    except Exception:
        return False
    return True

def value_shape(action):
    kind = action.type
    if action.choices:
        choices = [str(c) for c in action.choices]
        shape = {"type": "choice", "choices": choices}
        if all(isinstance(c, int) for c in action.choices):
            shape["of"] = "int"  # compared as numbers: 08 is 8
        elif kind is not None:
            if all(accepts(kind, c.upper()) and str(kind(c.upper())) in choices for c in choices):
                shape["fold_case"] = True
            words = [w for w in ("None", "") if accepts(kind, w) and kind(w) in action.choices]
            if words:
                shape["words"] = words
        return shape
    if kind is None or kind is str:
        return {}
    said = {v: accepts(kind, v) for v in ("7", "1.5", "abc", "4k", "None", "auto", "", "{}")}
    if said["abc"] or said["{}"] or not said["7"]:
        return {}  # text, JSON (which takes 7 and 1.5 too), or something else
    if said["4k"]:
        shape = {"type": "size"}
    elif said["1.5"]:
        shape = {"type": "float"}
    else:
        shape = {"type": "int"}
    words = [w for w in ("None", "auto", "") if said[w]]
    if words:
        shape["words"] = words
    return shape

table, seen = [], set()
for action in parser._actions:
    if not action.option_strings or id(action) in seen:
        continue
    seen.add(id(action))
    nargs = 1 if action.nargs is None else action.nargs
    table.append({"names": sorted(action.option_strings), "nargs": nargs, **value_shape(action)})
out["table"] = sorted(table, key=lambda row: row["names"][0])
print(MARK + json.dumps(out), flush=True)
""".replace("MARK", repr(MARK))

DUMMY = {
    NODE_IP: "10.0.0.2",
    LEADER_IP: "10.0.0.1",
    JOB_ID: "42",
    JOB_DIR: "/tmp/job",
    JOB_KEY: "slurm-42",
    NODE_RANK: "1",
    DP_START_RANK: "8",
    API_PORT: "8000",
    RAY_PORT: "6379",
}


def layouts(version: str) -> list[tuple[str, Request]]:
    """Every layout the planner emits, as a user would ask for it."""
    moe = "deepseek-v3"
    asked = [
        ("single", Request(model="llama-3.2-3b-instruct", nodes=1, gpus_per_node=1)),
        ("tp4", Request(model="llama-3.1-8b-instruct", nodes=1, gpus_per_node=4, tp=4)),
        ("tp4xpp2-ray", Request(model="llama-3.1-70b-instruct", runtime="ray")),
        ("tp4xpp2-native", Request(model="llama-3.1-70b-instruct", runtime="native")),
        ("dp16-ep-headless", Request(model=moe)),
        (
            "dp2-local1-ep",
            Request(model=moe, nodes=2, gpus_per_node=1, tp=1, dp=2, ep=True),
        ),
        (
            "dp2-ray",
            Request(model=moe, nodes=2, gpus_per_node=8, tp=8, dp=2, dp_backend="ray"),
        ),
        (
            "dp16-ep-all2all",
            Request(model=moe, all2all_backend="deepep_low_latency"),
        ),
    ]
    return [(name, request.model_copy(update={"vllm_version": version})) for name, request in asked]


def serve_argvs(plan: LaunchPlan, name: str) -> list[tuple[str, list[str]]]:
    out = []
    for role in plan.roles:
        if role.serve is None:
            continue
        start = role.serve.loading("prefetch")  # what a node on GPFS/BeeGFS/... adds
        out.append((f"{name}/{role.role}", fill_placeholders(start.argv(), DUMMY)))
    return out


def owned_flags() -> list[str]:
    return sorted(
        {*resolve._PLAN_FLAGS, *resolve._FLAG_ALIASES, *resolve._REFUSED_FLAGS}
        | set(resolve._FLAG_ALIASES.values())
        | {"--shutdown-timeout", "--safetensors-load-strategy", "--load-format"}
    )


def ask_vllm(python: str, argvs: Sequence[tuple[str, list[str]]]) -> dict[str, Any]:
    env = dict(os.environ)
    env.setdefault("VLLM_TARGET_DEVICE", "cpu")
    job = json.dumps({"argvs": argvs, "flags": owned_flags()})
    done = subprocess.run(
        [python, "-c", CHILD], input=job, env=env, capture_output=True, text=True, check=False
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARK):
            data: dict[str, Any] = json.loads(line[len(MARK) :])
            return data
    raise SystemExit(f"vllm-flags: {python} gave no answer:\n{done.stderr[-2000:]}")


def installed_version(python: str) -> str:
    code = "import importlib.metadata as m; print(m.version('vllm'))"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def alias_problems(flags: dict[str, Any]) -> list[str]:
    """The alias table against the parser: every name exists, an alias names the same
    option as its flag, and no spelling of a flag the plan owns is missing."""
    problems = []
    owned = {*resolve._PLAN_FLAGS, *resolve._FLAG_ALIASES, *resolve._REFUSED_FLAGS}
    for alias, target in resolve._FLAG_ALIASES.items():
        a, t = flags.get(alias), flags.get(target)
        if t is None:
            problems.append(f"alias {alias} -> {target}: {target} is not a flag of this vLLM")
        elif a is None:
            continue  # another release's spelling: refusing it here costs nothing
        elif a["dest"] != t["dest"]:
            problems.append(f"alias {alias} -> {target}: {a['dest']} is not {t['dest']}")
    for flag in (*resolve._PLAN_FLAGS, *resolve._REFUSED_FLAGS):
        info = flags.get(flag)
        if info is None:
            if flag not in ("--token-parallel-size", "--enable-token-parallel",
                            "--no-enable-token-parallel"):  # fmt: skip
                problems.append(f"{flag}: not a flag of this vLLM")
            continue
        missing = [s for s in info["spellings"] if s not in owned]
        if missing:
            problems.append(f"{flag}: spellings {missing} are not in _FLAG_ALIASES")
    return problems


def report(version: str, answer: dict[str, Any], planned: list[str]) -> tuple[str, bool]:
    lines = [f"vLLM {answer['version']} (installed {version}): `vllm serve` parser check"]
    ok = True
    lines.append("")
    lines.append("planned command lines (placeholders filled, + --safetensors-load-strategy):")
    for row, argv in zip(answer["argv"], planned, strict=True):
        status = "ok  " if row["ok"] else "FAIL"
        ok &= bool(row["ok"])
        dp = row.get("dp")
        extra = f"  dp: {json.dumps(dp, sort_keys=True)}" if dp else ""
        lines.append(f"  {status} {row['name']}{extra}")
        lines.append(f"       {argv}")
        if not row["ok"]:
            lines.append(f"       error: {row['error']}")
        if dp and dp["headless"] and dp["lb"] == "external":
            ok = False
            lines.append("       error: a headless rank in external LB mode")
    lines.append("")
    lines.append("flags vllm-hpc owns or emits (dest, all spellings, choices, default):")
    for flag, info in sorted(answer["flags"].items()):
        if info is None:
            lines.append(f"  {flag}: not a flag here")
        else:
            choices = f" choices={info['choices']}" if info["choices"] else ""
            lines.append(
                f"  {flag}: {info['dest']} {info['spellings']}{choices} default={info['default']}"
            )
    problems = alias_problems(answer["flags"])
    lines.append("")
    lines.append("alias table (launchers/input/resolve.py): " + ("ok" if not problems else ""))
    lines += [f"  FAIL {p}" for p in problems]
    ok &= not problems
    lines.append("")
    lines.append("result: " + ("every planned argv parses" if ok else "FAILED"))
    return "\n".join(lines) + "\n", ok


def table_text(release: str, installed: str, answer: dict[str, Any]) -> str:
    """The option table vllm-hpc ships for ``release`` (one option a line, for diffs),
    from the parser of the ``installed`` distribution (e.g. 0.32.0+cpu)."""
    rows = ",\n".join("  " + json.dumps(row, sort_keys=True) for row in answer["table"])
    head = {
        "vllm": release,
        "from": f"the `vllm serve` parser of the installed vllm {installed}",
        "made_by": "python -m bench.vllm_flags --vllm-python PY --write-table",
    }
    return json.dumps(head, indent=1)[:-2] + ',\n "options": [\n' + rows + "\n ]\n}\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vllm-python", required=True, help="a Python that has the vLLM to ask")
    ap.add_argument("--out", help="also write the report here")
    ap.add_argument(
        "--write-table",
        nargs="?",
        const=str(TABLES),
        metavar="DIR",
        help=f"also write the option table, DIR/<release>.json (default {TABLES})",
    )
    opts = ap.parse_args(argv)
    version = installed_version(opts.vllm_python)
    target = version.split("+")[0]
    planned: list[tuple[str, list[str]]] = []
    for name, request in layouts(target):
        plan = make_plan(request, {"HOME": "/home/alice"}, opts.vllm_python)
        planned += serve_argvs(plan, name)
    answer = ask_vllm(opts.vllm_python, planned)
    text, ok = report(version, answer, [" ".join(a) for _, a in planned])
    print(text, end="")
    if opts.out:
        Path(opts.out).write_text(text, encoding="utf-8")
    if opts.write_table:
        path = Path(opts.write_table) / f"{target}.json"
        path.write_text(table_text(target, version, answer), encoding="utf-8")
        print(f"option table: {path} ({len(answer['table'])} options)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
