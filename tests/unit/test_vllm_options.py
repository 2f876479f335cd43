"""The `vllm serve` arguments after ``--`` (and a registry entry's extra_args) against the
options of the target vLLM release, caught at planning instead of after the queue wait:
a misspelt option with "did you mean", a value of the wrong type, a switch given a value,
an option without its value. The shipped tables (launchers/vllm_options/<release>.json,
from bench/vllm_flags.py --write-table) cover every checked release and every flag the
planner writes or owns.
"""

# ruff: noqa: E501  (a table of exact one-line messages)
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from launchers.defaults import DEFAULT_VLLM_VERSION
from launchers.errors import InputError
from launchers.input import probe as probe_module
from launchers.input import resolve
from launchers.input.planner import make_plan
from launchers.input.probe import TOKEN_PARALLEL_FLAGS, VllmProbe
from launchers.input.vllm_options import (
    check_vllm_args,
    shipped_releases,
    shipped_table,
)
from launchers.spec.request import SubmitRequest
from launchers.spec.versions import CHECKED_RELEASES

from .conftest import assert_one_clear_line
from .helpers.cli import run

ROOT = Path(__file__).resolve().parents[2]
DRY = ["submit", "-m", "org/model", "--dry-run", "--"]
ARGS = "Error: vllm serve arguments"
TOKEN_PARALLEL_ONLY = (
    "--token-parallel-size",
    "--enable-token-parallel",
    "--no-enable-token-parallel",
)

# (arguments after `--`, the exact stderr line); the target is the default, 0.33.0.
REFUSED = [
    pytest.param(
        ["--max-model-length", "4096"],
        f"{ARGS}: --max-model-length is not an option of vLLM 0.33.0 (did you mean --max-model-len?)",
        id="typo-did-you-mean",
    ),
    pytest.param(
        ["--max_model_length=4096"],
        f"{ARGS}: --max-model-length is not an option of vLLM 0.33.0 (did you mean --max-model-len?)",
        id="typo-underscores",
    ),
    pytest.param(
        ["--max-model-len=abc"],
        f"{ARGS}: --max-model-len 'abc' is not an integer (vLLM 0.33.0 takes an integer, e.g. 4096 or 4k, or auto)",
        id="int-value-attached",
    ),
    pytest.param(
        ["--seed", "one"],
        f"{ARGS}: --seed 'one' is not an integer (vLLM 0.33.0 takes an integer, e.g. 8)",
        id="int-value-next",
    ),
    pytest.param(
        ["--gpu-memory-util", "high"],
        f"{ARGS}: --gpu-memory-util (vLLM reads --gpu-memory-utilization) 'high' is not a number (vLLM 0.33.0 takes a number, e.g. 0.5)",
        id="float-value-abbreviated",
    ),
    pytest.param(
        ["--dtype", "float8"],
        f"{ARGS}: --dtype 'float8' is not one of its choices (vLLM 0.33.0 takes one of ",
        id="choice",
    ),
    pytest.param(
        ["--enforce-eager=yes"],
        f"{ARGS}: --enforce-eager=yes: --enforce-eager takes no value (give --enforce-eager alone or --no-enforce-eager)",
        id="switch-with-value",
    ),
    pytest.param(
        ["--enforce-eager", "--seed"],
        f"{ARGS}: --seed needs a value (give it as --seed VALUE)",
        id="missing-value",
    ),
    pytest.param(
        ["--max", "4"],
        f"{ARGS}: --max is ambiguous in vLLM 0.33.0: it abbreviates ",
        id="ambiguous-abbreviation",
    ),
    pytest.param(
        ["--no-such-thing"],
        f"{ARGS}: --no-such-thing is not an option of vLLM 0.33.0 (",
        id="unknown",
    ),
    pytest.param(
        ["--compile-config.level", "3"],
        f"{ARGS}: --compile-config is not an option of vLLM 0.33.0 (did you mean --compilation-config?)",
        id="dotted-json-key-of-no-option",
    ),
    pytest.param(
        ["--no-enable-chunked-prefill"],
        f"{ARGS}: --no-enable-chunked-prefill is not an option of vLLM 0.33.0 (did you mean ",
        id="0.32s-negation",
    ),
]


@pytest.mark.parametrize(("extra", "expected"), REFUSED)
def test_a_wrong_vllm_argument_is_refused_at_planning(
    extra: list[str], expected: str, submissions: list[str]
) -> None:
    assert_one_clear_line(*run([*DRY, *extra]), expected)
    assert submissions == []


# What vLLM's parser takes passes: its spellings, abbreviations, sizes, words, JSON keys.
ACCEPTED = [
    ["--max-model-len", "32k"],
    ["--max-model-len=auto"],
    ["--max-model", "4096"],  # a unique prefix: vLLM's argparse reads --max-model-len
    ["--kv_cache_dtype", "fp8"],
    ["--seed", "-1"],  # a negative number is a value, not an option
    ["--enforce-eager", "--disable-prefix-caching"],  # 0.33 negates so
    ["--dtype", "float16"],
    ["--max-lora-rank", "016"],  # an int choice: vLLM compares numbers
    ["--moe-backend", "TRITON"],  # its type folds the case
    ["--compilation-config.cudagraph_mode", "PIECEWISE"],
    ["--hf-overrides", '{"rope_scaling": {"factor": 2}}'],
    ["-O3"],
    ["-O", "2"],
    ["--gpu-memory-utilization", "0.85", "--block-size", "32", "--cpu-offload-gb", "4"],
    ["--middleware", "my.Middleware"],
]


