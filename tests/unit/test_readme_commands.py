"""Every planning command of README's first screen (its ``bash`` blocks before the
"Documentation" heading) runs as written, in-process, and says something: the lines that
start with ``vllm-hpc`` or ``python -m launchers`` and either plan (``--dry-run``) or list
(``models list``). A line that shows ``--wait`` is run with ``--dry-run`` in its place
(the same options, planned and printed, nothing submitted), so an option README names
that does not exist, or a model it names that the registry does not know, fails here.
The commands that need a job (``status``, ``jobs``, ``stop``) are the cluster suite's."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

from launchers.cli import main as vllm_hpc
from launchers.submit.__main__ import main as python_m_submit

from .helpers.cli import run

README = Path(__file__).resolve().parents[2] / "README.md"
FIRST_SCREEN_END = "## Documentation"
_OPEN = re.compile(r"^```bash\s*$")
DOORS: dict[str, Callable[[Sequence[str] | None], NoReturn]] = {
    "vllm-hpc": vllm_hpc,
    "python -m launchers.submit": python_m_submit,
}


def first_screen_commands(text: str) -> list[list[str]]:
    """The planning commands of ``text``'s ``bash`` blocks before the Documentation
    heading, as argv (continuation lines joined, comments dropped, ``--wait`` made
    ``--dry-run``)."""
    head = text.split(f"\n{FIRST_SCREEN_END}\n", 1)[0]
    commands: list[list[str]] = []
    inside, pending = False, ""
    for line in head.splitlines():
        if not inside:
            inside = bool(_OPEN.match(line))
            continue
        if line.startswith("```"):
            inside, pending = False, ""
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        argv = shlex.split(pending + line, comments=True)
        pending = ""
        if not argv or not (argv[0] == "vllm-hpc" or argv[:2] == ["python", "-m"]):
            continue
        if argv[:2] == ["python", "-m"] and not argv[2].startswith("launchers"):
            continue
        argv = ["--dry-run" if arg == "--wait" else arg for arg in argv]
        if "--dry-run" in argv or argv[1:3] == ["models", "list"]:
            commands.append(argv)
    return commands


def run_readme_command(argv: list[str]) -> tuple[int, str, str]:
    """Run one README command through its own door, in-process."""
    if argv[0] == "vllm-hpc":
        return run(argv[1:], entry=DOORS["vllm-hpc"])
    door = " ".join(argv[:3])
    assert door in DOORS, f"README runs {door}: add its main to DOORS"
    return run(argv[3:], entry=DOORS[door])


COMMANDS = first_screen_commands(README.read_text())


def test_the_first_screen_has_its_planning_commands() -> None:
    """The quick start's three (its ``--wait`` as a dry run) and the 70B example."""
    assert [c[:3] for c in COMMANDS] == [
        ["vllm-hpc", "models", "list"],
        ["vllm-hpc", "submit", "-m"],
        ["vllm-hpc", "submit", "-m"],
        ["python", "-m", "launchers.submit"],
    ]


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_each_runs_and_says_something(argv: list[str]) -> None:
    code, out, err = run_readme_command(argv)
    assert code == 0, err
    assert out.strip()


def test_an_option_that_does_not_exist_fails() -> None:
    """The check itself: README with a misspelt option or model does not pass."""
    text = README.read_text()
    for right, wrong in (("--gpus-per-node", "--gpus-per-nodes"), ("-t 01:00:00", "-T 1h")):
        assert right in text
        broken = [
            c for c in first_screen_commands(text.replace(right, wrong)) if wrong.split()[0] in c
        ]
        assert broken, wrong
        for argv in broken:
            code, _, err = run_readme_command(argv)
            assert code == 2 and "No such option" in err, (argv, err)
