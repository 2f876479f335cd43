"""Colour on a terminal only (cli/colour.py): plain when not a TTY or with NO_COLOR."""

from __future__ import annotations

import re
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


def _summary(capsys: pytest.CaptureFixture[str]) -> str:
    from launchers.cli.service import _print_summary

    replica = {"slot": 0, "job_id": "41", "generation": 1, "role": "serving", "state": "READY",
               "url": "http://n1:8000/v1", "ends_at": None}  # fmt: skip
    failed = {**replica, "slot": 1, "job_id": "42", "state": "FAILED", "url": None}
    row = {"name": "chat", "state": "DEGRADED", "message": "1 of 2 READY", "front": None,
           "replicas": [replica, failed], "events": []}  # fmt: skip
    _print_summary(row)
    return capsys.readouterr().out


@pytest.mark.usefixtures("tty")
def test_service_status_colours_states_and_keeps_its_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # click.echo strips colour off a terminal: capsys is not one, the fixture says it is
    monkeypatch.setattr("click.utils.should_strip_ansi", lambda stream=None, color=None: False)
    coloured = _summary(capsys)
    assert "service chat: \x1b[33mDEGRADED\x1b[0m (1 of 2 READY)" in coloured
    assert "\x1b[32mREADY" in coloured and RED + "FAILED" in coloured
    monkeypatch.setenv("NO_COLOR", "1")
    plain = _summary(capsys)
    assert ANSI not in plain
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain  # same text, same alignment
