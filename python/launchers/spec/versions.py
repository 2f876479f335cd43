"""Version numbers, read with ``packaging`` (PEP 440): '0.11.1', 'v0.9', '0.11.1rc2',
'0.32.0+cpu'. The one parser for vLLM's and Ray's versions."""

from __future__ import annotations

from packaging.version import InvalidVersion, Version


def release(text: str) -> tuple[int, int, int]:
    """The release triple of ``text``: '0.32.0+cpu' -> (0, 32, 0), 'v0.9' -> (0, 9, 0).
    Raises ValueError for what is not a version."""
    try:
        parts = Version(text.strip()).release
    except InvalidVersion:
        raise ValueError(f"{text!r} is not a version") from None
    major, minor, micro = (*parts, 0, 0)[:3]
    return major, minor, micro
