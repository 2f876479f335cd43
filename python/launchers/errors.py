"""Typed errors with actionable one-line messages.

The library raises these; only ``cli.py`` turns them into exit codes and output.
Every message names the field (or thing) at fault and how to fix it.
"""

from __future__ import annotations


class VllmHpcError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, field: str | None = None, fix: str | None = None) -> None:
        self.field = field
        self.fix = fix
        self.detail = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.detail
        if self.field and not text.startswith(self.field):
            text = f"{self.field}: {text}"
        if self.fix:
            text = f"{text} ({self.fix})"
        return " ".join(text.split())


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


class WaitTimeout(RuntimeFailure):
    """A wait with a deadline gave up: names what, how long, and the log to read."""
