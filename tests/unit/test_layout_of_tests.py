"""The tests' own layout (house rule 9): no test module imports another. Helpers that
test modules share live in ``tests/unit/conftest.py`` (fixtures), ``tests/unit/helpers/``
or the cluster tests' helper modules (``bed.py``, ``api.py``, ...), never in a
``test_*.py``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def _names_a_test_module(dotted: str) -> bool:
    return any(part.startswith("test_") for part in dotted.split("."))


def imported_test_modules(source: str) -> list[str]:
    """The ``test_*`` modules that ``source`` imports anywhere (top level or in a function),
    dotted as written: ``.test_x``, ``tests.unit.test_x`` (``from . import test_x`` gives
    ``.test_x``)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _names_a_test_module(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            dots = "." * node.level
            if node.module and _names_a_test_module(node.module):
                found.append(dots + node.module)
            else:  # from . import test_x / from tests.unit import test_x
                prefix = dots + (f"{node.module}." if node.module else "")
                found += [
                    prefix + alias.name for alias in node.names if alias.name.startswith("test_")
                ]
    return found


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .test_cli import run", [".test_cli"]),
        ("from tests.unit.test_waits import FakeClock", ["tests.unit.test_waits"]),
        ("import tests.unit.test_cli", ["tests.unit.test_cli"]),
        ("import tests.unit.test_cli as cli", ["tests.unit.test_cli"]),
        ("from . import test_cli", [".test_cli"]),
        ("from tests.cluster import test_faults", ["tests.cluster.test_faults"]),
        ("def f():\n    from .test_cli import run", [".test_cli"]),
        ("from .helpers.cli import run", []),
        ("from .conftest import assert_one_clear_line", []),
        ("from tests.cluster import api, bed", []),
        ("from launchers.plan.launch import LaunchPlan", []),
    ],
)
def test_every_form_of_importing_a_test_module_is_seen(source: str, expected: list[str]) -> None:
    assert imported_test_modules(source) == expected


def test_no_test_module_imports_another() -> None:
    modules = sorted(TESTS.rglob("test_*.py"))
    assert len(modules) > 50, "the test tree moved: fix TESTS"
    offenders = [
        f"{path.relative_to(TESTS.parent)}: {name}"
        for path in modules
        for name in imported_test_modules(path.read_text())
    ]
    assert not offenders, (
        "a test module imports another test module; move the shared helper to "
        "conftest.py (a fixture) or a helper module (tests/unit/helpers/, tests/cluster/):\n"
        + "\n".join(offenders)
    )
