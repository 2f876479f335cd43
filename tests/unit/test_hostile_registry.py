"""Registry and site files written by someone else: alias bombs, huge values, huge files.

A registry is read as untrusted text: bounded in bytes, in aliases and in values once
aliases are expanded, and no error message echoes more than a short piece of a value.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from launchers.errors import InputError, shown
from launchers.input.registry import MAX_FILE_BYTES, load_registry
from launchers.input.resolve import validated
from launchers.spec.config import SlurmOptions

from .conftest import assert_one_clear_line
from .helpers.cli import run

ENV = {"HOME": "/home/alice", "XDG_CONFIG_HOME": "/nonexistent"}
FIX_ANCHORS = "(write the values out: a registry needs few anchors)"


def billion_laughs() -> str:
    """The classic: nine levels of nine aliases, 9**9 strings once expanded (72 aliases,
    so the alias count alone would let it through)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def doubling(levels: int, leaf: str) -> str:
    """A value that doubles at each level: 2**(levels+1) copies of ``leaf``."""
    text = f"&a0 [&s {leaf}, *s]"
    for i in range(1, levels + 1):
        text = f"&a{i} [{text}, *a{i - 1}]"
    return text


def submit_with(tmp_path: Path, text: str) -> tuple[int, str, str, str, float]:
    reg = tmp_path / "registry.yaml"
    reg.write_text(text)
    start = time.monotonic()
    code, out, err = run(["submit", "-m", "x", "--registry", str(reg), "--dry-run"])
    return code, out, err, str(reg), time.monotonic() - start


def test_billion_laughs_is_refused_fast_in_one_line(tmp_path: Path) -> None:
    text = billion_laughs()
    assert len(text) < 500
    code, out, err, reg, took = submit_with(tmp_path, text)
    expected = f"Error: {reg}:6: more than 200000 values once its YAML aliases are expanded"
    assert_one_clear_line(code, out, err, expected)
    assert err == f"{expected} {FIX_ANCHORS}\n"
    assert took < 2.0, took  # milliseconds here; before, minutes and gigabytes


def test_more_than_a_hundred_aliases_are_refused(tmp_path: Path) -> None:
    text = "models:\n  x:\n    model: &m org/x\n    extra_args: [" + ", ".join(["*m"] * 101) + "]\n"
    code, out, err, reg, _ = submit_with(tmp_path, text)
    assert err == f"Error: {reg}:4: more than 100 YAML aliases {FIX_ANCHORS}\n"
    assert_one_clear_line(code, out, err, f"Error: {reg}:4:")


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    code, out, err, reg, _ = submit_with(tmp_path, "models:\n  x: &x\n    model: [*x]\n")
    expected = f"Error: {reg}:2: a YAML alias that contains itself (remove the recursive alias)"
    assert_one_clear_line(code, out, err, expected)
    assert err == expected + "\n"


def test_a_small_file_whose_value_is_megabytes_gives_a_short_error(tmp_path: Path) -> None:
    """2**16 copies of a 100-character string, under the expansion bound: the error used
    to echo all of it (6.9 MB on one line); it shows a short piece."""
    text = "models:\n  x:\n    model: " + doubling(15, "x" * 100) + "\n"
    assert len(text) < 345
    code, out, err, reg, _ = submit_with(tmp_path, text)
    expected = f"Error: {reg}: models.x.model: Input should be a valid string (got [[[[...]"
    assert_one_clear_line(code, out, err, expected)
    assert len(err) < len(reg) + 160, len(err)


def test_an_oversized_file_is_refused_by_its_size(tmp_path: Path) -> None:
    text = "models:\n  x:\n    model: org/x\n" + "#" * MAX_FILE_BYTES + "\n"
    code, out, err, reg, _ = submit_with(tmp_path, text)
    assert err == (
        f"Error: registry: {reg} is larger than 256 KiB "
        "(a registry file is a few KiB: check that it is the right file)\n"
    )
    assert_one_clear_line(code, out, err, "Error: registry:")


