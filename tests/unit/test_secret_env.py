"""Secret-looking variables of a registry entry's, the site's or the request's ``env``
(HF_TOKEN, WANDB_API_KEY): only their names reach the plan, the sbatch text and the
dry run; the values go to a 0600 file the nodes read, and a node without it fails."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from launchers import _proc
from launchers.errors import RuntimeFailure, SubmitError
from launchers.input.planner import plan_for
from launchers.input.registry import load_registry
from launchers.input.resolve import resolve
from launchers.jobdir import secretfile
from launchers.jobdir.safe import UnsafePathError
from launchers.plan.launch import LaunchPlan
from launchers.render.text import SECRET_SHOWN, render_plan_json, render_plan_text, render_sbatch
from launchers.runtime import run
from launchers.runtime.secret_env import node_secret_env
from launchers.spec.request import SubmitRequest
from launchers.submit import slurm

from .conftest import PYTHON
from .helpers.cli import run as run_cli

HF = "hf_FromTheRequest0123456789"
WANDB = "wandb-FromTheRegistry-abcdef"
SITE = "site-FromTheSiteFile-xyz"
VALUES = (HF, WANDB, SITE)
REGISTRY = f"""\
site:
  env:
    SITE_PASSWORD: {SITE}
    NCCL_DEBUG: WARN
models:
  tiny:
    model: org/tiny
    env:
      WANDB_API_KEY: {WANDB}
      VLLM_LOGGING_LEVEL: INFO
