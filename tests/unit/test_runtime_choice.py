"""Across nodes with no runtime chosen, the planner asks the nodes' Python whether it has
Ray (``launchers.input.probe.has_module``: this interpreter directly, another in a child
process) and falls back to vLLM's own multi-node (``--runtime native``) when it has not.
The probe is the seam these tests fake; its own paths run for real at the end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from launchers.errors import InputError
from launchers.input import probe
from launchers.spec.config import ServeConfig

from .helpers.cli import run

REAL_HAS_MODULE = probe.has_module  # before conftest's autouse fake replaces it
SEVENTY_B = {"model": "llama-3.1-70b-instruct"}  # TP=4 x PP=2 on 2 nodes of 4
NATIVE_NOTE = (
    "runtime: Ray is not installed for /opt/venv/bin/python: using vLLM's own multi-node "
    "(--runtime native); install Ray, or pass --runtime ray, for the Ray bootstrap"
)


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool | None], list[tuple[str, str]]]:
    """Fake the nodes' answer; the returned list records who was asked about what."""

    def answer(has_ray: bool | None) -> list[tuple[str, str]]:
        calls: list[tuple[str, str]] = []

        def has_module(python: str, module: str) -> bool | None:
            calls.append((python, module))
            return has_ray

        monkeypatch.setattr(probe, "has_module", has_module)
        return calls

    return answer


def test_nodes_without_ray_get_the_native_runtime(
    make_config: Callable[..., ServeConfig], asked: Callable[[bool | None], list[tuple[str, str]]]
) -> None:
    calls = asked(False)
    config = make_config(**SEVENTY_B)
    assert (config.runtime, config.layout.nodes) == ("native", 2)
    assert NATIVE_NOTE in config.warnings
    assert calls == [("/opt/venv/bin/python", "ray")]


@pytest.mark.parametrize("has_ray", [True, None], ids=["has-ray", "cannot-be-asked"])
def test_nodes_with_ray_or_unaskable_keep_ray(
    make_config: Callable[..., ServeConfig],
    asked: Callable[[bool | None], list[tuple[str, str]]],
    has_ray: bool | None,
) -> None:
    asked(has_ray)
    config = make_config(**SEVENTY_B)
    assert config.runtime == "ray"
    assert not any(w.startswith("runtime:") for w in config.warnings)


@pytest.mark.parametrize(
    ("extra", "runtime"),
    [
        ({"runtime": "ray"}, "ray"),  # the user's choice stands
        ({"container": "apptainer:/shared/vllm.sif"}, "ray"),  # Ray is the image's
        ({"tp": 1, "pp": 1, "nodes": 1, "gpus_per_node": 1}, "single"),  # no Ray needed
        ({"tp": 1, "dp": 2, "nodes": 2, "gpus_per_node": 1}, "dp"),  # headless DP ranks
    ],
    ids=["chosen-ray", "container", "one-node", "data-parallel"],
)
def test_the_nodes_are_asked_only_when_auto_would_pick_ray(
    make_config: Callable[..., ServeConfig],
    asked: Callable[[bool | None], list[tuple[str, str]]],
    extra: dict[str, object],
    runtime: str,
) -> None:
    calls = asked(False)
    assert make_config(**{**SEVENTY_B, **extra}).runtime == runtime
    assert calls == []


def test_no_ray_and_a_vllm_without_native_multi_node_is_one_clear_line(
    make_config: Callable[..., ServeConfig], asked: Callable[[bool | None], list[tuple[str, str]]]
) -> None:
    asked(False)
    with pytest.raises(InputError) as caught:
        make_config(**SEVENTY_B, vllm_version="0.10.1")
    assert caught.value.one_line() == (
        "runtime: Ray is not installed for /opt/venv/bin/python (the nodes' Python), and vLLM "
        "0.10.1 has no multi-node without Ray (--runtime native needs 0.11.1) (install ray "
        "in that environment, or use a newer vLLM)"
    )


def test_has_module_asks_a_real_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another path to this interpreter: asked in a child process.
    other = tmp_path / "python"
    other.symlink_to(sys.executable)
    assert REAL_HAS_MODULE(str(other), "json") is True
    assert REAL_HAS_MODULE(str(other), "no_such_module_vllm_hpc") is False
    assert REAL_HAS_MODULE(str(tmp_path / "no-python"), "ray") is None
    # This interpreter: asked here, no child started (nor _proc imported for one).
    from launchers import _proc

    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("a child process was started")

    monkeypatch.setattr(_proc, "run", no_child)
    assert REAL_HAS_MODULE(sys.executable, "json") is True
    assert REAL_HAS_MODULE(sys.executable, "no_such_module_vllm_hpc") is False
    assert REAL_HAS_MODULE(sys.executable, "no_such_package_vllm_hpc.sub") is False


@pytest.mark.parametrize("what", ["k8s", "compose"])
def test_images_are_not_asked(
    asked: Callable[[bool | None], list[tuple[str, str]]], what: str
) -> None:
    # k8s and compose run the image's Python (and its Ray), not this machine's.
    calls = asked(False)
    code, out, err = run(["render", what, "-m", "llama-3.1-70b-instruct"], {})
    assert (code, err) == (0, "")
    assert "ray" in out and "--nnodes" not in out
    assert calls == []
