"""No fixed sleep on any path: every wait goes through the one wait helper.

Every ``sleep`` in the runtime (``python/launchers``), the wrappers (``bin/``), the sbatch
templates and the container files is found here: calls (``time.sleep``, ``asyncio.sleep``,
a bare ``sleep`` however imported, ``clock.sleep``), text that would run ``sleep`` (a
rendered script, an argv list), and shell lines. A Python sleep passes only inside
``launchers.waits`` (the helper: ``wait_for`` and ``ticks``) or where ``ALLOWED`` names a
sampling window; an interval handed to the helper must be a known constant of at most
``MAX_INTERVAL``. Shell and text sleeps never pass: bash has no waits or retries
(ARCHITECTURE.md, "Where bash stops").
"""

from __future__ import annotations

import ast
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAX_INTERVAL = 1.0  # seconds: a poll sleeps a short interval between checks
_SHELL_SLEEP = re.compile(r"\bsleep\b")
_SLEEP_NAMES = {"sleep"}  # time.sleep, asyncio.sleep, trio/anyio.sleep, from time import sleep

# (file, function) -> (kind, why). Kinds, each checked against the code:
#   helper:   the one wait helper (launchers.waits): every poll in vllm-hpc goes through it
#   window:   the sleep is the measurement itself (rates between two /metrics scrapes)
ALLOWED: dict[tuple[str, str], tuple[str, str]] = {
    ("python/launchers/waits.py", "wait_for"): (
        "helper",
        "a condition, a deadline, what is awaited and the log to read; the clock injectable",
    ),
    ("python/launchers/waits.py", "ticks"): (
        "helper",
        "the cadence of a supervising loop that ends on its own condition",
    ),
    ("python/launchers/observe/job.py", "Job.watch_metrics"): (
        "window",
        "the interval between two /metrics scrapes (through the helper's ticks) is what "
        "the rates are measured over",
    ),
}
_WAITS = {"wait_for", "ticks"}  # the helper's entry points: their intervals are checked


@dataclass(frozen=True)
class Hit:
    path: str  # relative to the repository
    line: int
    where: str  # the enclosing function's qualified name ("" at module level or in shell)
    code: str
    problem: str | None = None  # None: explained by ALLOWED


def _number(node: ast.expr, constants: dict[str, float]) -> float | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


