"""``jobdir.paths``: each name against the literal name on disk (a table), and a check
that no other module of ``python/launchers`` spells a job or service directory's file
name.

The check reads every ``.py`` file under ``python/launchers`` but ``jobdir/paths.py``
with ``ast``: it looks at string constants and the literal parts of f-strings (an
f-string's ``{...}`` read as ``{}``), docstrings left out, comments never seen (``ast``
drops them). It fails on a known file name (``plan.json``, ``local.out``, ...), a
``<name>-<rank>.log`` (``-{}.log``, ``-0.log``, ``-*.log``), ``*.log``, and
``nodes/``/``failed/`` records. It cannot see a name built from pieces (``"plan" +
".json"``) or spelled in bash (``sbatch.bash``), and it does not read the tests.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from launchers.jobdir.paths import (
    RANK_FIELD,
    DoctorDir,
    JobDir,
    JobRoot,
    ServiceDir,
    log_name,
    log_rank,
)
from launchers.plan.launch import job_paths

LAUNCHERS = Path(__file__).resolve().parents[2] / "python" / "launchers"
PATHS = LAUNCHERS / "jobdir" / "paths.py"

JOB = JobDir("/r/slurm-7")
SERVICE = ServiceDir("/r/services/llama")
ROOT = JobRoot("/r")

NAMES = [
    (JOB.plan, "/r/slurm-7/plan.json"),
    (JOB.leader, "/r/slurm-7/leader.json"),
    (JOB.endpoint, "/r/slurm-7/endpoint.json"),
    (JOB.stop, "/r/slurm-7/stop.json"),
    (JOB.local, "/r/slurm-7/local.json"),
    (JOB.local_output, "/r/slurm-7/local.out"),
    (JOB.api_key, "/r/slurm-7/api_key"),
    (JOB.ray_token, "/r/slurm-7/ray_token"),
    (JOB.bench, "/r/slurm-7/bench"),
    (JOB.node(3), "/r/slurm-7/nodes/3.json"),
    (JOB.failure(2), "/r/slurm-7/failed/2.json"),
    (JOB.log("vllm", 0), "/r/slurm-7/vllm-0.log"),
    (JOB.log("ray-watch", 1), "/r/slurm-7/ray-watch-1.log"),
    (JOB.node_log(0), "/r/slurm-7/node-0.log"),
    (JOB.node_log(RANK_FIELD), "/r/slurm-7/node-{rank}.log"),
    (JobDir.LOGS, "*.log"),
    (JobDir.NODE_RECORDS, "nodes/*.json"),
    (JobDir.FAILURES, "failed/*.json"),
    (SERVICE.spec, "/r/services/llama/service.json"),
    (SERVICE.state, "/r/services/llama/state.json"),
    (SERVICE.front, "/r/services/llama/front.json"),
    (SERVICE.key, "/r/services/llama/key"),
    (SERVICE.front_log("42"), "/r/services/llama/front-42.log"),
    (SERVICE.front_log("%j"), "/r/services/llama/front-%j.log"),
    (SERVICE.front_logs, "/r/services/llama/front-*.log"),
    (SERVICE.router_log, "/r/services/llama/router.log"),
    (ROOT.job("slurm-7").root, "/r/slurm-7"),
    (ROOT.batch_log, "/r/vllm-hpc-%j.out"),
    (ROOT.submitit("%j"), "/r/submitit/%j"),
    (ROOT.submitit_log("42"), "/r/submitit/42/42_0_log.err"),
    (ROOT.secrets, "/r/secrets"),
    (ROOT.secret_env("job-ab12"), "/r/secrets/job-ab12.env.json"),
    (ROOT.ray_token, "/r/.ray_token"),
    (JobRoot("/r/").services, "/r/services"),
    (ROOT.service("llama").root, "/r/services/llama"),
    (DoctorDir.under("/r", "20250101-000000").root, "/r/.doctor-20250101-000000"),
    (DoctorDir("/r/.d").plan, "/r/.d/plan.json"),
    (DoctorDir("/r/.d").leader, "/r/.d/rank0.json"),
]


@pytest.mark.parametrize(("built", "on_disk"), NAMES, ids=[n for _, n in NAMES])
def test_each_name_is_the_one_on_disk(built: str, on_disk: str) -> None:
    assert built == on_disk


@pytest.mark.parametrize(
    ("name", "rank"),
    [("node-3.log", "3"), ("ray-watch-12.log", "12"), ("vllm-0.log", "0"), ("x.log", "")],
)
def test_a_logs_rank_is_read_from_its_name(name: str, rank: str) -> None:
    assert log_rank(name) == rank
    if rank:
        assert log_name(name.removesuffix(f"-{rank}.log"), rank) == name


def test_the_plans_paths_are_job_dirs_names_with_placeholders() -> None:
    paths = job_paths("/r")
    files = JobDir("/r/@JOB_KEY@")
    assert (paths.job_dir, paths.plan, paths.leader, paths.endpoint) == (
        files.root, files.plan, files.leader, files.endpoint,
    )  # fmt: skip
    assert (paths.api_key, paths.ray_token) == (files.api_key, files.ray_token)
    assert paths.node_log == files.node_log(RANK_FIELD) == "/r/@JOB_KEY@/node-{rank}.log"
    assert paths.batch_log == ROOT.batch_log
    mine = paths.for_job("42", "alpha")
    assert mine.dir == JobDir("/r/alpha-42")
    assert mine.node_log_of(1) == JobDir("/r/alpha-42").node_log(1)


FILE_NAMES = (
    "plan.json", "leader.json", "endpoint.json", "stop.json", "local.json", "local.out",
    "service.json", "state.json", "front.json", "router.log", "rank0.json", ".ray_token",
    "vllm-hpc-%j.out", "_log.err", ".env.json", ".doctor-",
)  # fmt: skip
PATTERNS = (
    re.compile(r"-(\{\}|\d+|\*|%j)\.log\b"),  # <name>-<rank>.log, front-<job>.log
    re.compile(r"\*\.log\b"),
    re.compile(r"\b(nodes|failed)/"),
)


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring constants of ``tree``'s module, classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _texts(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string literal of ``source`` but docstrings; an f-string as
    its literal parts with ``{}`` for each replacement field."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    inside = {  # the parts of an f-string are read with it, not alone
        id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
        for part in node.values
    }  # fmt: skip
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(
                p.value if isinstance(p, ast.Constant) and isinstance(p.value, str) else "{}"
                for p in node.values
            )
            found.append((node.lineno, text))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skip | inside
        ):
            found.append((node.lineno, node.value))
    return found


def spelled_names(source: str) -> list[tuple[int, str]]:
    """The (line, text) of each literal of ``source`` that spells a directory's file name."""
    return [
        (line, text)
        for line, text in _texts(source)
        if any(name in text for name in FILE_NAMES) or any(p.search(text) for p in PATTERNS)
    ]


