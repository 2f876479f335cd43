"""Colour on a terminal only (cli/colour.py): plain when not a TTY or with NO_COLOR."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from launchers.cli import cli, colour, main

RED = "\x1b[31m"
ANSI = "\x1b["


@pytest.fixture
def tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(colour, "_isatty", lambda err: True)


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        main(["status", "x/y"])
    return capsys.readouterr().err


def test_error_is_plain_off_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert _error(capsys).startswith("Error: ")


@pytest.mark.usefixtures("tty")
def test_error_is_red_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys)
    assert RED in err.split("Error:")[0] and "Error:" in err


@pytest.mark.usefixtures("tty")
def test_no_color_turns_colour_off(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert ANSI not in _error(capsys)
    assert colour.state("READY") == "READY"


@pytest.mark.usefixtures("tty")
def test_states_take_their_colours() -> None:
    assert colour.state("READY  ") == "\x1b[32mREADY  \x1b[0m"
    assert colour.state("FAILED").startswith(RED)
    assert colour.state("PENDING").startswith("\x1b[33m")
    assert colour.state("LOADING") == "LOADING"


def _dry_run(tmp_path: Path, color: bool) -> str:
    # TP across nodes is a warning in the dry run.
    args = ["submit", "llama-3.2-3b-instruct", "-N", "2", "-G", "4", "--tp", "8", "-p", "gpu"]
    args += ["--allow-cross-node-tp", "--job-root", str(tmp_path), "--dry-run"]
    done = CliRunner().invoke(cli, args, color=color)
    assert done.exit_code == 0, done.output
    assert "  warning   " in done.output
    return done.output


def test_dry_run_warnings_plain_off_a_terminal(tmp_path: Path) -> None:
    assert ANSI not in _dry_run(tmp_path, color=True)


@pytest.mark.usefixtures("tty")
def test_dry_run_warnings_yellow_on_a_terminal(tmp_path: Path) -> None:
    out = _dry_run(tmp_path, color=True)
    (line,) = [x for x in out.splitlines() if "warning   " in x][:1]
    assert line.startswith("\x1b[33m  warning   ")
    assert out.count(ANSI) == 2 * out.count("  warning   ")  # each line: on, off
