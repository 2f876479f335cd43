"""Colour on a terminal only: errors red, warnings yellow, job states by meaning.

Plain when the stream is not a terminal or ``NO_COLOR`` is set (https://no-color.org);
render/ stays plain text, the CLI colours what it prints.
"""

from __future__ import annotations

import os
import sys

import click

# A job's states and a service's (UP, IDLE, DEGRADED, BACKING_OFF) by meaning.
STATES = {
    "READY": "green",
    "UP": "green",
    "IDLE": "cyan",
    "FAILED": "red",
    "BACKING_OFF": "red",
    "PENDING": "yellow",
    "DEGRADED": "yellow",
}


def _isatty(err: bool) -> bool:
    stream = sys.stderr if err else sys.stdout
    return stream.isatty()


def enabled(err: bool = False) -> bool:
    """Whether what goes to stdout (``err``: stderr) may be coloured."""
    return not os.environ.get("NO_COLOR") and _isatty(err)


def paint(text: str, colour: str, *, err: bool = False, bold: bool | None = None) -> str:
    return click.style(text, fg=colour, bold=bold) if enabled(err) else text


def state(text: str, *, err: bool = False) -> str:
    """A job state (``text`` may be padded) in its colour; others as they are."""
    colour = STATES.get(text.strip())
    return paint(text, colour, err=err) if colour else text


def warnings(text: str) -> str:
    """The dry run's ``warning`` lines in yellow."""
    if not enabled():
        return text
    lines = text.splitlines(keepends=True)
    return "".join(
        paint(line, "yellow") if line.lstrip().startswith("warning ") else line for line in lines
    )


__all__ = ["enabled", "paint", "state", "warnings"]
