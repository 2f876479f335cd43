"""The pages of docs/ as a test reads them: the code block that follows a sentence, so a
test can check that what a page shows is what the code prints."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[3] / "docs"


def block_after(page: str, words: str) -> str:
    """The text of the first fenced block after ``words`` in ``docs/PAGE`` (its lines,
    each ending in a newline)."""
    text = (DOCS / page).read_text()
    start = text.index(words)
    opened = text.index("\n```", start) + 1
    body = text.index("\n", opened) + 1
    closed = text.index("\n```", body)
    return text[body : closed + 1]
