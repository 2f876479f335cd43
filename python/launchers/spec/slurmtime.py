"""SLURM's time syntax, in one place: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
``D-HH:MM``, ``D-HH:MM:SS`` (what ``--time`` accepts)."""

from __future__ import annotations

import re

_TIME_RE = re.compile(r"(?:([0-9]+)-)?([0-9]+)(?::([0-9]{1,2}))?(?::([0-9]{1,2}))?")
FORMS = "MM, HH:MM:SS or D-HH:MM:SS"


def minutes(text: str) -> int:
    """A SLURM time as whole minutes (seconds round up); ValueError if it is none."""
    match = _TIME_RE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a SLURM time (use {FORMS})")
    days = int(match[1] or 0)
    parts = [int(p) for p in match.groups()[1:] if p is not None]
    if match[1] is not None:  # D-HH[:MM[:SS]]
        hours, mins, seconds = [*parts, 0, 0][:3]
    elif len(parts) == 1:  # MM
        hours, mins, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, mins, seconds = 0, parts[0], parts[1]
    else:  # HH:MM:SS
        hours, mins, seconds = parts
    return days * 1440 + hours * 60 + mins + (1 if seconds else 0)
