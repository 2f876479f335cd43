"""The doctor's software check: this node's vLLM and Ray against what the plan runs
(installed versions faked; the rest of the doctor runs on the mini cluster)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from typing import Any

import pytest

from launchers.plan.launch import LaunchPlan
from launchers.runtime.doctor import MARK, Report, check_software, installed_versions

RAY_70B = {"model": "llama-3.1-70b-instruct"}
NATIVE_70B = {"model": "llama-3.1-70b-instruct", "runtime": "native"}
IN_IMAGE = {"model": "llama-3.1-70b-instruct", "container": "apptainer:/shared/vllm.sif"}


@pytest.mark.parametrize(
    ("request_", "versions", "level", "detail"),
    [
        pytest.param(
            RAY_70B, {"vllm": "0.33.0", "ray": "2.60.0"}, "ok",
            f"vLLM 0.33.0, Ray 2.60.0 in {sys.executable} (the plan targets vLLM 0.33.0, "
            "runtime ray)",
            id="ray-plan-with-both",
        ),
        pytest.param(
            NATIVE_70B, {"vllm": "0.33.0+cpu", "ray": None}, "ok",
            f"vLLM 0.33.0+cpu in {sys.executable} (the plan targets vLLM 0.33.0, runtime "
            "native)",
            id="same-release-local-label",
        ),
        pytest.param(
            RAY_70B, {"vllm": "0.32.0+cpu", "ray": "2.60.0"}, "warn",
            f"vLLM 0.32.0+cpu, Ray 2.60.0 in {sys.executable}, but the plan targets vLLM "
            "0.33.0, runtime ray",
            id="older-release-than-the-target",
        ),
        pytest.param(
            NATIVE_70B, {"vllm": "0.33.1", "ray": None}, "warn",
            f"vLLM 0.33.1 in {sys.executable}, but the plan targets vLLM 0.33.0, runtime native",
            id="newer-patch-release-than-the-target",
        ),
        pytest.param(
            RAY_70B, {"vllm": "0.33.0", "ray": None}, "fail",
            f"the plan runs Ray, which is not installed for {sys.executable}",
            id="ray-plan-without-ray",
        ),
        pytest.param(
            NATIVE_70B, {"vllm": "0.10.2", "ray": None}, "fail",
            "vllm_version: multi-node without Ray (--runtime native) needs vLLM >= 0.11.1, "
            "this node has 0.10.2",
            id="native-plan-old-vllm",
        ),
        pytest.param(
            NATIVE_70B, {"vllm": None, "ray": None}, "fail",
            f"vLLM is not installed for {sys.executable}",
            id="no-vllm",
        ),
        pytest.param(
            IN_IMAGE, {"vllm": None, "ray": None}, "ok",
            "vLLM and Ray come from apptainer:/shared/vllm.sif: not checked here",
            id="container",
        ),
    ],
)  # fmt: skip
def test_software_check(
    make_plan: Callable[..., LaunchPlan],
    capsys: pytest.CaptureFixture[str],
    request_: dict[str, Any],
    versions: dict[str, str | None],
    level: str,
    detail: str,
) -> None:
    report = Report(0, "node1")
    check_software(report, make_plan(**request_), versions)
    line = json.loads(capsys.readouterr().out.removeprefix(MARK))
    assert (line["check"], line["level"], line["detail"]) == ("software", level, detail)
    assert report.failed == (level == "fail")
    assert bool(line["fix"]) == (level != "ok")


def test_a_version_difference_names_both_fixes(
    make_plan: Callable[..., LaunchPlan], capsys: pytest.CaptureFixture[str]
) -> None:
    check_software(Report(0, "node1"), make_plan(**NATIVE_70B), {"vllm": "0.32.0+cpu"})
    line = json.loads(capsys.readouterr().out.removeprefix(MARK))
    assert line["fix"] == (
        "plan for what the nodes run: --vllm-version 0.32.0 (or the site file's "
        "vllm_version), or install vLLM 0.33.0 there"
    )


def test_installed_versions_reads_this_python() -> None:
    found = installed_versions()
    assert set(found) == {"vllm", "ray"}
    for name, version in found.items():
        assert (version is None) == (importlib.util.find_spec(name) is None), name