@pytest.mark.parametrize(
    "source",
    [
        'x = f"{job_dir}/node-{rank}.log"',
        'x = f"{d}/local.out"',
        'x = Path(d, "endpoint.json")',
        'x = Path(d).glob("*.log")',
        'x = f"{d}/nodes/{rank}.json"',
        'x = "vllm-0.log"',
        'x = f"{d}/front-{job}.log"',
        'def f():\n    return g("plan.json")',
    ],
)
def test_the_check_finds_a_spelled_name(source: str) -> None:
    assert spelled_names(source)


@pytest.mark.parametrize(
    "source",
    [
        '"""Writes ``plan.json`` and ``node-<rank>.log``."""',
        'def f():\n    """Reads endpoint.json."""\n    return 1',
        "x = 1  # see node-0.log",
        'x = ["--node-ip-address", "multi-node-serving.sh", "config.json"]',
        'x = f"read {path}"',
    ],
)
def test_the_check_leaves_docstrings_comments_and_other_names(source: str) -> None:
    assert spelled_names(source) == []


def test_no_module_spells_a_job_or_service_file_name_but_paths() -> None:
    found = [
        f"{path.relative_to(LAUNCHERS)}:{line}: {text!r}"
        for path in sorted(LAUNCHERS.rglob("*.py"))
        if path != PATHS
        for line, text in spelled_names(path.read_text(encoding="utf-8"))
    ]
    assert found == [], "spell these through launchers.jobdir.paths:\n" + "\n".join(found)