def test_a_file_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    head = "models:\n  x:\n    model: org/x\n"
    reg = tmp_path / "registry.yaml"
    reg.write_text(head + "#" * (MAX_FILE_BYTES - len(head) - 1) + "\n")
    assert reg.stat().st_size == MAX_FILE_BYTES
    assert load_registry((str(reg),), ENV).get("x").model == "org/x"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1" * 5000, "a value YAML cannot read: Exceeds the limit (4300 digits)"),
        ("2001-13-01", "a value YAML cannot read: month must be in 1..12"),
    ],
    ids=["huge-int", "bad-date"],
)
def test_a_value_yaml_cannot_construct_is_bad_input(
    tmp_path: Path, value: str, expected: str
) -> None:
    code, out, err, reg, _ = submit_with(tmp_path, f"models:\n  x:\n    model: {value}\n")
    assert_one_clear_line(code, out, err, f"Error: {reg}: {expected}")
    assert err.endswith("(quote the value to keep it as text)\n") and len(err) < 400


LONG = "x" * 1000  # YAML's longest implicit key is 1024 characters
HUGE = "x" * 200_000


@pytest.mark.parametrize(
    "text",
    [
        f"models:\n  x:\n    model: org/x\n    env:\n      K{LONG}: [1]\n",
        f"models:\n  X{LONG}:\n    model: org/x\n",
        f"models:\n  x:\n    model: org/x\n    k{LONG}: 1\n",
        f"z{LONG}: 1\n",
        f"models:\n  x:\n    model: org/x\n    max_num_seqs: {HUGE}\n",
        f"models:\n  x:\n    model: org/x\n    env:\n      A: B\n      ? {HUGE}\n      : [1]\n",
        f"site:\n  partition: [{HUGE}]\n",
        f"models:\n  x:\n    model: org/x\n    extra_args:\n      - ? {HUGE}\n        : 1\n",
    ],
    ids=[
        "env-key",
        "model-id",
        "unknown-key",
        "top-level-key",
        "int-field",
        "env-key-explicit",
        "site-field",
        "nested",
    ],
)
def test_huge_keys_and_values_are_shortened_in_errors(tmp_path: Path, text: str) -> None:
    code, out, err, reg, _ = submit_with(tmp_path, text)
    assert_one_clear_line(code, out, err, f"Error: {reg}")
    assert len(err) < len(reg) + 700, err  # an unknown key's fix lists the valid ones
    assert "xxx..." in err


def test_a_registry_with_a_few_anchors_still_loads(tmp_path: Path) -> None:
    reg = tmp_path / "models.yaml"
    reg.write_text(
        "site:\n"
        "  env: &site_env\n"
        "    NCCL_DEBUG: WARN\n"
        "models:\n"
        "  base: &base\n"
        "    model: org/base\n"
        "    max_model_len: 8192\n"
        "    extra_args: &flags [--enable-prefix-caching]\n"
        "  x:\n"
        "    <<: *base\n"
        "    model: org/x\n"
        "    env: *site_env\n"
        "  y:\n"
        "    model: org/y\n"
        "    extra_args: *flags\n"
    )
    registry = load_registry((str(reg),), ENV)
    x, y = registry.get("x"), registry.get("y")
    assert (x.model, x.max_model_len, x.extra_args) == ("org/x", 8192, ("--enable-prefix-caching",))
    assert x.env == {"NCCL_DEBUG": "WARN"} and registry.site.env == {"NCCL_DEBUG": "WARN"}
    assert y.extra_args == ("--enable-prefix-caching",)


def test_validated_shortens_what_it_echoes() -> None:
    with pytest.raises(InputError) as caught:
        validated(SlurmOptions, {"partition": ["p" * 1000] * 1000})
    line = caught.value.one_line()
    assert line.startswith("--partition: Input should be a valid string (got ['ppp"), line
    assert "\n" not in line and len(line) < 200, len(line)


@pytest.mark.parametrize(
    "value",
    ["a" * 10**6, "two\nlines", ["x" * 500] * 500, {"k" * 300: list(range(300))}, 10**4000],
    ids=["long-text", "newline", "long-list", "dict", "huge-int"],
)
def test_shown_is_one_bounded_line(value: object) -> None:
    text = shown(value)
    assert "\n" not in text and 0 < len(text) <= 80, text
    assert len(shown(value, limit=20)) <= 20


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_registry_that_is_not_a_file_is_refused_without_waiting(
    tmp_path: Path, kind: str
) -> None:
    if kind == "fifo":
        path = tmp_path / "registry.yaml"
        os.mkfifo(path)  # nobody writes it: reading would wait for ever
    else:
        path = Path("/dev/zero")  # endless
    code, out, err = run(["submit", "-m", "x", "--registry", str(path), "--dry-run"])
    assert err == f"Error: registry: {path} is not a regular file (give a YAML file)\n"
    assert_one_clear_line(code, out, err, "Error: registry:")
