"""More ``vllm serve`` arguments given as one string (the sbatch templates'
``EXTRA_VLLM_ARGS``): split as a POSIX shell would, so a quoted JSON value stays one
argument. Each argument is checked later with the others (``resolve``)."""

from __future__ import annotations

import shlex

from launchers.errors import InputError, shown
from launchers.spec import fields

QUOTING_FIX = (
    "quote as in a shell, e.g. --override-generation-config '{\"temperature\": 0.5}', "
    "and close every quote"
)


def split_extra_args(text: str, name: str) -> tuple[str, ...]:
    """``text`` as arguments; ``name`` is what the user set (named in the error)."""
    try:
        fields.plain_text(text, limit=8 * fields.MAX_TEXT)
    except ValueError as exc:
        raise InputError(f"{name}: {exc} (got {shown(text)})") from None
    try:
        return tuple(shlex.split(text, comments=False, posix=True))
    except ValueError as exc:  # "No closing quotation", "No escaped character"
        reason = str(exc).lower()
        raise InputError(f"{name}: {reason} in {shown(text)}", fix=QUOTING_FIX) from None
