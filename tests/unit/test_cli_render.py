"""`render k8s`, `compose`, `swarm` and `ray-cluster`, with the options of `submit`, run
through click."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from launchers.cli.render import compose_cmd, k8s_cmd, ray_cluster_cmd, swarm_cmd


@pytest.fixture
def group() -> click.Group:
    render = click.Group("render")
    render.add_command(k8s_cmd)
    for command in (compose_cmd, ray_cluster_cmd, swarm_cmd):
        render.add_command(command)
    return render


def test_k8s_statefulset_to_file(group: click.Group, tmp_path: Path) -> None:
    out = tmp_path / "sts.yaml"
    args = ["k8s", "-m", "llama-3.1-70b-instruct", "-N", "2", "-G", "4", "--kind", "statefulset"]
    done = CliRunner().invoke(group, [*args, "--namespace", "llm", "-o", str(out)])
    assert done.exit_code == 0, done.output
    kinds = [d["kind"] for d in yaml.safe_load_all(out.read_text())]
    assert kinds == ["Service", "StatefulSet", "Service"]


def test_k8s_lws_to_stdout(group: click.Group) -> None:
    done = CliRunner().invoke(group, ["k8s", "-m", "llama-3.2-3b-instruct", "--image", "img:1"])
    assert done.exit_code == 0, done.output
    assert "kind: LeaderWorkerSet" in done.output and "image: img:1" in done.output


def test_compose_output_dir(group: click.Group, tmp_path: Path) -> None:
    args = ["compose", "-m", "llama-3.1-70b-instruct", "-N", "2", "-G", "4", "--no-rdma"]
    done = CliRunner().invoke(group, [*args, "-o", str(tmp_path / "c")])
    assert done.exit_code == 0, done.output
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == [".env.example", "compose.head.yaml", "compose.worker.yaml"]
    head = yaml.safe_load((tmp_path / "c" / "compose.head.yaml").read_text())
    assert "devices" not in head["services"]["vllm-head"]


def test_swarm_image_options(group: click.Group) -> None:
    args = ["swarm", "-m", "llama-3.1-70b-instruct", "-N", "2", "-G", "4"]
    done = CliRunner().invoke(group, [*args, "--image", "img:2", "--shm-size", "8gb"])
    assert done.exit_code == 0, done.output
    head = yaml.safe_load(done.output)["services"]["head"]
    assert head["image"] == "img:2"
    assert head["volumes"][0] == {"type": "tmpfs", "target": "/dev/shm", "tmpfs": {"size": "8gb"}}
    # Swarm passes no devices: it has no --rdma.
    done = CliRunner().invoke(group, [*args, "--no-rdma"])
    assert done.exit_code == 2 and "No such option '--no-rdma'" in done.output


def test_ray_cluster_image_options(group: click.Group) -> None:
    args = ["ray-cluster", "-m", "llama-3.1-70b-instruct", "-N", "2", "-G", "4"]
    hosts = ["--head-ip", "10.0.0.1", "--worker-ips", "10.0.0.2"]
    done = CliRunner().invoke(group, [*args, *hosts, "--no-rdma", "--shm-size", "8gb"])
    assert done.exit_code == 0, done.output
    docker = yaml.safe_load(done.output)["docker"]
    assert docker["image"].startswith("vllm-hpc:")  # the default image
    assert "--shm-size=8gb" in docker["run_options"]
    assert "--device=/dev/infiniband" not in docker["run_options"]
