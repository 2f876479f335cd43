"""Ray token authentication on the wrapper door (``multi-node-serving.sh leader|worker``).

The leader and its workers may share no job directory, so the token is one file every
node reads (``--ray-token-file``, ``VLLM_HPC_RAY_TOKEN_FILE``, ``RAY_AUTH_TOKEN_PATH``,
else ``JOB_ROOT/.ray_token``): the leader creates it (0600, ``O_EXCL``) when absent, and
a worker without a private, non-empty token refuses to start, in one line. The token is
never on a command line or in the plan, only its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from launchers import installed
from launchers.errors import InputError
from launchers.input import wrapper
from launchers.plan.launch import LaunchPlan
from launchers.runtime import run
from launchers.runtime.run import ray_token_env

from .conftest import assert_one_clear_line
from .helpers.cli import run as run_cli


def _token(path: Path, text: str = "tok-abc\n", mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def _file(tmp_path: Path, mode: str, *flags: str, **environ: str) -> str:
    args = wrapper.parse([mode, *(["--ray_address=10.0.0.1"] if mode == "worker" else []), *flags])
    return wrapper.ray_token_file(args, {"VLLM_HPC_JOB_ROOT": str(tmp_path / "jobs"), **environ})


def test_the_leader_creates_a_private_token_in_the_job_root_when_absent(tmp_path: Path) -> None:
    path = _file(tmp_path, "leader")
    token = tmp_path / "jobs" / ".ray_token"
    assert path == str(token)
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text().strip()) >= 32
    first = token.read_text()
    assert _file(tmp_path, "leader") == path and token.read_text() == first  # kept
    assert _file(tmp_path, "worker") == path  # a worker reading the same root finds it


def test_the_token_file_is_the_flag_then_the_environment(tmp_path: Path) -> None:
    flag, env, ray = (_token(tmp_path / name) for name in ("flag", "env", "ray"))
    assert _file(tmp_path, "worker", f"--ray-token-file={flag}") == str(flag)
    given = {"VLLM_HPC_RAY_TOKEN_FILE": str(env), "RAY_AUTH_TOKEN_PATH": str(ray)}
    assert _file(tmp_path, "worker", f"--ray_token_file={flag}", **given) == str(flag)
    assert _file(tmp_path, "worker", **given) == str(env)
    assert _file(tmp_path, "worker", RAY_AUTH_TOKEN_PATH=str(ray)) == str(ray)


def _refused(tmp_path: Path, mode: str, *flags: str) -> str:
    with pytest.raises(InputError) as caught:
        _file(tmp_path, mode, *flags)
    return caught.value.one_line()


def test_a_worker_without_the_token_refuses(tmp_path: Path) -> None:
    missing = tmp_path / "jobs" / ".ray_token"
    assert _refused(tmp_path, "worker") == (
        f"--ray-token-file: no Ray token at {missing} (start the leader first with the "
        "token file on storage this node reads, or copy the leader's token file here "
        "(chmod 600) and pass --ray-token-file=FILE)"
    )
    assert not missing.exists()  # a worker never makes a token of its own


@pytest.mark.parametrize("mode", ["leader", "worker"])
def test_a_token_others_can_read_is_refused(tmp_path: Path, mode: str) -> None:
    token = _token(tmp_path / "tok", mode=0o644)
    assert _refused(tmp_path, mode, f"--ray-token-file={token}") == (
        f"--ray-token-file: {token} can be read by other users (-rw-r--r--) (chmod 600 {token})"
    )


@pytest.mark.parametrize("mode", ["leader", "worker"])
def test_an_empty_token_is_refused(tmp_path: Path, mode: str) -> None:
    token = _token(tmp_path / "tok", " \n")
    # The leader would make the token: it says to remove the empty one; a worker cannot.
    fix = (
        f"remove {token}; a new one is made at the next start"
        if mode == "leader"
        else "delete it and start the leader again (it writes a new token), or copy the "
        "leader's token file here (chmod 600)"
    )
    assert _refused(tmp_path, mode, f"--ray-token-file={token}") == (
        f"--ray-token-file: {token} is empty ({fix})"
    )


def test_a_symlinked_token_is_not_followed(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(_token(tmp_path / "real"))
    assert _refused(tmp_path, "leader", f"--ray-token-file={link}") == (
        f"--ray-token-file: cannot use {link}: Too many levels of symbolic links (remove "
        f"{link}; a new one is made at the next start)"
    )


def test_the_cli_refuses_a_token_less_worker_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    code, out, err = run_cli(
        ["node", "wrapper", "worker", "--ray_address=10.0.0.1"],
        {"VLLM_HPC_JOB_ROOT": str(tmp_path / "jobs")},
    )
    assert_one_clear_line(code, out, err, "Error: --ray-token-file: no Ray token at ")


def test_every_wrapper_node_runs_ray_with_the_token_file_never_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plans: list[LaunchPlan] = []

    def fake_run_plan(plan: LaunchPlan, **kwargs: Any) -> int:
        plans.append(plan)
        return 0

    monkeypatch.setattr(run, "run_plan", fake_run_plan)
    monkeypatch.setattr(installed, "installed_version", lambda *dists: "2.52.0")
    token = _token(tmp_path / "shared-token", "tok-very-secret\n")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    env = {"VLLM_HPC_JOB_ROOT": str(tmp_path / "jobs")}
    for argv in (
        ["leader", "--ray_cluster_size=2", "--node-ip-address=10.0.0.1"],
        ["worker", "--ray_address=10.0.0.1"],
    ):
        code, _, err = run_cli(["node", "wrapper", *argv, f"--ray-token-file={token}"], env)
        assert code == 0, err
    assert [p.ray_token_file for p in plans] == [str(token), str(token)]
    for plan in plans:
        text = plan.model_dump_json()
        assert "tok-very-secret" not in text and "--ray-token-file" not in text
    assert ray_token_env(str(token), print) == {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
    }
