"""Docker compose: golden whole files, validation against the Compose Specification
schema (vendored in the check-jsonschema package), and the shipped containers/docker
files equal the renderer's output. No Docker engine runs here."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml

from launchers.errors import InputError
from launchers.plan.launch import LaunchPlan
from launchers.render.compose import render_compose, render_compose_files, render_env_example

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "containers" / "docker"


def compose_schema() -> dict[str, Any]:
    ref = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(ref.read_text(encoding="utf-8"))
    return schema


def validate_compose(text: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(text)
    jsonschema.Draft202012Validator(compose_schema()).validate(doc)
    return doc


def _seventy(make_plan: Callable[..., LaunchPlan]) -> LaunchPlan:
    return make_plan(model="llama-3.1-70b-instruct", nodes=2, gpus_per_node=4)


def test_golden_and_schema(
    make_plan: Callable[..., LaunchPlan], golden: Callable[[str, str], None]
) -> None:
    for name, text in render_compose_files(_seventy(make_plan)).items():
        golden(f"llama-3.1-70b-2x4.{name.lstrip('.')}", text)
        if name.endswith(".yaml"):
            validate_compose(text)


def test_golden_secret_env(
    make_plan: Callable[..., LaunchPlan], golden: Callable[[str, str], None]
) -> None:
    env = {"HF_TOKEN": "hf_NOT_IN_THE_FILE", "NCCL_DEBUG": "INFO", "X": "${HOME}"}
    launch = make_plan(model="llama-3.1-70b-instruct", nodes=2, gpus_per_node=4, env=env)
    text = render_compose(launch, "head")
    assert "NOT_IN_THE_FILE" not in text
    service = validate_compose(text)["services"]["vllm-head"]
    assert service["environment"]["X"] == "$${HOME}"
    golden("llama-3.1-70b-2x4-secret-env.compose.head.yaml", text)


def test_golden_single_local_model(
    make_plan: Callable[..., LaunchPlan],
    golden: Callable[[str, str], None],
    tiny_model: Callable[..., Path],
) -> None:
    model = tiny_model()
    launch = make_plan(model=str(model))
    text = render_compose(launch, "head", rdma=False, image="vllm-hpc:dev", shm_size="2gb")
    doc = validate_compose(text)
    service = doc["services"]["vllm-head"]
    assert {"type": "bind", "source": str(model), "target": str(model), "read_only": True} in (
        service["volumes"]
    )
    assert "devices" not in service and "cap_add" not in service
    # the tmp path differs per run: golden of the rest
    golden("local-model.compose.head.yaml", text.replace(str(model), "/models/tiny"))


def test_shipped_files_are_rendered(
    make_plan: Callable[..., LaunchPlan], request: pytest.FixtureRequest
) -> None:
    for name, text in render_compose_files(_seventy(make_plan)).items():
        if request.config.getoption("--update-golden"):
            (SHIPPED / name).write_text(text)
        assert (SHIPPED / name).read_text() == text, f"{SHIPPED / name} differs: --update-golden"


def test_shape(make_plan: Callable[..., LaunchPlan]) -> None:
    files = render_compose_files(_seventy(make_plan))
    head = yaml.safe_load(files["compose.head.yaml"])["services"]["vllm-head"]
    worker = yaml.safe_load(files["compose.worker.yaml"])["services"]["vllm-worker"]
    for service in (head, worker):
        assert service["network_mode"] == "host"
        assert service["shm_size"] == "16gb"
        assert service["env_file"] == [".env"]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 4, "capabilities": ["gpu"]}]
        assert any(v["target"] == "/root/.cache/huggingface" for v in service["volumes"])
    assert head["command"][:2] == ["leader", "--ray_cluster_size=2"]
    assert "--model=${MODEL}" in head["command"]
    assert worker["command"][:2] == ["worker", "--ray_address=${RAY_ADDRESS}"]


@pytest.mark.parametrize(
    ("request_", "option"),
    [({}, "--preflight-port=29510"), ({"no_preflight": True}, "--no-preflight")],
)
def test_the_plans_preflight_reaches_both_hosts(
    make_plan: Callable[..., LaunchPlan], request_: dict[str, Any], option: str
) -> None:
    launch = make_plan(model="llama-3.1-70b-instruct", nodes=2, gpus_per_node=4, **request_)
    files = render_compose_files(launch)
    for role in ("head", "worker"):
        service = yaml.safe_load(files[f"compose.{role}.yaml"])["services"][f"vllm-{role}"]
        assert option in service["command"]
        # Host networking: no port is published, the nodes meet on the hosts' own.
        assert "ports" not in service


def test_env_example_has_no_secrets(make_plan: Callable[..., LaunchPlan]) -> None:
    text = render_env_example(_seventy(make_plan))
    keys = [line.split("=", 1)[0] for line in text.splitlines() if line and line[0] != "#"]
    assert keys == [
        "VLLM_HOST_IP",
        "RAY_ADDRESS",
        "NCCL_SOCKET_IFNAME",
        "GLOO_SOCKET_IFNAME",
        "TP_SOCKET_IFNAME",
        "NCCL_IB_HCA",
        "MODEL",
        "HF_CACHE_DIR",
        "VLLM_HPC_JOB_DIR",
        "RAY_TOKEN_FILE",
    ]
    assert "VLLM_API_KEY" not in text and "api_key" in text


def test_validation_catches_mistakes(make_plan: Callable[..., LaunchPlan]) -> None:
    doc = yaml.safe_load(render_compose(_seventy(make_plan), "head"))
    doc["services"]["vllm-head"]["network-mode"] = "host"
    with pytest.raises(jsonschema.ValidationError):
        validate_compose(yaml.safe_dump(doc))


def test_native_runtime_is_refused(make_plan: Callable[..., LaunchPlan]) -> None:
    launch = make_plan(model="llama-3.1-70b-instruct", runtime="native")
    with pytest.raises(InputError, match="render compose"):
        render_compose(launch, "head")