class _Finder(ast.NodeVisitor):
    def __init__(self, path: str, lines: list[str]) -> None:
        self.path, self.lines = path, lines
        self.names: list[str] = []
        self.functions: list[ast.AST] = []
        self.loops = [0]  # `while` loops entered inside the current function
        self.docstrings: set[int] = set()
        self.constants: dict[str, float] = {}
        self.found: list[tuple[ast.AST, str, ast.AST | None, int, str]] = []

    def visit_Module(self, node: ast.Module) -> None:
        for stmt in node.body:  # module-level numbers, e.g. POLL = 0.2
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
                continue
            target, value = stmt.targets[0], stmt.value
            if isinstance(target, ast.Name) and (number := _number(value, {})) is not None:
                self.constants[target.id] = number
        self._docstring(node)
        self.generic_visit(node)

    def _docstring(self, node: ast.AST) -> None:
        body = getattr(node, "body", [])
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            self.docstrings.add(id(body[0].value))

    def _scope(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self._docstring(node)
        self.names.append(node.name)
        is_function = not isinstance(node, ast.ClassDef)
        if is_function:
            self.functions.append(node)
            self.loops.append(0)
        self.generic_visit(node)
        if is_function:
            self.functions.pop()
            self.loops.pop()
        self.names.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scope

    def visit_While(self, node: ast.While) -> None:
        self.loops[-1] += 1
        self.generic_visit(node)
        self.loops[-1] -= 1

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in _SLEEP_NAMES:
            self._record(node, "call")
        if name in _WAITS and not self.path.endswith("/waits.py"):
            interval = next((k.value for k in node.keywords if k.arg == "interval"), None)
            if interval is None and name == "ticks" and node.args:
                interval = node.args[0]
            if interval is not None:
                self._record(interval, "interval")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        text = node.value
        if not isinstance(text, str) or id(node) in self.docstrings:
            return
        if text == "sleep" or _SHELL_SLEEP.search(text):
            self._record(node, "text")

    def _record(self, node: ast.AST, kind: str) -> None:
        function = self.functions[-1] if self.functions else None
        self.found.append((node, kind, function, self.loops[-1], ".".join(self.names)))

    def hits(self) -> list[Hit]:
        out = []
        for node, kind, function, loops, where in self.found:
            line = getattr(node, "lineno", 0)
            code = self.lines[line - 1].strip() if line else ""
            problem = self._judge(node, kind, function, loops, where)
            out.append(Hit(self.path, line, where, code, problem))
        return out

    def _judge(
        self, node: ast.AST, kind: str, function: ast.AST | None, loops: int, where: str
    ) -> str | None:
        del function
        if kind == "text":
            return "text that runs `sleep` (a rendered script or an argv): poll in Python"
        if kind == "interval":
            assert isinstance(node, ast.expr)
            value = _number(node, self.constants)
            window = ALLOWED.get((self.path, where), ("", ""))[0] == "window"
            if window and value is None:  # the caller's window, handed to the helper
                return None
            if value is None or value > MAX_INTERVAL:
                return f"a poll interval must be a known constant <= {MAX_INTERVAL} s"
            return None
        entry = ALLOWED.get((self.path, where))
        if entry is None:
            return "not in ALLOWED: wait through launchers.waits (wait_for, ticks)"
        assert isinstance(node, ast.Call)
        if entry[0] == "window":
            interval = _number(node.args[0], {}) if node.args else None
            return None if interval is None else f"a fixed {interval:g} s is not a window"
        if not loops:
            return "the wait helper sleeps only between two looks, inside its loop"
        return None


def python_sleeps(text: str, path: str) -> list[Hit]:
    finder = _Finder(path, text.splitlines())
    finder.visit(ast.parse(text, filename=path))
    return finder.hits()


def text_sleeps(text: str, path: str) -> list[Hit]:
    """Shell, sbatch, Dockerfile, YAML: every non-comment line that says sleep."""
    hits = []
    for number, line in enumerate(text.splitlines(), 1):
        code = line.strip()
        if code.startswith("#") or not _SHELL_SLEEP.search(code):
            continue
        problem = "no sleep outside Python: the runtime polls with a deadline (bash execs it)"
        hits.append(Hit(path, number, "", code, problem))
    return hits


def scan_file(file: Path, path: str) -> list[Hit]:
    """All sleeps in one file; ``path`` is where it sits in the repository."""
    text = file.read_text(encoding="utf-8", errors="replace")
    return python_sleeps(text, path) if path.endswith(".py") else text_sleeps(text, path)


def scanned_files() -> list[Path]:
    files = [
        *sorted((REPO / "python" / "launchers").rglob("*.py")),
        *sorted((REPO / "python" / "launchers").rglob("*.bash")),
        *sorted(p for p in (REPO / "bin").iterdir() if p.is_file()),
        *sorted((REPO / "slurm").glob("*.sbatch")),
        *sorted(p for p in (REPO / "containers").rglob("*") if p.is_file() and p.suffix != ".md"),
    ]
    return [p for p in files if "__pycache__" not in p.parts]


def repo_hits() -> list[Hit]:
    return [hit for f in scanned_files() for hit in scan_file(f, str(f.relative_to(REPO)))]


# --- the repository ----------------------------------------------------------------------


def test_scan_covers_every_door() -> None:
    names = {str(p.relative_to(REPO)) for p in scanned_files()}
    for expected in (
        "python/launchers/runtime/leader.py",
        "bin/multi-node-serving.sh",
        "bin/dp-node.bash",
        "python/launchers/sbatch.bash",
        "slurm/multinode_tp_pp.sbatch",
        "containers/docker/Dockerfile",
        "containers/k8s/lws.yaml",
    ):
        assert expected in names


def test_no_fixed_sleep_anywhere() -> None:
    bad = [hit for hit in repo_hits() if hit.problem]
    assert not bad, "\n".join(f"{h.path}:{h.line} {h.where}: {h.code}  <- {h.problem}" for h in bad)


def test_the_helpers_default_interval_is_short() -> None:
    from launchers import waits

    assert 0 < waits.POLL <= MAX_INTERVAL


def test_every_allowed_sleep_still_exists() -> None:
    used = {(hit.path, hit.where) for hit in repo_hits()}
    stale = sorted(set(ALLOWED) - used)
    assert not stale, f"remove these ALLOWED entries, their sleep is gone: {stale}"


# --- the test can fail: planted sleeps in temporary copies --------------------------------

PLANTED = [
    pytest.param("bin/x.sh", "#!/bin/bash\nray start --head &\nsleep 5\n", id="bash-sleep-5"),
    pytest.param("slurm/x.sbatch", "#!/bin/bash\nsrun a &\n  sleep 30 && srun b\n", id="sbatch"),
    pytest.param("containers/k8s/x.yaml", 'command: ["sleep", "3600"]\n', id="k8s-keepalive"),
    pytest.param("containers/docker/Dockerfile", "RUN sleep 10\n", id="dockerfile"),
    pytest.param(
        "python/launchers/x.py", "import time\n\n\ndef go():\n    time.sleep(5)\n", id="time-sleep"
    ),
    pytest.param(
        "python/launchers/x.py",
        "import asyncio\n\n\nasync def go():\n    await asyncio.sleep(1)\n",
        id="asyncio-sleep",
    ),
    pytest.param(
        "python/launchers/x.py",
        "from time import sleep\n\n\ndef go():\n    sleep(2)\n",
        id="bare-sleep",
    ),
    pytest.param(
        "python/launchers/x.py",
        'SCRIPT = "ray start --head &\\nsleep 10\\nvllm serve m\\n"\n',
        id="rendered-script",
    ),
    pytest.param(
        "python/launchers/x.py",
        'import subprocess\n\nsubprocess.run(["sleep", "5"], check=True)\n',
        id="sleep-argv",
    ),
    # An ALLOWED name does not launder a fixed sleep: the shape is checked too.
    pytest.param(
        "python/launchers/health.py",
        "import time\n\n\ndef wait_for_port():\n    time.sleep(30)\n",
        id="allowed-name-no-loop",
    ),
    pytest.param(
        "python/launchers/health.py",
        "import time\n\n\ndef wait_for_port():\n    while True:\n        time.sleep(30)\n",
        id="allowed-name-long-interval",
    ),
    pytest.param(
        "python/launchers/health.py",
        "import time\nPOLL = 0.2\n\n\ndef wait_for_port(ok):\n    while not ok():\n"
        "        time.sleep(POLL)\n",
        id="allowed-name-no-deadline",
    ),
    pytest.param(
        "python/launchers/observe/job.py",
        "import time\n\n\nclass Job:\n    def metrics(self):\n        time.sleep(30)\n",
        id="window-with-a-fixed-time",
    ),
    pytest.param(
        "python/launchers/runtime/leader.py",
        "from launchers import waits\n\n\ndef go(ok):\n"
        "    waits.wait_for(ok, what='x', timeout=9, interval=30)\n",
        id="helper-with-a-long-interval",
    ),
    pytest.param(
        "python/launchers/runtime/leader.py",
        "from launchers import waits\n\n\ndef go():\n    for _ in waits.ticks(60):\n        pass\n",
        id="ticks-with-a-long-interval",
    ),
]


@pytest.mark.parametrize(("path", "text"), PLANTED)
def test_a_planted_sleep_is_caught(path: str, text: str, tmp_path: Path) -> None:
    planted = tmp_path / Path(path).name
    planted.write_text(text)
    hits = scan_file(planted, path)
    assert hits and all(hit.problem for hit in hits), hits


def test_a_sleep_planted_in_a_copy_of_a_real_file_is_caught(tmp_path: Path) -> None:
    for path, before, planted_line in (
        ("bin/multi-node-serving.sh", "VLLM_HPC_PROG=", "sleep 5"),
        ("python/launchers/runtime/leader.py", "def lead(", "    time.sleep(5)"),
    ):
        copy = tmp_path / Path(path).name
        shutil.copy(REPO / path, copy)
        assert not [h for h in scan_file(copy, path) if h.problem]
        lines = copy.read_text().splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith(before))
        if path.endswith(".py"):  # the first line of the function's body
            assert lines[at].rstrip().endswith(":"), lines[at]
            at += 1
        lines.insert(at, planted_line)
        copy.write_text("\n".join(lines) + "\n")
        bad = [h for h in scan_file(copy, path) if h.problem]
        assert [h.code for h in bad] == [planted_line.strip()], bad


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("bin/x.sh", "#!/bin/bash\n# no sleep here: the runtime polls\nexec python -m x\n"),
        ("python/launchers/x.py", '"""Never sleep: poll."""\n# sleep 5 in a comment\nx = 1\n'),
        ("python/launchers/x.py", "def f():\n    '''Waits without a sleep.'''\n    sleepy = 1\n"),
    ],
)
def test_words_about_sleep_are_not_sleeps(path: str, text: str, tmp_path: Path) -> None:
    planted = tmp_path / Path(path).name
    planted.write_text(text)
    assert scan_file(planted, path) == []
