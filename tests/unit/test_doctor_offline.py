"""``vllm-hpc doctor --offline``: on a node, the staged copy the plan serves is readable
with every file's size, its config and tokenizer load in the node's Python with the
offline variables (a stand-in Transformers, ``helpers.faketransformers``), a hub model
not staged says what would be fetched; and the option reaches the node's program."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from launchers import cli
from launchers.cli import node as node_cli
from launchers.observe import doctor_run
from launchers.offline_load import LoadCheck
from launchers.plan.launch import LaunchPlan
from launchers.runtime import doctor
from launchers.runtime.doctor import MARK, Report, check_offline

from .helpers.faketransformers import (
    TOKENIZER_CONFIG_JSON,
    TOKENIZER_JSON,
    calls,
    python_with_transformers,
)
from .helpers.staged import COMMIT, stage_copy

TOKENIZER = {"tokenizer.json": TOKENIZER_JSON, "tokenizer_config.json": TOKENIZER_CONFIG_JSON}
STAGE_FIX = "run: vllm-hpc stage org/tiny on the login node"


@pytest.fixture
def python(tmp_path: Path) -> Path:
    """The node's Python, with a stand-in Transformers."""
    return python_with_transformers(tmp_path / "py")


def rows(capsys: pytest.CaptureFixture[str]) -> list[tuple[str, str, str, str]]:
    out = capsys.readouterr().out
    found = [json.loads(line.removeprefix(MARK)) for line in out.splitlines()]
    return [(r["check"], r["level"], r["detail"], r["fix"]) for r in found]


