"""Typed errors with actionable one-line messages.

The library raises these; only ``cli.py`` turns them into exit codes and output.
Every message names the field (or thing) at fault and how to fix it.
"""

from __future__ import annotations

import reprlib

# The longest value ``shown`` puts into a message, and the longest message itself: a
# value from a file or a flag can be megabytes (a YAML alias bomb expands to gigabytes).
SHOWN_LIMIT = 80
MESSAGE_LIMIT = 2000


def shown(value: object, limit: int = SHOWN_LIMIT) -> str:
    """``repr(value)`` for an error message: one line, at most ``limit`` characters (long
    strings and containers shortened with ``...``, nesting cut off), whatever its size."""
    short = reprlib.Repr()
    short.maxlevel = 3
    short.maxstring = short.maxother = short.maxlong = max(limit, 12)
    for attr in ("maxtuple", "maxlist", "maxarray", "maxdict", "maxset", "maxfrozenset"):
        setattr(short, attr, 4)
    try:
        text = " ".join(short.repr(value).split())
    except Exception:  # an int too long for repr(), a repr that fails
        text = f"<a {type(value).__name__} too long to show>"
    return text if len(text) <= limit else text[: max(limit - 3, 1)] + "..."


def clipped(text: str, limit: int = 200) -> str:
    """Text for a message as it is (no quotes added), on one line, at most ``limit``
    characters: for a message of another library (YAML, pydantic) that may echo a value."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(limit - 3, 1)] + "..."


class VllmHpcError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with. ``lines``: what the message
    points at (the last lines of a log), printed after it, one per line."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        fix: str | None = None,
        lines: tuple[str, ...] = (),
    ) -> None:
        self.field = field
        self.fix = fix
        self.detail = message
        self.lines = lines
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.detail
        if self.field and not text.startswith(self.field):
            text = f"{self.field}: {text}"
        if self.fix:
            text = f"{text} ({self.fix})"
        return clipped(text, MESSAGE_LIMIT)


class InputError(VllmHpcError):
    """Bad input from the user: flags, registry files, environment. Exit code 2."""

    exit_code = 2


class RegistryError(InputError):
    """A registry or site file that cannot be read or does not validate."""


class LayoutError(InputError):
    """A parallel layout that cannot run on the requested allocation or model."""


class UnsupportedFeatureError(InputError):
    """A feature the target vLLM (or Ray) version does not have."""


class SubmitError(VllmHpcError):
    """The scheduler refused or failed to take the job."""


class RuntimeFailure(VllmHpcError):
    """Something failed on the allocated nodes."""


class FrontEnded(RuntimeFailure):
    """A service's front job has ended (often before its first heartbeat: it could not
    start); ``lines`` are the last lines of its log."""


class WaitTimeout(RuntimeFailure):
    """A wait with a deadline gave up: names what, how long, and the log to read."""
