"""The slurm/*.sbatch templates as a newcomer meets them: submitted from a bare checkout
with only a Python that has vllm-hpc (no module, no bin/ on PATH), run by SLURM as a copy
in its spool directory, reaching the node runtime the way `vllm-hpc render sbatch` does,
with EXTRA_VLLM_ARGS split as a shell would. And the wheel that puts the bash wrappers on
a venv's PATH.

The templates run with bash outside SLURM: a fake srun records its argv, the Python on
VLLM_HPC_PYTHON is this checkout's (the seam of conftest's ``shell_env``), so `vllm-hpc plan`
runs for real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from launchers.input.extra_args import split_extra_args
from launchers.plan.commands import JOB_KEY
from launchers.plan.launch import LaunchPlan
from launchers.render.text import render_sbatch

from .helpers.scripts import SLURM_ENV, run_bash

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = sorted(p.name for p in (REPO / "slurm").glob("*.sbatch"))
JSON_VALUE = '{"temperature": 0.5}'
EXTRA = f"--max-model-len 512 --override-generation-config '{JSON_VALUE}'"
# srun records its arguments one per NUL-terminated item (spaces and quotes kept).
RECORDING_SRUN = '#!/bin/bash\nprintf "%s\\0" "$@" > "$STARTED"\n'
ONE_NODE = {"SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "n1"}
INPUTS = {
    "single_gpu.sbatch": ONE_NODE,
    "single_node_tp.sbatch": {**ONE_NODE, "SLURM_GPUS_ON_NODE": "2", "TP": "2"},
    "multinode_tp_pp.sbatch": {"TP": "1", "PP": "2"},
    "multinode_native.sbatch": {"TP": "1", "PP": "2"},
    "multinode_dp_ep.sbatch": {"DP": "2", "EP": "0"},
}


@pytest.fixture
def newcomer(shell_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A job's environment with nothing but the Python: PATH holds no vllm-hpc bin/, and
    sbatch ran in a directory that has none either."""
    fake = Path(shell_env["PATH"].split(":")[0])
    (fake / "srun").write_text(RECORDING_SRUN)
    submit_dir = tmp_path / "submitted-here"
    submit_dir.mkdir()
    env = {**shell_env, **SLURM_ENV, "PATH": f"{fake}:/usr/bin:/bin"}
    env["SLURM_SUBMIT_DIR"] = str(submit_dir)
    assert shutil.which("multi-node-serving.sh", path=env["PATH"]) is None
    return env


def spooled(template: str, tmp_path: Path) -> Path:
    """The template as SLURM runs it: a copy named slurm_script in a spool directory."""
    spool = tmp_path / "spool" / "job00077"
    spool.mkdir(parents=True)
    return Path(shutil.copy(REPO / "slurm" / template, spool / "slurm_script"))


def srun_argv(env: dict[str, str]) -> list[str]:
    return Path(env["STARTED"]).read_text().split("\0")[:-1]


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_spooled_template_runs_the_plans_node_argv_with_extra_args_intact(
    template: str, newcomer: dict[str, str], tmp_path: Path
) -> None:
    script = spooled(template, tmp_path)
    env = {"MODEL": "a/b", "EXTRA_VLLM_ARGS": EXTRA, **INPUTS[template]}
    done = run_bash(newcomer, script, (), env)
    assert done.returncode == 0, done.stderr
    job_dir = Path(newcomer["VLLM_HPC_JOB_ROOT"]) / "slurm-77"
    plan = LaunchPlan.model_validate_json((job_dir / "plan.json").read_text())
    # One route: srun runs the plan's node_argv for this job, as the rendered script does.
    node_argv = [item.replace(JOB_KEY, "slurm-77") for item in plan.node_argv]
    assert srun_argv(newcomer) == ["--ntasks-per-node=1", "--kill-on-bad-exit=1", *node_argv]
    assert node_argv[1:] == ["-m", "launchers", "node", "run", "--plan", f"{job_dir}/plan.json"]
    rendered = render_sbatch(plan).rstrip("\n").splitlines()[-1]
    assert rendered.split() == [item.replace(JOB_KEY, '"${job_key}"') for item in plan.node_argv]
    # EXTRA_VLLM_ARGS split as a shell would: the JSON value is one argument.
    serve = plan.leader.serve_argv
    assert serve is not None
    flag = serve.index("--override-generation-config")
    assert serve[flag + 1] == JSON_VALUE
    assert json.loads(serve[flag + 1]) == {"temperature": 0.5}
    assert serve[serve.index("--max-model-len") + 1] == "512"


@pytest.mark.parametrize(
    ("text", "args"),
    [
        ("--enforce-eager", ("--enforce-eager",)),
        ("  --seed 1   --enforce-eager ", ("--seed", "1", "--enforce-eager")),
        (
            f"--override-generation-config '{JSON_VALUE}'",
            ("--override-generation-config", JSON_VALUE),
        ),
        ('--chat-template-kwargs "{\\"a\\": [1, 2]}"', ("--chat-template-kwargs", '{"a": [1, 2]}')),
        (
            "--served-model-name 'my model' # not a comment",
            ("--served-model-name", "my model", "#", "not", "a", "comment"),
        ),
        ("", ()),
    ],
)
def test_extra_vllm_args_split_as_a_shell_would(text: str, args: tuple[str, ...]) -> None:
    assert split_extra_args(text, "EXTRA_VLLM_ARGS") == args


def test_the_wheel_puts_the_wrappers_on_path_and_carries_the_helper(tmp_path: Path) -> None:
    """`pip install .` installs bin/'s wrappers as scripts (the venv's bin/, on PATH when
    it is activated) and sbatch.bash inside the package (what the templates source)."""
    # Built from a copy of what the wheel is made of: no build/ left in the checkout, and
    # no stale build/ of an earlier run in the wheel.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("bin", "python"):
        shutil.copytree(REPO / name, source / name, ignore=skip)
    out = tmp_path / "wheel"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = out.glob("vllm_hpc-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
    version = wheel.name.split("-")[1]
    wrappers = [p.name for p in (REPO / "bin").iterdir() if p.suffix in (".sh", ".bash")]
    assert "multi-node-serving.sh" in wrappers
    for name in wrappers:
        script = f"vllm_hpc-{version}.data/scripts/{name}"
        assert script in names, name
        if name.endswith(".sh"):
            assert modes[script] & 0o111, f"{name} is not executable in the wheel"
    assert "launchers/sbatch.bash" in names
