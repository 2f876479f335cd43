"""Shared fixtures and helpers for the unit tests: a clean environment and a fixed
interpreter path so plans and rendered files are reproducible, the plan helper, golden
files, the bad-input rule with its seams (``shell_env`` for the repo's bash), and a
service's spec. Plain helpers shared by several test modules live in ``helpers/``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from launchers.input import probe as probe_module
from launchers.input.planner import plan_for
from launchers.input.probe import InstalledVllm, VllmProbe
from launchers.input.registry import Registry, load_registry
from launchers.input.resolve import resolve
from launchers.plan.launch import LaunchPlan
from launchers.service.definition import ServiceSpec
from launchers.spec.config import ServeConfig
from launchers.spec.request import SubmitRequest

from .helpers.scripts import FAKE_SRUN, FAKE_START, REPO, SEAM

PYTHON = "/opt/venv/bin/python"
HOME = "/home/alice"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="Rewrite the golden files under tests/unit/golden from the current output.",
    )


@pytest.fixture(autouse=True)
def nodes_have_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """The nodes' Python has Ray unless a test says otherwise (the planner asks it, in a
    child process, before choosing Ray across nodes; this venv has no Ray)."""
    monkeypatch.setattr("launchers.input.probe.has_module", lambda python, module: True)


@pytest.fixture(autouse=True)
def nodes_vllm_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    """The nodes' vLLM version is not known to the planner unless a test says otherwise
    (it reads this Python's package metadata, or asks the nodes' Python in a child
    process, for the compile cache's key): plans do not depend on this venv."""
    monkeypatch.setattr(probe_module, "installed_here", InstalledVllm)
    monkeypatch.setattr(probe_module, "installed_vllm", lambda python, **_: InstalledVllm())


@pytest.fixture
def environ() -> dict[str, str]:
    return {"HOME": HOME, "XDG_CONFIG_HOME": "/nonexistent-config"}


@pytest.fixture
def registry(environ: dict[str, str]) -> Registry:
    return load_registry((), environ)


@pytest.fixture
def make_config(registry: Registry, environ: dict[str, str]) -> Callable[..., ServeConfig]:
    def make(**kwargs: Any) -> ServeConfig:
        return resolve(SubmitRequest(**kwargs), registry, environ, PYTHON)

    return make


@pytest.fixture
def make_plan(make_config: Callable[..., ServeConfig]) -> Callable[..., LaunchPlan]:
    """A plan as ``submit`` makes it: the request resolved, planned for its layout."""

    def make(**kwargs: Any) -> LaunchPlan:
        return plan_for(make_config(**kwargs))

    return make


@pytest.fixture
def tiny_model(tmp_path: Path) -> Callable[..., Path]:
    """Write a local model directory with a config.json (no weights)."""

    def make(**overrides: Any) -> Path:
        config = {
            "model_type": "llama",
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "num_hidden_layers": 2,
            "hidden_size": 128,
            "intermediate_size": 256,
            "vocab_size": 2048,
            "torch_dtype": "bfloat16",
        }
        config.update(overrides)
        path = tmp_path / f"model-{len(list(tmp_path.iterdir()))}"
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config))
        return path

    return make


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Iterator[Callable[[str, str], None]]:
    """Compare text with tests/unit/golden/NAME; --update-golden rewrites it."""
    update = bool(request.config.getoption("--update-golden"))
    root = Path(__file__).with_name("golden")

    def check(name: str, text: str) -> None:
        path = root / name
        if update:
            path.write_text(text)
            return
        assert path.exists(), f"missing golden file {path}: run pytest --update-golden"
        assert text == path.read_text(), f"{name} differs: run pytest --update-golden and review"

    yield check


# --- bad input: the one-clear-line rule and the seams that record starts ---


def assert_one_clear_line(code: int, out: str, err: str, expected: str) -> None:
    assert code == 2, (code, out, err)
    assert out == "", out
    assert err.endswith("\n") and err.count("\n") == 1 and err.strip(), err
    assert "Traceback" not in err, err
    assert err.startswith(expected), err


@pytest.fixture
def upstream_vllm(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The nodes' vLLM, as the capability probe would find an upstream 0.32 (no token
    parallelism): the interpreters it was asked about are recorded."""
    asked: list[str] = []

    def probe(python: str, **_: object) -> VllmProbe:
        asked.append(python)
        return VllmProbe("0.32.0", frozenset({"--tensor-parallel-size", "--port"}))

    monkeypatch.setattr(probe_module, "probe_vllm_flags", probe)
    return asked


@pytest.fixture
def submissions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every way the CLI submits or starts a job, recorded instead of done."""
    from launchers.submit import slurm

    calls: list[str] = []
    for name in ("submit_submitit", "submit_sbatch", "start_local"):
        monkeypatch.setattr(slurm, name, lambda *a, _n=name, **k: calls.append(_n))
    yield calls


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    """A login-node environment for the repo's bash: the repo's bin/ on PATH, fake srun
    before it, no SLURM; the seams (helpers/scripts.py) record any start in $STARTED."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "srun").write_text(FAKE_SRUN)
    for name in ("ray", "vllm"):
        (fake / name).write_text(FAKE_START)
    (fake / "python").write_text(SEAM.format(python=sys.executable))
    for tool in fake.iterdir():
        tool.chmod(0o755)
    return {
        "PATH": f"{fake}:{REPO / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "VLLM_HPC_PYTHON": str(fake / "python"),
        "VLLM_HPC_JOB_ROOT": str(tmp_path / "jobs"),
        "STARTED": str(tmp_path / "started"),
        "PYTHONPATH": str(REPO / "python"),  # this checkout's launchers, not an installed one
    }


# --- services ---


def service_spec(**changes: object) -> ServiceSpec:
    """A service's spec as ``service up`` writes it (two replicas of a model on the
    partition gpu, the front on 8100), with ``changes``; validated, so a bad change
    raises."""
    base: dict[str, object] = {
        "name": "llama", "request": {"model": "m", "partition": "gpu", "port": None},
        "replicas": 2, "handover_seconds": 600.0, "front_port": 8100,
        "front_time": "1-00:00:00", "python": "/opt/env/bin/python", "key_file": "/k/key",
        "created_at": 0.0,
    }  # fmt: skip
    return ServiceSpec.model_validate({**base, **changes})