@pytest.mark.parametrize("extra", ACCEPTED, ids=" ".join)
def test_what_vllm_accepts_passes(extra: list[str]) -> None:
    code, out, err = run([*DRY, *extra])
    assert code == 0, err
    assert extra[0] in out


def test_a_release_without_a_table_is_not_checked() -> None:
    code, _, err = run(["submit", "-m", "org/model", "--vllm-version", "0.99.0", "--dry-run",
                        "--", "--max-model-length", "4096"])  # fmt: skip
    assert code == 0, err


def test_the_target_release_decides() -> None:
    # 0.32 negates a switch as --no-enable-X, 0.33 as --disable-X
    table32, table33 = shipped_table("0.32.0"), shipped_table("0.33.0")
    assert table32 is not None and table33 is not None
    check_vllm_args(["--no-enable-chunked-prefill"], table32, label="x")
    check_vllm_args(["--disable-chunked-prefill"], table33, label="x")
    with pytest.raises(
        InputError, match="--disable-chunked-prefill is not an option of vLLM 0.32.0"
    ):
        check_vllm_args(["--disable-chunked-prefill"], table32, label="x")
    assert shipped_table("0.33.0+cpu") == table33
    code, _, err = run(["submit", "-m", "org/model", "--vllm-version", "0.32.0", "--dry-run",
                        "--", "--no-enable-chunked-prefill"])  # fmt: skip
    assert code == 0, err


def test_a_registry_entry_extra_args_are_checked_too(tmp_path: Path) -> None:
    reg = tmp_path / "models.yaml"
    reg.write_text(
        'models:\n  x:\n    model: a/b\n    extra_args: ["--max-num-seq", "8", "--enable-chunk-prefill"]\n'
    )
    code, out, err = run(["submit", "-m", "x", "--dry-run"], {"VLLM_HPC_REGISTRY": str(reg)})
    assert_one_clear_line(
        code, out, err,
        "Error: models.x.extra_args: --enable-chunk-prefill is not an option of vLLM 0.33.0 (did you mean --enable-chunked-prefill?)",
    )  # fmt: skip


def test_the_nodes_vllm_adds_its_flags_where_the_plan_asks_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Token parallelism makes the plan ask the nodes' vLLM (a research build): its own
    flags then count as options; without that probe only the shipped table counts."""
    asked: list[str] = []

    def research(python: str, **_: object) -> VllmProbe:
        asked.append(python)
        return VllmProbe("0.33.0", frozenset({*TOKEN_PARALLEL_FLAGS, "--tknp-chunk"}))

    monkeypatch.setattr(probe_module, "probe_vllm_flags", research)
    base = ["submit", "-m", "org/model", "-N", "1", "-G", "4", "--dry-run"]
    code, _, err = run(
        [*base, "--tp", "2", "--token-parallel-size", "2", "--", "--tknp-chunk", "4"]
    )
    assert code == 0, err
    assert len(asked) == 1
    assert_one_clear_line(*run([*base, "--", "--tknp-chunk", "4"]),
                          f"{ARGS}: --tknp-chunk is not an option of vLLM 0.33.0")  # fmt: skip
    assert len(asked) == 1  # no probe where the plan does not probe


def test_a_table_ships_for_every_checked_release() -> None:
    assert set(CHECKED_RELEASES) <= set(shipped_releases())
    assert DEFAULT_VLLM_VERSION in shipped_releases()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "vllm_options/*.json" in data["tool"]["setuptools"]["package-data"]["launchers"]


@pytest.mark.parametrize("version", CHECKED_RELEASES)
def test_every_flag_the_planner_writes_or_owns_is_in_the_table(version: str) -> None:
    table = shipped_table(version)
    assert table is not None
    owned = {*resolve._PLAN_FLAGS, *resolve._FLAG_ALIASES, *resolve._REFUSED_FLAGS}
    missing = {f for f in owned if f not in table.options} - set(TOKEN_PARALLEL_ONLY)
    # each release negates --enable-expert-parallel its own way
    assert missing == {"0.32.0": {"--disable-expert-parallel"},
                       "0.33.0": {"--no-enable-expert-parallel"}}[version]  # fmt: skip
    for model in ("llama-3.2-3b-instruct", "llama-3.1-70b-instruct", "deepseek-v3"):
        request = SubmitRequest(model=model, vllm_version=version)
        plan = make_plan(request, {"HOME": "/home/alice"}, "/opt/venv/bin/python")
        for role in plan.roles:
            if role.serve is not None:
                flags = [a for a in role.serve.argv() if a.startswith("-")]
                assert [f for f in flags if f not in table.options] == []
