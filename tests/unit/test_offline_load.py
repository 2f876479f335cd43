"""``offline_load``: which file a failed load names (a table), the child's answer read
through what Transformers logs around it, the offline variables the child gets, custom
code and Mistral tokenizers not loaded, and (when the bed's test environment is here) the
script against the real Transformers."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from launchers.offline_load import MARK, culprit, load_offline, parse

from .helpers.faketransformers import (
    TOKENIZER_CONFIG_JSON,
    TOKENIZER_JSON,
    calls,
    python_with_transformers,
)

CONFIG = b'{"model_type": "llama"}'
TESTENV_PYTHON = Path(os.environ.get("VLLM_HPC_TESTENV", "/opt/vllm-hpc/testenv"), "bin", "python")
NO_VOCAB = "no tokenizer file (tokenizer.json, tokenizer.model, vocab.json, vocab.txt, *.tiktoken)"


@pytest.mark.parametrize(
    ("what", "error", "files", "file", "expected"),
    [
        pytest.param("tokenizer", "JSONDecodeError: x", ["tokenizer.json"], "tokenizer.json",
                     "tokenizer.json: JSONDecodeError: x", id="the-child-named-it"),
        pytest.param("tokenizer", "OSError: can't find tokenizer.model", ["config.json"], None,
                     "tokenizer.model missing (OSError: can't find tokenizer.model)",
                     id="named-by-the-error-and-missing"),
        pytest.param("tokenizer", "Exception: bad merges.txt line 3",
                     ["vocab.json", "merges.txt"], None,
                     "merges.txt: Exception: bad merges.txt line 3", id="named-and-there"),
        pytest.param("config", "ValueError: Unrecognized model", ["config.json"], None,
                     "config.json: ValueError: Unrecognized model", id="config-there"),
        pytest.param("config", "OSError: nope", [], None, "config.json missing (OSError: nope)",
                     id="config-missing"),
        pytest.param("tokenizer", "ValueError: Couldn't instantiate", ["config.json"], None,
                     f"{NO_VOCAB} (ValueError: Couldn't instantiate)", id="no-vocabulary"),
        pytest.param("tokenizer", "Exception: untagged enum",
                     ["config.json", "tokenizer.json"], None,
                     "tokenizer.json: Exception: untagged enum", id="the-vocabulary-file"),
        pytest.param("tokenizer", "ImportError: tiktoken", ["cl100k.tiktoken"], None,
                     "cl100k.tiktoken: ImportError: tiktoken", id="a-tiktoken-file"),
    ],
)  # fmt: skip
def test_the_file_missing_or_wrong_is_named(
    what: str, error: str, files: list[str], file: str | None, expected: str
) -> None:
    assert culprit(what, error, files, file) == expected


def test_the_answer_is_the_marked_line_whatever_is_logged_around_it() -> None:
    answer = {"transformers": "5.0", "config": "LlamaConfig", "tokenizer": "T", "vocab": 7}
    out = f"loading...\n{MARK}{json.dumps(answer)}\nbye\n"
    found = parse(out, "/p/python")
    assert found is not None and found.status == "loaded"
    assert found.detail == (
        "config (LlamaConfig) and tokenizer (T, 7 tokens) load offline with Transformers 5.0 "
        "in /p/python"
    )
    prompted = f"Do you wish to run the custom code? [y/N] {MARK}{json.dumps(answer)}\n"
    assert parse(prompted, "/p/python") == found
    assert parse("no answer\n", "/p/python") is None
    assert parse(f"{MARK}[1]\n", "/p/python") is None
    failed = parse(
        MARK + json.dumps({"failed": "tokenizer", "error": "E", "files": ["config.json"]}), "/p"
    )
    assert failed is not None and failed.status == "failed" and failed.what == "tokenizer"
    assert failed.problem == f"{NO_VOCAB} (E)"


def _model(root: Path, **files: bytes) -> Path:
    root.mkdir(parents=True)
    base = {"config.json": CONFIG, "tokenizer.json": TOKENIZER_JSON,
            "tokenizer_config.json": TOKENIZER_CONFIG_JSON}  # fmt: skip
    for name, data in {**base, **files}.items():
        (root / name.replace("__", ".")).write_bytes(data)
    return root


def test_the_child_loads_offline_with_the_callers_environment(tmp_path: Path) -> None:
    python = python_with_transformers(tmp_path / "py")
    model = _model(tmp_path / "m")
    env = {"PATH": os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "0", "HF_HOME": "/hf"}
    found = load_offline([str(python)], str(model), env)
    assert found.status == "loaded", found
    assert [(c["call"], c["HF_HUB_OFFLINE"], c["TRANSFORMERS_OFFLINE"]) for c in
            calls(tmp_path / "py")] == [("config", "1", "1"), ("tokenizer", "1", "1")]  # fmt: skip
    # A hub id not in that Python's cache: Transformers' own offline refusal, named.
    hub = load_offline([str(python)], "org/tiny", env, revision="main")
    assert hub.status == "failed" and hub.what == "config", hub
    assert hub.problem.startswith("config.json missing (OSError: We couldn't connect to"), hub


NEEDS_CODE = "needs the repository's own code (--trust-remote-code): not run here"


@pytest.mark.parametrize(
    ("files", "status", "detail"),
    [
        ({"config.json": b'{"model_type": "x", "auto_map": {"AutoConfig": "c.X"}}'},
         "skipped", f"its config {NEEDS_CODE}"),
        ({"tokenizer_config.json": b'{"auto_map": {"AutoTokenizer": ["t.T", null]}}'},
         "skipped", f"its tokenizer {NEEDS_CODE}"),
        # Transformers has the architecture itself: the auto_map is not needed, it loads.
        ({"config.json": b'{"model_type": "llama", "auto_map": {"AutoConfig": "c.X"}}'},
         "loaded", "config (LlamaConfig) and tokenizer"),
    ],
)  # fmt: skip
def test_custom_code_is_not_run(
    tmp_path: Path, files: dict[str, bytes], status: str, detail: str
) -> None:
    python = python_with_transformers(tmp_path / "py")
    found = load_offline([str(python)], str(_model(tmp_path / "m", **files)), {})
    assert found.status == status and found.detail.startswith(detail), found
    # Refused outright: Transformers never asks (on the user's terminal) whether to run it.
    assert {c["call"] for c in calls(tmp_path / "py")} <= {"config", "tokenizer"}


def test_a_mistral_tokenizer_is_not_loaded_by_transformers(tmp_path: Path) -> None:
    python = python_with_transformers(tmp_path / "py")
    model = _model(tmp_path / "m", tekken__json=b"{}")
    (model / "tokenizer_config.json").unlink()
    (model / "tokenizer.json").unlink()
    found = load_offline([str(python)], str(model), {})
    assert found.status == "skipped" and "tekken.json" in found.detail, found


def test_a_python_that_cannot_answer(tmp_path: Path) -> None:
    gone = load_offline([str(tmp_path / "nothing")], str(tmp_path), {})
    assert gone.status == "unavailable" and gone.detail.startswith(f"cannot run {tmp_path}/"), gone
    bare = load_offline([sys.executable], str(tmp_path), {"PATH": os.environ.get("PATH", "")})
    if bare.status != "loaded":  # this Python has no Transformers (the dev environment)
        assert bare.detail == f"Transformers is not importable for {sys.executable}", bare


@pytest.mark.skipif(not TESTENV_PYTHON.exists(), reason="the bed's test environment is not here")
def test_the_real_transformers_loads_and_names_what_is_missing(tmp_path: Path) -> None:
    """The script against the Transformers vLLM runs (the bed's environment)."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    good = _model(tmp_path / "good")
    found = load_offline([str(TESTENV_PYTHON)], str(good), env)
    assert found.status == "loaded" and "(LlamaConfig)" in found.detail, found
    (good / "tokenizer.json").unlink()
    found = load_offline([str(TESTENV_PYTHON)], str(good), env)
    assert found.status == "failed" and found.problem.startswith(NO_VOCAB), found
