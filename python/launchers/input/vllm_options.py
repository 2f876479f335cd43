"""The ``vllm serve`` arguments after ``--`` (and a registry entry's ``extra_args``)
against the options of the target vLLM release, at planning rather than after the queue
wait: an option the release does not have ("did you mean"), a value of the wrong type
where the parser's type is plain (int, float, a size such as 4k, a choice).

The table of each checked release ships with the package (``launchers/vllm_options/
<release>.json``, written by ``bench/vllm_flags.py --write-table`` from that release's
own parser): loading it costs a millisecond, importing vLLM seconds. A target release
without a table is not checked. The arguments are read as vLLM's parser reads them
(``FlexibleArgumentParser`` over argparse): ``--a_b`` is ``--a-b``, a unique prefix is
the option it abbreviates, ``-n2`` is ``-n 2``, ``--json-arg.key v`` sets a key of
``--json-arg``, ``-O3`` is ``--optimization-level 3``. Where a reading is unsure the
check lets the argument pass: it never refuses what vLLM would accept.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

from launchers.errors import InputError, shown
from launchers.spec.versions import release
from launchers.spec.versions import shown as shown_release

TABLES = "vllm_options"
# argparse's reading of an argument that starts with '-' but is a value: a negative number
# (the serve parser has no option that looks like one) or text with a space.
_NEGATIVE = re.compile(r"-\d+|-\d*\.\d+")
# human_readable_int (vllm.utils.argparse_utils): 4k, 2.5m, 8G; or a plain int.
_SIZE = re.compile(r"\d+(\.\d+)?[kKmMgGtT]")
# How a value type is named in an error, and an example of it.
_KINDS = {
    "int": ("an integer", "e.g. 8"),
    "size": ("an integer", "e.g. 4096 or 4k"),
    "float": ("a number", "e.g. 0.5"),
}


@dataclass(frozen=True)
class Option:
    """One option of ``vllm serve``: its spellings, how many values it takes (0, 1, n,
    '?', '+', '*') and, where plain, the type of each value."""

    names: tuple[str, ...]
    nargs: int | str = 1
    kind: str | None = None  # int, float, size, choice; None: not checked
    choices: tuple[str, ...] = ()
    words: tuple[str, ...] = ()  # other values the type accepts ("auto", "None")
    fold_case: bool = False
    of_int: bool = False  # choices that are numbers (compared as numbers)

    @property
    def name(self) -> str:
        """The long spelling, as an error names it."""
        return next((n for n in self.names if n.startswith("--")), self.names[0])

    def wrong(self, value: str) -> tuple[str, str] | None:
        """What ``value`` is not, and what the option takes (None: nothing known wrong)."""
        if self.kind is None or value in self.words or value.lower() in self.words:
            return None
        if self.kind == "choice":
            if value in self.choices or (self.fold_case and value.lower() in self.choices):
                return None
            if self.of_int and _int_text(value) in self.choices:
                return None
            listed = ", ".join(self.choices[:12]) + (", ..." if len(self.choices) > 12 else "")
            return "one of its choices", f"one of {listed}"
        try:
            if self.kind == "float":
                float(value)
            elif not (self.kind == "size" and _SIZE.fullmatch(value.strip())):
                int(value)
        except ValueError:
            what, example = _KINDS.get(self.kind, (self.kind, ""))
            also = "".join(f", or {word}" for word in self.words if word)
            return what, f"{what}, {example}{also}"
        return None


@dataclass(frozen=True)
class OptionTable:
    """The options of one vLLM release, by every spelling."""

    release: str
    options: Mapping[str, Option]

    def with_names(self, names: Iterable[str]) -> OptionTable:
        """This table and options known only by name (a probe of the nodes' vLLM, whose
        build may have more): those are not checked beyond their name."""
        more = {n: Option((n,), nargs="?") for n in names if n not in self.options}
        return OptionTable(self.release, {**self.options, **more}) if more else self


def read_table(text: str) -> OptionTable:
    """A table as ``bench/vllm_flags.py --write-table`` writes it."""
    data = json.loads(text)
    options: dict[str, Option] = {}
    for row in data["options"]:
        option = Option(
            names=tuple(row["names"]),
            nargs=row.get("nargs", 1),
            kind=row.get("type"),
            choices=tuple(row.get("choices", ())),
            words=tuple(row.get("words", ())),
            fold_case=bool(row.get("fold_case", False)),
            of_int=row.get("of") == "int",
        )
        options.update(dict.fromkeys(option.names, option))
    return OptionTable(str(data["vllm"]), options)


@functools.cache
def shipped_table(version: str) -> OptionTable | None:
    """The shipped table of ``version``'s release (0.33.0+cpu is 0.33.0), or None when
    vllm-hpc ships none for it (then nothing is checked)."""
    try:
        name = shown_release(release(version))
    except ValueError:
        return None
    path = resources.files("launchers").joinpath(TABLES, f"{name}.json")
    if not path.is_file():
        return None
    return read_table(path.read_text(encoding="utf-8"))


def shipped_releases() -> tuple[str, ...]:
    """The releases vllm-hpc ships a table for."""
    folder = resources.files("launchers").joinpath(TABLES)
    found = (item.name.removesuffix(".json") for item in folder.iterdir())
    return tuple(sorted(found, key=release))


def _int_text(value: str) -> str | None:
    try:
        return str(int(value))
    except ValueError:
        return None


def _is_value(arg: str) -> bool:
    """Whether argparse reads ``arg`` as a value rather than an option."""
    return not arg.startswith("-") or arg == "-" or bool(_NEGATIVE.fullmatch(arg)) or " " in arg


class _Reader:
    """vLLM's reading of one argument list against one table."""

    def __init__(self, table: OptionTable, label: str) -> None:
        self.table = table
        self.label = label

    def refuse(self, text: str, fix: str | None = None) -> InputError:
        return InputError(f"{self.label}: {text}", fix=fix)

    def lookup(self, typed: str) -> tuple[Option, str | None]:
        """The option ``typed`` names (with a value attached to a short option), as
        argparse finds it: the spelling, ``--opt=`` cut off, a unique prefix, ``-xVALUE``."""
        options = self.table.options
        if typed in options:
            return options[typed], None
        found: dict[int, tuple[Option, str | None]] = {}
        if typed.startswith("--"):
            for name, option in options.items():
                if name.startswith(typed):
                    found[id(option)] = (option, None)
        else:
            short, attached = typed[:2], typed[2:]
            for name, option in options.items():
                if name == short:
                    found[id(option)] = (option, attached)
                elif name.startswith(typed):
                    found[id(option)] = (option, None)
        if len(found) == 1:
            return next(iter(found.values()))
        version = f"vLLM {self.table.release}"
        if found:
            names = sorted(o.name for o, _ in found.values())
            listed = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise self.refuse(
                f"{typed} is ambiguous in {version}: it abbreviates {listed}",
                fix="spell the option out",
            )
        spellings = [n for n in options if n.startswith("--")] if typed.startswith("--") else []
        near = difflib.get_close_matches(typed, spellings or list(options), n=1)
        raise self.refuse(
            f"{typed} is not an option of {version}",
            fix=f"did you mean {near[0]}?" if near else "see vllm serve --help",
        )

    def check_value(self, option: Option, typed: str, value: str) -> None:
        wrong = option.wrong(value)
        if wrong is None:
            return
        what, takes = wrong
        spelt = next((n for n in sorted(option.names) if n.startswith(typed)), option.name)
        as_typed = typed if typed == spelt else f"{typed} (vLLM reads {spelt})"
        raise self.refuse(
            f"{as_typed} {shown(value)} is not {what}",
            fix=f"vLLM {self.table.release} takes {takes}",
        )

    def read(self, args: Sequence[str]) -> None:
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if arg == "--":
                return  # the rest is positional to argparse: vLLM itself refuses it
            if _is_value(arg):
                continue
            if arg.startswith("-O") and "--optimization-level" in self.table.options:
                # vLLM's -O3, -O=3, -Odecode and -O 3: --optimization-level
                i += arg == "-O" and i < len(args) and args[i] in {"0", "1", "2", "3"}
                continue
            typed, eq, explicit = arg.partition("=")
            if typed.startswith("--"):
                key, dot, _ = typed[2:].partition(".")
                typed = "--" + key.replace("_", "-")
                if dot:  # --json-arg.key value: a key of --json-arg, its value as JSON
                    self.lookup(typed)
                    i += not eq
                    continue
            option, attached = self.lookup(typed)
            if attached:
                explicit, eq = attached, "="
            if option.nargs == 0:
                if eq and typed.startswith("--"):
                    raise self.refuse(
                        f"{arg}: {option.name} takes no value",
                        fix=f"give {option.name} alone"
                        + (f" or {option.names[-1]}" if len(option.names) > 1 else ""),
                    )
            elif eq:
                self.check_value(option, typed, explicit)
            else:
                i = self.values(option, typed, args, i)

    def values(self, option: Option, typed: str, args: Sequence[str], i: int) -> int:
        """Check the values ``option`` takes from ``args[i:]``; the index after them."""
        taken = 0
        most = {"?": 1, "+": None, "*": None}.get(str(option.nargs), option.nargs)
        while i < len(args) and _is_value(args[i]) and (most is None or taken < int(most)):
            self.check_value(option, typed, args[i])
            taken += 1
            i += 1
        least = option.nargs if isinstance(option.nargs, int) else int(option.nargs == "+")
        if taken < least:
            raise self.refuse(f"{typed} needs a value", fix=f"give it as {option.name} VALUE")
        return i


def check_vllm_args(args: Sequence[str], table: OptionTable, *, label: str) -> None:
    """Refuse (InputError) an option ``table``'s release does not have, one given a value
    it takes none of, one without the value it needs, or a value of the wrong type.
    ``label`` names where the arguments came from."""
    if args:
        _Reader(table, label).read(args)
