"""The layering contract (pyproject's [tool.importlinter]) can fail: a planning module
that imports subprocess, observe code that imports the node runtime, plans or submits,
or any import from a lower floor into a higher one breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree, env={"PYTHONPATH": str(tree / "python"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    if not LINT.exists():
        pytest.fail(f"{LINT} is missing: `make install` installs import-linter")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(
        REPO / "python" / "launchers",
        tmp_path / "python" / "launchers",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path


def plant(tree: Path, module: str, line: str) -> None:
    """Add ``line`` to the module's imports: after its ``from __future__`` import, or
    (a module that evaluates its annotations) after its docstring."""
    path = tree / "python" / "launchers" / f"{module.replace('.', '/')}.py"
    text = path.read_text()
    marker = "from __future__ import annotations\n"
    if marker not in text:
        marker = text[: text.index('"""\n', 3) + 4]
    planted = text.replace(marker, marker + line + "\n", 1)
    assert planted != text, module
    path.write_text(planted)


def test_the_tree_keeps_the_contract(tree: Path) -> None:
    done = lint(tree)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("plan/launch", "import subprocess", "launchers.plan is not allowed to import subprocess"),
        ("render/text", "import socket", "launchers.render is not allowed to import socket"),
        ("plan/commands", "from launchers import _proc", "not allowed to import launchers._proc"),
        ("spec/config", "from launchers import health", "not allowed to import launchers.health"),
        (
            "observe/status",
            "from launchers.runtime import run",
            "is not allowed to import launchers.runtime",
        ),
        # The floors: nothing imports upward.
        (
            "runtime/leader",
            "from launchers import cli",
            "launchers.runtime.leader -> launchers.cli",
        ),
        (
            "plan/layout",
            "from launchers.input import registry",
            "launchers.plan.layout -> launchers.input",
        ),
        (
            "jobdir/jobfiles",
            "from launchers.plan import launch",
            "launchers.jobdir.jobfiles -> launchers.plan",
        ),
        (
            "input/resolve",
            "from launchers.submit import slurm",
            "launchers.input.resolve -> launchers.submit",
        ),
        # observe reads: planning and submitting are the client's, one floor up.
        (
            "observe/job",
            "from launchers.input import planner",
            "launchers.observe is not allowed to import launchers.input",
        ),
        (
            "observe/status",
            "from launchers.submit import slurm",
            "launchers.observe is not allowed to import launchers.submit.slurm",
        ),
        (
            "observe/job",
            "from launchers import client",
            "launchers.observe.job -> launchers.client",
        ),
        ("client", "from launchers import service", "launchers.client -> launchers.service"),
        (
            "runtime/context",
            "from launchers.input import probe",
            "launchers.runtime is not allowed to import launchers.input",
        ),
    ],
)
def test_a_planted_import_breaks_the_contract(
    tree: Path, module: str, line: str, broken: str
) -> None:
    plant(tree, module, f"{line}  # noqa")
    done = lint(tree)
    assert done.returncode != 0
    assert broken in done.stdout, done.stdout
