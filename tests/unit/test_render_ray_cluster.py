"""The Ray cluster launcher file (`render ray-cluster`): golden whole files per provider,
the commands each node runs (the node runtime, Ray token auth), the secret files it
copies and never holds, and bad input as one line, exit 2. Ray's own schema check
(ray/autoscaler/ray-schema.json and `ray up`'s config preparation) needs Ray: it runs in
tests/cluster/test_ray_cluster_schema.py, with the heavy test environment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from launchers.errors import InputError
from launchers.plan.launch import LaunchPlan
from launchers.render.ray_cluster import RayClusterOptions, render_ray_cluster

from .conftest import assert_one_clear_line
from .helpers.cli import run

BIG = "llama-3.1-70b-instruct"
LOCAL = RayClusterOptions(head_ip="10.0.0.1", worker_ips=("10.0.0.2",))
PROVIDERS = {
    "local": LOCAL,
    "aws": RayClusterOptions(provider="aws"),
    "gcp": RayClusterOptions(provider="gcp", project_id="my-project-123"),
}


def _big(make_plan: Callable[..., LaunchPlan], **kwargs: Any) -> LaunchPlan:
    return make_plan(model=BIG, nodes=2, gpus_per_node=4, **kwargs)


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_golden(
    make_plan: Callable[..., LaunchPlan], golden: Callable[[str, str], None], provider: str
) -> None:
    golden(
        f"llama-3.1-70b-2x4.ray-cluster-{provider}.yaml",
        render_ray_cluster(_big(make_plan), PROVIDERS[provider]),
    )


def test_nodes_run_the_node_runtime_with_ray_token_auth(
    make_plan: Callable[..., LaunchPlan],
) -> None:
    doc = yaml.safe_load(render_ray_cluster(_big(make_plan), LOCAL))
    options = doc["docker"]["run_options"]
    for option in (
        "--env=RAY_AUTH_MODE=token",
        "--env=RAY_AUTH_TOKEN_PATH=/run/secrets/ray_token",
        "--gpus=4",
        "--shm-size=16gb",
        "--device=/dev/infiniband",
        "--entrypoint=",
    ):
        assert option in options
    assert doc["provider"] == {"type": "local", "head_ip": "10.0.0.1", "worker_ips": ["10.0.0.2"]}
    assert doc["max_workers"] == 1
    assert doc["file_mounts"] == {"/run/vllm-hpc-files/ray_token": "./ray_token"}
    assert doc["setup_commands"] == [
        "python3 -m pip install --no-cache-dir vllm-hpc==0.1.0",
        "install -D -m 0600 /run/vllm-hpc-files/ray_token /run/secrets/ray_token",
    ]
    head = doc["head_start_ray_commands"]
    assert head[0] == "ray stop"
    assert head[1].startswith("nohup multi-node-serving.sh leader --ray_cluster_size=2 ")
    assert "--ray-args '--autoscaling-config=~/ray_bootstrap_config.yaml'" in head[1]
    assert "--model=llama-3.1-70b-instruct --port=8000" in head[1]
    assert head[1].endswith(" &") and "--job-dir" not in head[1]
    worker = doc["worker_start_ray_commands"]
    assert worker[1].startswith(
        'nohup multi-node-serving.sh worker --ray_address="$RAY_HEAD_IP":6379 --ray_port=6379'
    )


@pytest.mark.parametrize(
    ("request_", "option"),
    [({}, "--preflight-port=29510"), ({"no_preflight": True}, "--no-preflight")],
)
def test_the_plans_preflight_reaches_every_node(
    make_plan: Callable[..., LaunchPlan], request_: dict[str, Any], option: str
) -> None:
    doc = yaml.safe_load(render_ray_cluster(_big(make_plan, **request_), LOCAL))
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert f" {option} " in doc[key][1]


def test_clouds_make_every_node_of_the_layout(make_plan: Callable[..., LaunchPlan]) -> None:
    launch = make_plan(model=BIG, nodes=4, gpus_per_node=8, tp=8, pp=4)
    aws = yaml.safe_load(render_ray_cluster(launch, RayClusterOptions(provider="aws")))
    assert aws["provider"]["region"] == "us-west-2"
    assert aws["head_node_type"] == "head"
    worker = aws["available_node_types"]["worker"]
    assert (worker["min_workers"], worker["max_workers"]) == (3, 3)
    assert worker["node_config"]["InstanceType"] == "p4d.24xlarge"
    gcp_options = RayClusterOptions(provider="gcp", project_id="proj-12345", instance_type="x-1")
    gcp = yaml.safe_load(render_ray_cluster(launch, gcp_options))
    assert gcp["available_node_types"]["head"]["node_config"]["machineType"] == "x-1"
    assert gcp["provider"]["availability_zone"] == "us-central1-a"


def test_secret_env_is_a_copied_file(make_plan: Callable[..., LaunchPlan]) -> None:
    launch = _big(make_plan, env={"HF_TOKEN": "hf_NOT_IN_THE_FILE", "NCCL_DEBUG": "INFO"})
    text = render_ray_cluster(launch, LOCAL)
    assert "NOT_IN_THE_FILE" not in text
    doc = yaml.safe_load(text)
    assert doc["file_mounts"]["/run/vllm-hpc-files/secret.env"] == "./secret.env"
    assert "--env=NCCL_DEBUG=INFO" in doc["docker"]["run_options"]
    for command in (doc["head_start_ray_commands"][1], doc["worker_start_ray_commands"][1]):
        assert command.startswith("set -a && . /run/vllm-hpc-files/secret.env && set +a && nohup")
    assert "# Secret environment (HF_TOKEN; the values are not here):" in text


def test_native_runtime_is_refused(make_plan: Callable[..., LaunchPlan]) -> None:
    launch = make_plan(model=BIG, runtime="native")
    with pytest.raises(InputError, match="render ray-cluster"):
        render_ray_cluster(launch, LOCAL)


BASE = ["render", "ray-cluster", "-m", BIG, "-N", "2", "-G", "4"]
BAD = [
    pytest.param(
        [],
        "Error: --head-ip: --provider local needs the head node's address",
        id="no-head",
    ),
    pytest.param(
        ["--head-ip", "10.0.0.1"],
        "Error: --worker-ips: the plan has 1 worker node(s), 0 address(es) given",
        id="no-workers",
    ),
    pytest.param(
        ["--head-ip", "10.0.0.1", "--worker-ips", "10.0.0.2,10.0.0.3"],
        "Error: --worker-ips: the plan has 1 worker node(s), 2 address(es) given",
        id="too-many",
    ),
    pytest.param(
        ["--head-ip", "10.0.0.1", "--worker-ips", "10.0.0.1"],
        "Error: --worker-ips: an address is given twice",
        id="twice",
    ),
    pytest.param(
        ["--head-ip", "10.0.0.1; rm -rf /", "--worker-ips", "10.0.0.2"],
        "Error: --head-ip: '10.0.0.1; rm -rf /' is not an IP address or host name",
        id="head-shell",
    ),
    pytest.param(
        ["--head-ip", "10.0.0.1", "--worker-ips", "$(reboot)"],
        "Error: --worker-ips: '$(reboot)' is not an IP address or host name",
        id="worker-$",
    ),
    pytest.param(
        ["--head-ip", "h\n", "--worker-ips", "w"],
        "Error: --head-ip: 'h\\n' has a control character (U+000A)",
        id="head-newline",
    ),
    pytest.param(
        ["--provider", "aws", "--head-ip", "10.0.0.1"],
        "Error: --head-ip: is for --provider local",
        id="aws-head-ip",
    ),
    pytest.param(
        ["--provider", "gcp"], "Error: --project-id: --provider gcp needs the GCP project", id="gcp"
    ),
    pytest.param(
        ["--provider", "aws", "--zone", "a"], "Error: --zone: is for --provider gcp", id="aws-zone"
    ),
    pytest.param(
        ["--provider", "aws", "--instance-type", "p4d 'x'"],
        "Error: --instance-type: \"p4d 'x'\" is not valid",
        id="instance-quote",
    ),
    pytest.param(
        ["--provider", "aws", "--ssh-user", "$USER"],
        "Error: --ssh-user: '$USER' is not valid",
        id="ssh-user",
    ),
    pytest.param(
        ["--provider", "aws", "--hf-cache-dir", "/a:/etc"],
        "Error: --hf-cache-dir: '/a:/etc' is not an absolute path docker can bind",
        id="hf-cache-colon",
    ),
    pytest.param(
        ["--provider", "aws", "--name", "Bad Name"],
        "Error: --name: 'Bad Name' is not a valid Kubernetes name",
        id="name",
    ),
]


@pytest.mark.parametrize(("args", "expected"), BAD)
def test_bad_flags_exit_2(args: list[str], expected: str) -> None:
    code, out, err = run([*BASE, *args])
    assert_one_clear_line(code, out, err, expected)


def test_no_default_instance_type_for_two_gpus_on_aws() -> None:
    args = ["render", "ray-cluster", "-m", BIG, "-N", "4", "-G", "2", "--tp", "2", "--pp", "4"]
    code, out, err = run([*args, "--provider", "aws"])
    assert_one_clear_line(
        code, out, err, "Error: --instance-type: no default aws instance type with 2 GPUs"
    )