def test_a_staged_copy_readable_here_whose_tokenizer_loads_offline(
    tmp_path: Path,
    make_plan: Callable[..., LaunchPlan],
    python: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy = stage_copy(tmp_path / "store", extra=TOKENIZER)
    plan = make_plan(model="org/tiny", model_store=str(tmp_path / "store"))
    assert plan.staged is not None
    report = Report(0, "node1")
    check_offline(report, plan, {"PATH": "/usr/bin"}, str(python))
    size = sum(p.stat().st_size for p in copy.iterdir() if p.name != "vllm-hpc-staged.json")
    assert rows(capsys) == [
        ("offline copy", "ok", f"staged copy of org/tiny at {copy} (commit {COMMIT[:12]}): "
         f"all 4 files readable here with their sizes ({size / 1024:.1f} KiB); nothing is "
         "fetched", ""),
        ("offline load", "ok", "config (LlamaConfig) and tokenizer (PreTrainedTokenizerFast, 4 "
         f"tokens) load offline with Transformers 0.0.test in {python}", ""),
    ]  # fmt: skip
    assert not report.failed
    loads = calls(tmp_path / "py")
    assert [(c["call"], c["target"], c["HF_HUB_OFFLINE"]) for c in loads] == [
        ("config", str(copy), "1"), ("tokenizer", str(copy), "1")
    ]  # fmt: skip


def test_a_copy_this_node_reads_short_or_not_at_all_fails_and_loads_nothing(
    tmp_path: Path,
    make_plan: Callable[..., LaunchPlan],
    python: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy = stage_copy(tmp_path / "store", extra=TOKENIZER)
    plan = make_plan(model="org/tiny", model_store=str(tmp_path / "store"))
    (copy / "model.safetensors").write_bytes(b"\0" * 100)
    (copy / "tokenizer.json").unlink()
    report = Report(1, "node2")
    check_offline(report, plan, {}, str(python))
    assert rows(capsys) == [
        ("offline copy", "fail", f"{copy}: 2 of 4 files wrong on this node: model.safetensors: "
         "100 bytes, the manifest says 2048; tokenizer.json: No such file or directory",
         f"mount the model store here, or {STAGE_FIX} again (it fetches what is missing)"),
    ]  # fmt: skip
    assert report.failed and calls(tmp_path / "py") == []
    for path in copy.iterdir():  # the store is not mounted on this node
        path.unlink()
    copy.rmdir()
    check_offline(Report(1, "node2"), plan, {}, str(python))
    assert rows(capsys) == [
        ("offline copy", "fail", f"{copy} is not a directory on this node",
         "mount the model store (shared storage) here"),
    ]  # fmt: skip


def test_a_tokenizer_that_does_not_load_offline_on_the_node_fails(
    tmp_path: Path,
    make_plan: Callable[..., LaunchPlan],
    python: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stage_copy(tmp_path / "store")  # no tokenizer file at all
    plan = make_plan(model="org/tiny", model_store=str(tmp_path / "store"))
    report = Report(0, "node1")
    check_offline(report, plan, {}, str(python))
    (copy_row, load_row) = rows(capsys)
    assert copy_row[:2] == ("offline copy", "ok")
    assert load_row[:2] == ("offline load", "fail") and report.failed
    assert load_row[2].startswith(
        "the tokenizer does not load offline: no tokenizer file (tokenizer.json, "
        "tokenizer.model, vocab.json, vocab.txt, *.tiktoken) (ValueError: Couldn't instantiate"
    ), load_row
    assert load_row[3] == f"{STAGE_FIX} (it loads the tokenizer and names what the copy lacks)"


def _cached(cache: Path) -> None:
    """org/tiny in a Hugging Face cache, as huggingface_hub leaves it."""
    folder = cache / "models--org--tiny"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"model_type": "llama"}')
    for name, data in TOKENIZER.items():
        (snapshot / name).write_bytes(data)


@pytest.mark.parametrize(
    ("env", "cached", "expected"),
    [
        pytest.param({}, False, [("offline copy", "fail",
                     "not staged: the node would fetch org/tiny from the hub", STAGE_FIX)],
                     id="online"),
        pytest.param({"HF_HUB_OFFLINE": "1"}, False, [("offline copy", "fail",
                     "not staged and not in this node's Hugging Face cache ({cache}), with "
                     "HF_HUB_OFFLINE=1: the job would stop at its start", STAGE_FIX)],
                     id="offline-not-cached"),
        pytest.param({"HF_HUB_OFFLINE": "1"}, True, [
            ("offline copy", "warn", "not staged: org/tiny is read from this node's Hugging "
             "Face cache ({cache}, HF_HUB_OFFLINE=1); its files are not checked", STAGE_FIX),
            ("offline load", "ok", "config (LlamaConfig) and tokenizer (PreTrainedTokenizerFast, "
             "4 tokens) load offline with Transformers 0.0.test in {python}", ""),
        ], id="offline-from-the-cache"),
    ],
)  # fmt: skip
def test_a_hub_model_not_staged_says_what_the_node_would_fetch(
    tmp_path: Path,
    make_plan: Callable[..., LaunchPlan],
    python: Path,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    cached: bool,
    expected: list[tuple[str, str, str, str]],
) -> None:
    cache = tmp_path / "hub"
    if cached:
        _cached(cache)
    plan = make_plan(model="org/tiny", model_store=str(tmp_path / "empty-store"), env=env)
    assert plan.staged is None
    check_offline(Report(0, "node1"), plan, {"HF_HUB_CACHE": str(cache)}, str(python))
    fill = {"cache": cache, "python": python}
    assert rows(capsys) == [(c, lv, d.format(**fill), f) for c, lv, d, f in expected]


def test_in_an_apptainer_image_the_images_python_is_asked(
    tmp_path: Path,
    make_plan: Callable[..., LaunchPlan],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy = stage_copy(tmp_path / "store", extra=TOKENIZER)
    plan = make_plan(model="org/tiny", model_store=str(tmp_path / "store"),
                     container="apptainer:/shared/vllm.sif")  # fmt: skip
    asked: list[tuple[list[str], dict[str, str]]] = []

    def load_offline(argv: list[str], target: str, env: dict[str, str], **kw: Any) -> LoadCheck:
        asked.append((list(argv), dict(env)))
        return LoadCheck("loaded", kw["shown"], "loaded")

    monkeypatch.setattr("launchers.offline_load.load_offline", load_offline)
    check_offline(Report(0, "node1"), plan, {"HF_HOME": "/hf"})
    [(argv, env)] = asked
    assert argv[:2] == ["apptainer", "exec"] and argv[-2:] == ["/shared/vllm.sif", "python3"]
    assert f"{copy}:{copy}" in argv  # the copy is bound at its own path
    assert env["APPTAINERENV_HF_HUB_OFFLINE"] == env["APPTAINERENV_TRANSFORMERS_OFFLINE"] == "1"
    assert rows(capsys)[1] == ("offline load", "ok", "loaded", "")


def test_doctor_offline_reaches_the_nodes_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert doctor_run.doctor_argv("py", "p.json", "/d", 120, offline=True)[-1] == "--offline"
    assert "--offline" not in doctor_run.doctor_argv("py", "p.json", "/d", 120, network=True)
    # The login side: MODEL as the argument (not a job id), --offline passed to the step.
    seen: dict[str, Any] = {}

    def run(prefix: list[str], plan_json: str, *args: Any, **kwargs: Any) -> tuple[list[Any], str]:
        seen.update(kwargs, model=json.loads(plan_json)["model"])
        return [], ""

    monkeypatch.setattr(doctor_run, "run", run)
    argv = ["doctor", "--offline", "org/tiny", "--job-root", str(tmp_path), "--json"]
    result = CliRunner().invoke(cli.cli, argv, env={"VLLM_HPC_MODEL_STORE": str(tmp_path / "s")})
    assert (seen.get("offline"), seen.get("model")) == (True, "org/tiny"), result.output
    # The node side: --offline reaches run_node.
    node: dict[str, Any] = {}

    def run_node(*args: Any, **kwargs: Any) -> int:
        node.update(kwargs)
        return 0

    monkeypatch.setattr(doctor, "run_node", run_node)
    monkeypatch.setattr("launchers.runtime.run.load_plan", lambda _: object())
    monkeypatch.setenv("SLURM_NNODES", "2")
    done = CliRunner().invoke(
        node_cli.node_group, ["doctor", "--plan", "p", "--dir", "d", "--offline"]
    )
    assert done.exit_code == 0, done.output
    assert node == {"offline": True}
