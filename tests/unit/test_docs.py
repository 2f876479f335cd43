"""README.md and docs/*.md as a reader meets them: every code fence closed and labelled
with a language (an unlabelled opener is almost always a closing fence that went
missing, which turns the prose after it into code and the code after it into prose),
every relative link pointing at a file of this repository (and at a heading that exists
when it names one), every other link a real https URL, and none of the words only the
authors know. `make lint` runs this module beside the Markdown linter (pymarkdown), which
checks the rest of the structure but not a fence left open at the end of a file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# Words that mean something only to the people who wrote vllm-hpc, as the issue that
# moved the README into docs/ listed them; in prose, not in code or paths.
_INTERNAL = re.compile(
    r"\b(seeds?|doors?|floors?|bed|house rules?|issue \d+|sessions?)\b"
    r"|as the node runtime lands|\.\./shared",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Fence:
    line: int
    info: str


def fence_problems(text: str) -> list[str]:
    """What is wrong with the code fences of ``text``, read as CommonMark reads them: an
    opening fence without a language, or a fence still open at the end."""
    problems: list[str] = []
    opened: tuple[str, int, Fence] | None = None  # (fence character, length, where)
    for number, line in enumerate(text.splitlines(), start=1):
        found = _FENCE.match(line.lstrip())
        if opened is None:
            if found is None:
                continue
            fence, info = found["fence"], found["info"].strip()
            if fence[0] == "`" and "`" in info:
                continue  # inline code that starts a line, not a fence
            opened = (fence[0], len(fence), Fence(number, info))
            if not info:
                problems.append(f"line {number}: a code fence opens without a language")
        elif found is not None:
            fence, info = found["fence"], found["info"].strip()
            if fence[0] == opened[0] and len(fence) >= opened[1] and not info:
                opened = None
    if opened is not None:
        problems.append(f"line {opened[2].line}: a code fence opens and is never closed")
    return problems


def outside_fences(text: str) -> list[tuple[int, str]]:
    """The numbered lines of ``text`` outside code fences."""
    out: list[tuple[int, str]] = []
    inside = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line.lstrip()):
            inside = not inside
        elif not inside:
            out.append((number, line))
    return out


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The lines of ``text`` outside code fences, inline code removed."""
    return [(number, _INLINE_CODE.sub("", line)) for number, line in outside_fences(text)]


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of ``text``."""
    anchors: set[str] = set()
    for _, line in outside_fences(text):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            title = heading[1].replace("`", "").lower()
            slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
            anchors.add(slug)
    return anchors


def link_problems(page: Path, repo: Path) -> list[str]:
    """Links of ``page`` that lead nowhere: a relative target that is not a file or
    directory of ``repo``, an anchor no heading has, or an absolute URL that is not https."""
    problems: list[str] = []
    text = page.read_text()
    for number, line in prose_lines(text):
        for link in _LINK.finditer(line):
            target = link["target"]
            where = f"{page.relative_to(repo)}:{number}: {target}"
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                if not target.startswith("https://"):
                    problems.append(f"{where}: not an https URL")
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            if not resolved.is_relative_to(repo):
                problems.append(f"{where}: leaves the repository")
            elif not resolved.exists():
                problems.append(f"{where}: no such file")
            elif (
                anchor
                and resolved.suffix == ".md"
                and anchor not in heading_anchors(resolved.read_text())
            ):
                problems.append(f"{where}: no heading with that anchor")
    return problems


def test_the_pages_are_found() -> None:
    names = {page.name for page in PAGES}
    assert {"README.md", "operate.md", "security.md", "testing.md"} <= names, names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_fence_is_closed_and_labelled(page: Path) -> None:
    assert fence_problems(page.read_text()) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_link_leads_somewhere(page: Path) -> None:
    assert link_problems(page, REPO) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_no_word_only_the_authors_know(page: Path) -> None:
    found = [
        f"line {number}: {match[0]!r}"
        for number, line in prose_lines(page.read_text())
        for match in _INTERNAL.finditer(re.sub(r"\]\([^)]*\)", "]", line))
    ]
    assert found == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# T\n\n```bash\nmake demo\n```\n", []),
        ("```text\na\n```\n\n````markdown\n```\ninner\n```\n````\n", []),
        ("~~~yaml\na: 1\n~~~\n", []),
        ("run `make demo` first\n```bash\nx\n```\n", []),
        # a fence left open at the end
        (
            "# T\n\n```bash\nmake demo\n\nprose\n",
            ["line 3: a code fence opens and is never closed"],
        ),
        # the opening fence of the second block went missing: its closing fence opens a
        # block that swallows the prose after it, up to the next block's closing fence
        (
            "```text\na\n```\n\n$ status\n```\n\nprose\n\n```text\nb\n```\n",
            ["line 6: a code fence opens without a language"],
        ),
        (
            "```text\na\n```\n$ b\n```\n",
            [
                "line 5: a code fence opens without a language",
                "line 5: a code fence opens and is never closed",
            ],
        ),
        ("```\nno language\n```\n", ["line 1: a code fence opens without a language"]),
    ],
)
def test_fence_problems(text: str, expected: list[str]) -> None:
    assert fence_problems(text) == expected


def test_broken_links_are_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "here.md").write_text("# Here\n\n## A service's front\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/here.md) [ok](docs/here.md#a-services-front) [ok](https://example.org/x)\n"
        "[gone](docs/gone.md) [anchor](docs/here.md#nowhere) [out](../shared/FACTS.md)\n"
        "[plain](http://example.org/) `[code](not/checked.md)`\n"
        "```text\n[in a block](not/checked.md)\n```\n"
    )
    assert link_problems(page, tmp_path) == [
        "README.md:2: docs/gone.md: no such file",
        "README.md:2: docs/here.md#nowhere: no heading with that anchor",
        "README.md:2: ../shared/FACTS.md: leaves the repository",
        "README.md:3: http://example.org/: not an https URL",
    ]
