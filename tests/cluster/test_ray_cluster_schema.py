"""`vllm-hpc render ray-cluster` against Ray's own checks: the schema that ships with Ray
(ray/autoscaler/ray-schema.json), then what `ray up` does to a file before it touches a
node (`prepare_config`: the provider's defaults, the local provider's node types; then
`validate_config`). Ray is in the heavy test environment only, so its Python runs the
check on the files this checkout renders. No mini cluster, no SSH, no cloud: `ray up`
itself needs reachable nodes. About 5 s (Ray's import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .bed import TestEnv, run

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHECK = """
import json, os, sys
import jsonschema, yaml
import ray.autoscaler
from ray.autoscaler._private.util import prepare_config, validate_config

path = os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")
schema = json.load(open(path))
for name in sys.argv[1:]:
    raw = yaml.safe_load(open(name))
    jsonschema.validate(raw, schema)
    validate_config(prepare_config(raw))
    print("valid", os.path.basename(name))
"""
RENDERS = {
    "local": ["--head-ip", "10.0.0.1", "--worker-ips", "10.0.0.2,10.0.0.3"],
    "aws": ["--provider", "aws"],
    "gcp": ["--provider", "gcp", "--project-id", "my-project-123"],
}


REGISTRY = "models:\n  big:\n    model: org/big\n    env:\n      HF_TOKEN: hf_x\n      X: $y\n"


def _render(out: Path, args: list[str]) -> None:
    """The file for 3 nodes x 8 GPUs of a model with a secret and a plain variable."""
    registry = out.parent / "models.yaml"
    registry.write_text(REGISTRY)
    argv = [sys.executable, "-m", "launchers", "render", "ray-cluster", "-m", "big",
            "-N", "3", "-G", "8", "--tp", "8", "--pp", "3", "-o", str(out), *args]  # fmt: skip
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO / "python"),
        "HOME": str(out.parent),
        "VLLM_HPC_REGISTRY": str(registry),
    }
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=120)


def test_ray_cluster_files_pass_rays_checks(testenv: TestEnv, tmp_path: Path) -> None:
    files = []
    for provider, args in RENDERS.items():
        _render(tmp_path / f"{provider}.yaml", args)
        files.append(tmp_path / f"{provider}.yaml")
    done = run([str(testenv.python), "-c", CHECK, *map(str, files)], timeout=300)
    assert done.stdout.split() == ["valid", "local.yaml", "valid", "aws.yaml", "valid", "gcp.yaml"]
    # The check refuses what Ray refuses: a misspelt key.
    bad = yaml.safe_load(files[0].read_text())
    bad["head_start_ray_command"] = bad.pop("head_start_ray_commands")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    refused = run([str(testenv.python), "-c", CHECK, str(tmp_path / "bad.yaml")], check=False)
    assert refused.returncode != 0 and "head_start_ray_command" in refused.stderr
