"""The dry-run benchmark's arithmetic (bench/dryrun/run.py), on made-up runs: the order
of the commands, the ratios taken repetition by repetition, ``-X importtime``'s lines,
what the dry run imports beyond the bare import, the table, and the children's
environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench.dryrun.run import (
    BARE,
    beyond,
    child_env,
    markdown,
    parse_importtime,
    ratios,
    rotated,
    summary,
)

IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       120 |        120 |   _io
import time:      2000 |       5000 | pydantic
import time:       300 |       3000 |   launchers.spec
import time:      2700 |       2700 |     launchers.spec.config
not a line of importtime
import time:       900 |        900 | difflib
"""


def test_each_repetition_runs_the_commands_in_another_order() -> None:
    labels = ("dry run", "bare", "floor")
    assert [rotated(labels, rep) for rep in range(4)] == [
        ["dry run", "bare", "floor"],
        ["bare", "floor", "dry run"],
        ["floor", "dry run", "bare"],
        ["dry run", "bare", "floor"],
    ]


def test_ratios_are_taken_within_a_repetition() -> None:
    # The machine slows down in the second repetition: each ratio stays 2.
    runs = {"dry run": [(0.2, 0.18), (0.4, 0.36)], BARE: [(0.1, 0.09), (0.2, 0.18)]}
    got = ratios(runs, BARE)
    assert set(got) == {"dry run"}
    assert got["dry run"]["wall"] == {"median": 2.0, "min": 2.0, "max": 2.0, "n": 2}
    assert got["dry run"]["cpu"]["median"] == 2.0
    assert summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}


def test_importtime_lines_and_what_the_dry_run_adds() -> None:
    rows = parse_importtime(IMPORTTIME)
    assert rows == [
        (120, 120, "_io"),
        (2000, 5000, "pydantic"),
        (300, 3000, "launchers.spec"),
        (2700, 2700, "launchers.spec.config"),
        (900, 900, "difflib"),
    ]
    bare = [(100, 100, "_io"), (1800, 4000, "pydantic")]
    got = beyond(rows, bare)
    assert got["modules"] == 3 and got["self_ms"] == 3.9
    assert got["launchers_modules"] == 2 and got["launchers_self_ms"] == 3.0
    assert [h["module"] for h in got["heaviest_self_ms"]] == [
        "launchers.spec.config",
        "difflib",
        "launchers.spec",
    ]


def test_the_table_has_a_row_per_command_and_a_line_per_tree() -> None:
    runs = {"after": [(0.2, 0.19)], BARE: [(0.1, 0.09)]}
    result: dict[str, Any] = {
        "date": "2026-12-07",
        "machine": {
            "cpus": 2,
            "cpu": "",
            "platform": "Linux",
            "python": "3.11.7",
            "load_average": (0.5, 0.4, 0.3),
        },
        "load_average_after": (0.6, 0.4, 0.3),
        "settings": {"reps": 1, "warmup": 0, "dry_run": ["python", "-m", "launchers.submit"]},
        "runs": {
            label: {"wall": summary([w for w, _ in rows]), "cpu": summary([c for _, c in rows])}
            for label, rows in runs.items()
        },
        "ratios": ratios(runs, BARE),
        "imports": {"after": beyond(parse_importtime(IMPORTTIME), [])},
    }
    text = markdown(result)
    assert "| after | 0.200 (0.200-0.200) | 0.190 | 2.00 (2.00-2.00) | 2.11 |" in text
    assert "| bare | 0.100 (0.100-0.100) | 0.090 | 1 | 1 |" in text
    assert "before 0.50, after 0.60" in text
    assert "after: `-X importtime`" in text and "launchers.spec.config 2.7" in text


def test_the_children_cache_bytecode_and_see_no_site_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_HPC_REGISTRY", "/somewhere/models.yaml")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    env = child_env("/src/python", tmp_path)
    assert env["PYTHONPATH"] == "/src/python"
    assert env["PYTHONPYCACHEPREFIX"] == str(tmp_path / "pycache")
    assert env["XDG_CONFIG_HOME"] == str(tmp_path / "config")
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert not any(name.startswith("VLLM_HPC_") for name in env)