"""


@pytest.fixture
def job_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "jobs"
    old = os.umask(0o022)  # the usual umask: the file must be 0600 all the same
    yield root
    os.umask(old)


@pytest.fixture
def secret_plan(tmp_path: Path, job_root: Path) -> Callable[..., LaunchPlan]:
    reg = tmp_path / "models.yaml"
    reg.write_text(REGISTRY)
    environ = {"HOME": "/home/alice", "XDG_CONFIG_HOME": "/nonexistent"}

    def make(**kwargs: Any) -> LaunchPlan:
        registry = load_registry((str(reg),), environ)
        request = SubmitRequest(
            model="tiny", job_root=str(job_root), env={"HF_TOKEN": HF}, no_api_key=True, **kwargs
        )
        return plan_for(resolve(request, registry, environ, PYTHON))

    return make


def assert_no_value(text: str) -> None:
    for value in VALUES:
        assert value not in text


def bash_n(script: str) -> None:
    done = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_plan_has_the_names_and_no_value(secret_plan: Callable[..., LaunchPlan]) -> None:
    plan = secret_plan()
    assert plan.secret_env == ("HF_TOKEN", "SITE_PASSWORD", "WANDB_API_KEY")
    assert plan.compile_cache is not None  # its variables are plain, as they should be
    assert plan.env == {
        "NCCL_DEBUG": "WARN",
        "VLLM_LOGGING_LEVEL": "INFO",
        **plan.compile_cache.env,
    }
    assert plan.secret_values() == {
        "HF_TOKEN": HF,
        "SITE_PASSWORD": SITE,
        "WANDB_API_KEY": WANDB,
    }
    for text in (
        plan.model_dump_json(),
        repr(plan),
        str(plan.model_dump()),
        render_plan_json(plan),
    ):
        assert_no_value(text)
    # A plan read back from plan.json carries the names only.
    again = LaunchPlan.model_validate_json(plan.model_dump_json())
    assert again.secret_env == plan.secret_env and again.secret_values() == {}


def test_the_sbatch_text_has_no_value_and_is_bash(secret_plan: Callable[..., LaunchPlan]) -> None:
    script = render_sbatch(slurm.seal_secrets(secret_plan()))
    assert_no_value(script)
    assert '"secret_env_file": "' in script
    bash_n(script)


def test_the_dry_run_shows_where_each_secret_comes_from(
    secret_plan: Callable[..., LaunchPlan], job_root: Path
) -> None:
    text = render_plan_text(secret_plan())
    assert_no_value(text)
    assert f"  HF_TOKEN={SECRET_SHOWN}\n" in text
    assert f"  WANDB_API_KEY={SECRET_SHOWN}\n" in text
    assert "  NCCL_DEBUG=WARN\n" in text
    assert not job_root.exists()  # a dry run writes nothing


def test_sealing_writes_a_0600_file_with_the_values(secret_plan: Callable[..., LaunchPlan]) -> None:
    plan = slurm.seal_secrets(secret_plan())
    path = Path(plan.secret_env_file or "")
    assert path.parent.name == "secrets" and path.name.startswith("vllm-tiny-")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["env"]["HF_TOKEN"] == HF
    assert slurm.seal_secrets(plan) is plan  # sealed once
    assert node_secret_env(LaunchPlan.model_validate_json(plan.model_dump_json())) == {
        "HF_TOKEN": HF,
        "SITE_PASSWORD": SITE,
        "WANDB_API_KEY": WANDB,
    }


def test_two_plans_get_two_files(secret_plan: Callable[..., LaunchPlan]) -> None:
    first, second = (slurm.seal_secrets(secret_plan()) for _ in range(2))
    assert first.secret_env_file != second.secret_env_file


def test_a_plan_without_secrets_writes_nothing(make_plan: Callable[..., LaunchPlan]) -> None:
    plan = make_plan(model="llama-3.2-3b-instruct")
    assert plan.secret_env == () and slurm.seal_secrets(plan) is plan


def test_a_planted_symlink_is_refused_and_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("mine\n")
    secrets_dir = tmp_path / "jobs" / "secrets"
    secrets_dir.mkdir(parents=True, mode=0o700)
    path = secretfile.new_path(str(tmp_path / "jobs"), "job", token=lambda: "fixed")
    Path(path).symlink_to(victim)
    with pytest.raises(UnsafePathError, match="already exists"):
        secretfile.write(path, {"HF_TOKEN": HF})
    assert victim.read_text() == "mine\n"


def test_a_directory_others_can_enter_is_refused(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    secrets_dir.chmod(0o755)
    with pytest.raises(UnsafePathError, match=r"can be entered by other users.*chmod 700"):
        secretfile.write(str(secrets_dir / "x.env.json"), {"HF_TOKEN": HF})
    assert list(secrets_dir.iterdir()) == []


def test_the_node_refuses_a_symlinked_file(tmp_path: Path) -> None:
    real = tmp_path / "real.env.json"
    secretfile.write(str(real), {"HF_TOKEN": HF})
    link = tmp_path / "link.env.json"
    link.symlink_to(real)
    with pytest.raises(RuntimeFailure, match="is a symlink"):
        secretfile.read(str(link), ["HF_TOKEN"])


def test_the_node_refuses_a_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "x.env.json"
    secretfile.write(str(path), {"HF_TOKEN": HF})
    path.chmod(0o644)
    with pytest.raises(RuntimeFailure, match="can be read by other users"):
        secretfile.read(str(path), ["HF_TOKEN"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "cannot be read (No such file or directory): the job stops without HF_TOKEN"),
        ("not json", "is not a vllm-hpc secret file"),
        ('{"format": 1, "env": {"OTHER": "x"}}', "has no value for HF_TOKEN"),
    ],
    ids=["missing", "garbled", "lacks-one"],
)
def test_a_node_without_its_secrets_fails_closed_in_one_line(
    secret_plan: Callable[..., LaunchPlan],
    monkeypatch: pytest.MonkeyPatch,
    text: str | None,
    expected: str,
) -> None:
    sealed = slurm.seal_secrets(secret_plan())
    path = Path(sealed.secret_env_file or "")
    path.unlink()
    if text is not None:
        path.write_text(text)
        path.chmod(0o600)
    started: list[list[str]] = []
    monkeypatch.setattr(_proc, "start", lambda name, argv, **kw: started.append(list(argv)))
    on_disk = LaunchPlan.model_validate_json(sealed.model_dump_json())
    with pytest.raises(RuntimeFailure) as caught:
        run.run_plan(on_disk, rank=0, job_id="7", environ={"PATH": os.defpath})
    line = caught.value.one_line()
    assert line.startswith(f"secret environment file: {path} {expected}"), line
    assert "\n" not in line and started == []
    assert not (Path(sealed.paths.root) / "7").exists()  # nothing made for the job


class _Started(Exception):
    pass


def start_serve_of(
    plan: LaunchPlan, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, list[str], dict[str, str]]:
    """Run rank 0 of ``plan`` (read back from plan.json) until it starts vllm serve."""
    on_disk = LaunchPlan.model_validate_json(plan.model_dump_json())
    seen: list[tuple[list[str], dict[str, str]]] = []

    def fake_start(name: str, argv: list[str], *, env: dict[str, str], **_: Any) -> Any:
        seen.append((list(argv), dict(env)))
        raise RuntimeFailure("stop the test here")

    monkeypatch.setattr(_proc, "start", fake_start)
    monkeypatch.setattr(_proc, "resolve_executable", lambda name, env: f"/usr/bin/{name}")
    monkeypatch.setattr(
        "launchers.runtime.context._network",
        lambda iface, environ: ({"VLLM_HOST_IP": "10.0.0.1"}, "test network"),
    )
    code = run.run_plan(on_disk, rank=0, job_id="8", environ={"PATH": os.defpath})
    ((argv, env),) = seen
    return code, argv, env


def test_apptainer_gets_the_secrets_through_its_environment_not_argv(
    secret_plan: Callable[..., LaunchPlan], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    image = tmp_path / "vllm.sif"
    image.write_text("")
    sealed = slurm.seal_secrets(secret_plan(container=f"apptainer:{image}"))
    _, argv, env = start_serve_of(sealed, monkeypatch)
    assert argv[:2] == ["apptainer", "exec"] and "--cleanenv" in argv
    assert env["APPTAINERENV_HF_TOKEN"] == HF and env["APPTAINERENV_WANDB_API_KEY"] == WANDB
    assert_no_value(" ".join(argv))


def test_the_runtime_exports_the_secrets_to_the_processes_it_starts(
    secret_plan: Callable[..., LaunchPlan], monkeypatch: pytest.MonkeyPatch
) -> None:
    sealed = slurm.seal_secrets(secret_plan())
    code, argv, env = start_serve_of(sealed, monkeypatch)
    assert code == 1
    assert argv[:2] == ["/usr/bin/vllm", "serve"]
    assert (env["HF_TOKEN"], env["WANDB_API_KEY"], env["SITE_PASSWORD"]) == (HF, WANDB, SITE)
    assert env["NCCL_DEBUG"] == "WARN"
    assert_no_value(" ".join(argv))
    # The job ended by itself (it failed): no next attempt needs the file.
    assert not Path(sealed.secret_env_file or "").exists()


@pytest.mark.parametrize(
    ("requeue", "signalled", "kept"),
    [(False, False, False), (False, True, False), (True, False, False), (True, True, True)],
)
def test_the_file_is_kept_only_for_a_next_attempt(
    secret_plan: Callable[..., LaunchPlan], requeue: bool, signalled: bool, kept: bool
) -> None:
    from launchers.runtime.secret_env import forget

    sealed = slurm.seal_secrets(secret_plan(requeue=requeue))
    forget(sealed, stopped_by_signal=signalled)
    assert Path(sealed.secret_env_file or "").exists() is kept


def test_submit_writes_the_file_before_sbatch_and_removes_it_when_refused(
    secret_plan: Callable[..., LaunchPlan], monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts: list[str] = []

    def fake_sbatch(plan: LaunchPlan, script: str, environ: Any) -> slurm.JobHandle:
        assert Path(plan.secret_env_file or "").is_file()  # there before the job can start
        scripts.append(script)
        return slurm.JobHandle("9", "/jobs/9", "slurm", "/jobs/9.out")

    monkeypatch.setattr(slurm, "submit_sbatch", fake_sbatch)
    slurm.submit(secret_plan(), executor="slurm", via="sbatch", environ={})
    (script,) = scripts
    assert_no_value(script)
    bash_n(script)

    def refused(plan: LaunchPlan, script: str, environ: Any) -> slurm.JobHandle:
        scripts.append(plan.secret_env_file or "")
        raise SubmitError("sbatch refused the job: no")

    monkeypatch.setattr(slurm, "submit_sbatch", refused)
    with pytest.raises(SubmitError):
        slurm.submit(secret_plan(), executor="slurm", via="sbatch", environ={})
    assert not Path(scripts[-1]).exists()


@pytest.mark.parametrize("command", [["render", "sbatch"], ["plan"]])
def test_render_sbatch_and_plan_write_the_file_not_the_value(
    tmp_path: Path, job_root: Path, command: list[str]
) -> None:
    reg = tmp_path / "models.yaml"
    reg.write_text(REGISTRY)
    args = [*command, "-m", "tiny", "--registry", str(reg), "--job-root", str(job_root)]
    code, out, err = run_cli(args)
    assert code == 0, err
    assert_no_value(out + err)
    (path,) = (job_root / "secrets").iterdir()
    assert f"SITE_PASSWORD, WANDB_API_KEY written to {path} (0600)" in err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and WANDB in path.read_text()
    if command == ["plan"]:
        assert json.loads(out)["secret_env_file"] == str(path)
    else:
        bash_n(out)


def test_submit_dry_run_writes_no_file(tmp_path: Path, job_root: Path) -> None:
    reg = tmp_path / "models.yaml"
    reg.write_text(REGISTRY)
    args = ["submit", "-m", "tiny", "--registry", str(reg), "--job-root", str(job_root)]
    code, out, err = run_cli([*args, "--dry-run"])
    assert code == 0, err
    assert_no_value(out)
    assert f"WANDB_API_KEY={SECRET_SHOWN}" in out
    assert not job_root.exists()


def test_the_wrappers_leader_keeps_its_secrets_in_memory(tmp_path: Path) -> None:
    """``multi-node-serving.sh leader --model`` plans and runs in one process: the values
    need no file, and still never reach the plan's data."""
    from launchers.input import wrapper

    reg = tmp_path / "models.yaml"
    reg.write_text(REGISTRY)
    args = wrapper.parse(["leader", "--ray_cluster_size=1", "--model=tiny"])
    environ = {"VLLM_HPC_JOB_ROOT": str(tmp_path / "jobs"), "VLLM_HPC_REGISTRY": str(reg)}
    plan = wrapper.wrapper_plan(
        args, job_id="5", environ=environ, python=PYTHON, ray_token=str(tmp_path / "ray_token")
    )
    assert plan.secret_env == ("SITE_PASSWORD", "WANDB_API_KEY")
    assert plan.secret_env_file is None
    assert_no_value(plan.model_dump_json())
    assert node_secret_env(plan) == {"SITE_PASSWORD": SITE, "WANDB_API_KEY": WANDB}
    # The same plan read back from a file has no values and no file: the node refuses.
    with pytest.raises(RuntimeFailure, match="have no secret environment file"):
        node_secret_env(LaunchPlan.model_validate_json(plan.model_dump_json()))
