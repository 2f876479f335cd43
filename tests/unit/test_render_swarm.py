"""The Docker Swarm stack file (`render swarm`): golden whole files, validation against
the Compose Specification schema (vendored in the check-jsonschema package, which
`docker stack deploy` files follow), its shape (a service per role placed by node label,
GPUs as generic resources, an overlay network, Swarm secrets) and bad input as one line.
No Docker engine runs here."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml

from launchers.errors import InputError
from launchers.plan.launch import LaunchPlan
from launchers.render.swarm import render_swarm

from .conftest import assert_one_clear_line
from .helpers.cli import run

BIG = "llama-3.1-70b-instruct"
TOKEN_PATH = "/run/secrets/ray_token"  # noqa: S105 - a path


def validate_stack(text: str) -> dict[str, Any]:
    ref = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    doc: dict[str, Any] = yaml.safe_load(text)
    jsonschema.Draft202012Validator(json.loads(ref.read_text(encoding="utf-8"))).validate(doc)
    return doc


def _big(make_plan: Callable[..., LaunchPlan], **kwargs: Any) -> LaunchPlan:
    return make_plan(model=BIG, nodes=2, gpus_per_node=4, **kwargs)


def test_golden_and_schema(
    make_plan: Callable[..., LaunchPlan], golden: Callable[[str, str], None]
) -> None:
    text = render_swarm(_big(make_plan))
    validate_stack(text)
    golden("llama-3.1-70b-2x4.swarm.yaml", text)
    single = render_swarm(make_plan(model="llama-3.2-3b-instruct"))
    assert list(validate_stack(single)["services"]) == ["head"]
    golden("llama-3.2-3b-single.swarm.yaml", single)


def test_shape(make_plan: Callable[..., LaunchPlan]) -> None:
    doc = validate_stack(render_swarm(_big(make_plan), stack="team"))
    head, worker = doc["services"]["head"], doc["services"]["worker"]
    assert doc["networks"] == {"vllm": {"driver": "overlay", "attachable": False}}
    for service, role, replicas in ((head, "head", 1), (worker, "worker", 1)):
        deploy = service["deploy"]
        assert deploy["replicas"] == replicas
        assert deploy["placement"]["constraints"] == [f"node.labels.vllm-hpc.role == {role}"]
        assert deploy["resources"]["reservations"]["generic_resources"] == [
            {"discrete_resource_spec": {"kind": "NVIDIA-GPU", "value": 4}}
        ]
        assert service["networks"] == ["vllm"]
        assert service["environment"]["RAY_AUTH_MODE"] == "token"
        assert service["environment"]["RAY_AUTH_TOKEN_PATH"] == TOKEN_PATH
        assert {"source": "ray_token", "target": "ray_token", "uid": "0", "gid": "0",
                "mode": 0o400} in service["secrets"]  # fmt: skip
    assert head["command"][:2] == ["leader", "--ray_cluster_size=2"]
    assert worker["command"][:2] == ["worker", "--ray_address=head:6379"]
    assert {"source": "api_key", "target": "/var/lib/vllm-hpc/job/api_key", "uid": "0",
            "gid": "0", "mode": 0o400} in head["secrets"]  # fmt: skip
    assert doc["secrets"] == {
        "ray_token": {"external": True, "name": "team-ray-token"},
        "api_key": {"external": True, "name": "team-api-key"},
    }


@pytest.mark.parametrize(
    ("request_", "option"),
    [({}, "--preflight-port=29510"), ({"no_preflight": True}, "--no-preflight")],
)
def test_the_plans_preflight_reaches_both_services(
    make_plan: Callable[..., LaunchPlan], request_: dict[str, Any], option: str
) -> None:
    services = validate_stack(render_swarm(_big(make_plan, **request_)))["services"]
    assert option in services["head"]["command"] and option in services["worker"]["command"]
    # The nodes meet on the overlay network: only the API is published on the host.
    assert [p["target"] for p in services["head"]["ports"]] == [8000]


def test_secrets_are_never_environment_text(make_plan: Callable[..., LaunchPlan]) -> None:
    launch = _big(make_plan, env={"HF_TOKEN": "hf_NOT_IN_THE_FILE", "NCCL_DEBUG": "INFO"})
    text = render_swarm(launch)
    assert "NOT_IN_THE_FILE" not in text
    for service in validate_stack(text)["services"].values():
        assert service["env_file"] == ["secret.env"]
        assert not {"HF_TOKEN", "VLLM_API_KEY", "RAY_AUTH_TOKEN"} & set(service["environment"])
    assert "#   docker secret create vllm-llama-3-1-70b-instruct-ray-token ray_token" in text
    assert "#   docker stack deploy -c stack.yaml vllm-llama-3-1-70b-instruct" in text


def test_validation_catches_mistakes(make_plan: Callable[..., LaunchPlan]) -> None:
    doc = yaml.safe_load(render_swarm(_big(make_plan)))
    doc["services"]["head"]["deploy"]["placement"]["constraint"] = []
    with pytest.raises(jsonschema.ValidationError):
        validate_stack(yaml.safe_dump(doc))


def test_native_runtime_is_refused(make_plan: Callable[..., LaunchPlan]) -> None:
    with pytest.raises(InputError, match="render swarm"):
        render_swarm(make_plan(model=BIG, runtime="native"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--stack", "Bad Stack"], "Error: --stack: 'Bad Stack' is not a valid compose name"),
        (["--stack", "s\n"], "Error: --stack: 's\\n' has a control character (U+000A)"),
        (["--ray-token-secret", "$(x)"], "Error: --ray-token-secret: '$(x)' is not a valid Swarm"),
        (["--api-key-secret", "a b"], "Error: --api-key-secret: 'a b' is not a valid Swarm name"),
        (["--image", "img 'x'"], "Error: --image: \"img 'x'\" is not an image reference"),
        (["--shm-size", "lots"], "Error: --shm-size: 'lots' is not a size"),
    ],
)
def test_bad_flags_exit_2(args: list[str], expected: str) -> None:
    code, out, err = run(["render", "swarm", "-m", BIG, "-N", "2", "-G", "4", *args])
    assert_one_clear_line(code, out, err, expected)
