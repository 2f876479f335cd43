"""Fail closed: no key, no serve. A key file that is empty, unreadable, not a regular
file or readable by others is refused when the job is planned, and a key (given or
generated) that is missing or empty on the node stops the job before anything starts.
Only an explicit ``--no-api-key`` serves without a key."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launchers import _proc
from launchers.errors import InputError, RuntimeFailure, VllmHpcError
from launchers.input import resolve
from launchers.plan.launch import LaunchPlan
from launchers.runtime import context as context_module
from launchers.runtime.context import read_key
from launchers.runtime.run import run_plan
from launchers.spec.config import ServeConfig

from .conftest import assert_one_clear_line
from .helpers.cli import run


def _key(tmp_path: Path, text: str = "sk-test\n", mode: int = 0o600) -> Path:
    key = tmp_path / "key"
    key.write_text(text)
    key.chmod(mode)
    return key


# --- planning: --api-key-file is checked before anything is planned ---------------------


def _refusal(tmp_path: Path, key: Path) -> str:
    jobs = tmp_path / "jobs"
    code, out, err = run(
        ["submit", "-m", "a/b", "--api-key-file", str(key)], {"VLLM_HPC_JOB_ROOT": str(jobs)}
    )
    assert_one_clear_line(code, out, err, "Error: --api-key-file: ")
    assert not jobs.exists() or not list(jobs.glob("*/plan.json"))
    return err.strip().removeprefix("Error: ")


def test_an_empty_key_file_is_refused(tmp_path: Path, submissions: list[str]) -> None:
    key = _key(tmp_path, "")
    assert _refusal(tmp_path, key) == (
        f"--api-key-file: {key} is empty (write the key into it, or pass --no-api-key to "
        "serve without one)"
    )
    assert submissions == []


def test_a_whitespace_only_key_file_is_refused(tmp_path: Path) -> None:
    key = _key(tmp_path, " \n\t\n")
    assert _refusal(tmp_path, key).startswith(f"--api-key-file: {key} is empty")


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    key = _key(tmp_path, mode=0o644)
    assert _refusal(tmp_path, key) == (
        f"--api-key-file: {key} can be read by other users (-rw-r--r--) (chmod 600 {key})"
    )


def test_a_key_file_the_group_can_read_is_refused(tmp_path: Path) -> None:
    key = _key(tmp_path, mode=0o640)
    assert _refusal(tmp_path, key) == (
        f"--api-key-file: {key} can be read by other users (-rw-r-----) (chmod 600 {key})"
    )


def test_an_unreadable_key_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = _key(tmp_path, mode=0o000)
    if os.geteuid() == 0:  # root reads a file of mode 0000: say what the open would

        def denied(path: object, what: str) -> str:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(resolve, "read_private_text", denied)
    assert _refusal(tmp_path, key) == (
        f"--api-key-file: cannot read {key}: Permission denied (chmod 600 {key})"
    )


def test_a_directory_or_a_fifo_is_not_a_key_file(
    tmp_path: Path, make_config: Callable[..., ServeConfig]
) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    for path in (folder, fifo):
        with pytest.raises(InputError) as caught:
            make_config(model="a/b", api_key_file=str(path))
        assert caught.value.one_line() == (
            f"--api-key-file: {path} is not a regular file (write the key into a regular "
            "file readable only by you (chmod 600))"
        )


def test_a_private_key_file_is_planned_by_its_real_path(
    tmp_path: Path, make_plan: Callable[..., LaunchPlan]
) -> None:
    key = _key(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(key)
    plan = make_plan(model="a/b", api_key_file=str(link))
    assert plan.api_key_file == str(key.resolve()) and not plan.generate_api_key


def test_only_no_api_key_plans_no_key(make_plan: Callable[..., LaunchPlan]) -> None:
    open_plan = make_plan(model="a/b", no_api_key=True)
    assert open_plan.api_key_file is None and not open_plan.generate_api_key
    default = make_plan(model="a/b")
    assert default.generate_api_key and default.api_key_file


# --- on the node: a key that is missing or empty stops the job --------------------------


def test_read_key_fails_closed(tmp_path: Path) -> None:
    assert read_key(None) is None  # the plan has no key: --no-api-key
    assert read_key(str(_key(tmp_path, "  sk-1 \n"))) == "sk-1"
    empty = _key(tmp_path, "\n")
    with pytest.raises(RuntimeFailure) as caught:
        read_key(str(empty))
    assert caught.value.one_line() == (
        f"API key: {empty} is empty (write the key into it (chmod 600), or resubmit with "
        "--no-api-key to serve without one)"
    )
    missing = tmp_path / "gone"
    with pytest.raises(RuntimeFailure) as caught:
        read_key(str(missing))
    assert caught.value.one_line() == (
        f"API key: cannot read {missing}: No such file or directory (resubmit, or pass "
        "--api-key-file with a key file readable only by you)"
    )
    loose = _key(tmp_path, mode=0o644)
    with pytest.raises(InputError) as refused:
        read_key(str(loose))
    assert refused.value.one_line() == (
        f"API key: {loose} can be read by other users (-rw-r--r--) (chmod 600 {loose})"
    )


def test_a_symlinked_key_is_not_followed_on_the_node(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(_key(tmp_path))
    with pytest.raises(RuntimeFailure, match=f"API key: cannot read {link}: "):
        read_key(str(link))


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every process the runtime would start, recorded instead (none may start)."""
    started: list[str] = []

    def start(name: str, argv: list[str], **kwargs: Any) -> Any:
        started.append(name)
        raise AssertionError(f"{name} started")

    monkeypatch.setattr(_proc, "start", start)
    monkeypatch.setattr(_proc, "start_piped", start)
    monkeypatch.setattr(
        context_module, "_network", lambda iface, environ: ({"VLLM_HOST_IP": "10.0.0.1"}, "test")
    )
    return started


def _plan_in(tmp_path: Path, make_plan: Callable[..., LaunchPlan], **kwargs: Any) -> LaunchPlan:
    return make_plan(model="a/b", job_root=str(tmp_path / "jobs"), **kwargs)


def test_a_key_file_emptied_after_planning_stops_the_job_before_anything_starts(
    tmp_path: Path, make_plan: Callable[..., LaunchPlan], starts: list[str]
) -> None:
    key = _key(tmp_path)
    plan = _plan_in(tmp_path, make_plan, api_key_file=str(key))
    key.write_text("")  # a full quota leaves a 0-byte file
    with pytest.raises(RuntimeFailure, match=f"^API key: {key} is empty"):
        run_plan(plan, rank=0, job_id="5", environ={"PATH": "/usr/bin"})
    assert starts == []


def test_an_empty_generated_key_stops_the_job_before_anything_starts(
    tmp_path: Path, make_plan: Callable[..., LaunchPlan], starts: list[str]
) -> None:
    plan = _plan_in(tmp_path, make_plan)
    key = Path(plan.paths.for_job("6").api_key)
    key.parent.mkdir(parents=True, mode=0o700)
    key.touch(mode=0o600)  # kept by the leader: it exists
    with pytest.raises(VllmHpcError, match=f"^API key: {key} is empty"):
        run_plan(plan, rank=0, job_id="6", environ={"PATH": "/usr/bin"})
    assert starts == []
