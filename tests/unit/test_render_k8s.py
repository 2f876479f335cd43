"""Kubernetes manifests: golden whole files, the Kubernetes schemas offline
(kubernetes-validate, strict), a hand-written schema for the LeaderWorkerSet fields we
rely on (from its CRD), and the shipped containers/k8s files equal the renderer's output.
No Kubernetes cluster runs here."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import kubernetes_validate  # type: ignore[import-untyped,unused-ignore]
import pytest
import yaml

from launchers.errors import InputError
from launchers.plan.launch import LaunchPlan
from launchers.render.containers import IMAGE_WRAPPER
from launchers.render.k8s import STATEFULSET_SCRIPT, k8s_name, render_k8s

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30"
SHIPPED = {
    "lws": ROOT / "containers/k8s/lws.yaml",
    "statefulset": ROOT / "containers/k8s/statefulset.yaml",
}
# The parts of leaderworkerset.x-k8s.io/v1 (config/crd/bases of kubernetes-sigs/lws)
# the manifest uses; unknown keys at these levels are typos.
LWS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "leaderworkerset.x-k8s.io/v1"},
        "kind": {"const": "LeaderWorkerSet"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["leaderWorkerTemplate"],
            "propertyNames": {
                "enum": [
                    "replicas",
                    "leaderWorkerTemplate",
                    "rolloutStrategy",
                    "startupPolicy",
                    "networkConfig",
                ]
            },
            "properties": {
                "replicas": {"type": "integer", "minimum": 0},
                "startupPolicy": {"enum": ["LeaderCreated", "LeaderReady"]},
                "leaderWorkerTemplate": {
                    "type": "object",
                    "required": ["workerTemplate"],
                    "propertyNames": {
                        "enum": [
                            "leaderTemplate",
                            "workerTemplate",
                            "size",
                            "restartPolicy",
                            "subGroupPolicy",
                        ]
                    },
                    "properties": {
                        "size": {"type": "integer", "minimum": 1},
                        "restartPolicy": {
                            "enum": [
                                "RecreateGroupOnPodRestart",
                                "RecreateGroupAfterStart",
                                "Default",
                                "None",
                            ]
                        },
                        "leaderTemplate": {"$ref": "#/$defs/template"},
                        "workerTemplate": {"$ref": "#/$defs/template"},
                    },
                },
            },
        },
    },
    "$defs": {
        "template": {
            "type": "object",
            "required": ["spec"],
            "properties": {"metadata": {"type": "object"}, "spec": {"type": "object"}},
            "additionalProperties": False,
        }
    },
}


def _seventy(make_plan: Callable[..., LaunchPlan]) -> LaunchPlan:
    return make_plan(model="llama-3.1-70b-instruct", nodes=2, gpus_per_node=4)


def validate_k8s(text: str) -> list[str]:
    """Every document against the Kubernetes schemas (strict: unknown fields fail);
    the LWS against LWS_SCHEMA and its pod templates as core Pods. Returns the kinds."""
    kinds = []
    for doc in yaml.safe_load_all(text):
        kinds.append(doc["kind"])
        if doc["kind"] == "LeaderWorkerSet":
            jsonschema.Draft202012Validator(LWS_SCHEMA).validate(doc)
            group = doc["spec"]["leaderWorkerTemplate"]
            for key in ("leaderTemplate", "workerTemplate"):
                template = group[key]
                pod = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": f"{doc['metadata']['name']}-0", **template["metadata"]},
                    "spec": template["spec"],
                }
                kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    return kinds


CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "llama-3.1-70b-2x4.lws.yaml": (
        {"model": "llama-3.1-70b-instruct", "nodes": 2, "gpus_per_node": 4},
        {"kind": "lws"},
    ),
    "llama-3.1-70b-2x4.statefulset.yaml": (
        {"model": "llama-3.1-70b-instruct", "nodes": 2, "gpus_per_node": 4},
        {"kind": "statefulset", "namespace": "llm", "image": "registry.example/vllm-hpc:0.1.0"},
    ),
    # a secret-looking variable: a secretKeyRef, its value nowhere; '$' doubled in values
    "llama-3.1-70b-2x4-secret-env.statefulset.yaml": (
        {
            "model": "llama-3.1-70b-instruct",
            "nodes": 2,
            "gpus_per_node": 4,
            "env": {"HF_TOKEN": "hf_NOT_IN_THE_FILE", "NCCL_DEBUG": "INFO", "X": "$(HOME)"},
        },
        {"kind": "statefulset", "namespace": "llm", "env_secret": "hf-token"},
    ),
    "llama-3.2-3b-single.lws.yaml": (
        {"model": "llama-3.2-3b-instruct", "no_api_key": True},
        {"kind": "lws", "cache_pvc": "hf-cache", "name": "small"},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_and_schema(
    case: str, make_plan: Callable[..., LaunchPlan], golden: Callable[[str, str], None]
) -> None:
    request, options = CASES[case]
    text = render_k8s(make_plan(**request), **options)
    golden(case, text)
    assert "NOT_IN_THE_FILE" not in text
    kinds = validate_k8s(text)
    assert "Service" in kinds


@pytest.mark.parametrize("kind", ["lws", "statefulset"])
def test_shipped_files_are_rendered(
    kind: str, make_plan: Callable[..., LaunchPlan], request: pytest.FixtureRequest
) -> None:
    text = render_k8s(_seventy(make_plan), kind="lws" if kind == "lws" else "statefulset")
    if request.config.getoption("--update-golden"):
        SHIPPED[kind].write_text(text)
    assert SHIPPED[kind].read_text() == text, f"{SHIPPED[kind]} differs: --update-golden"


def test_lws_shape(make_plan: Callable[..., LaunchPlan]) -> None:
    docs = list(yaml.safe_load_all(render_k8s(_seventy(make_plan))))
    lws = next(d for d in docs if d["kind"] == "LeaderWorkerSet")
    group = lws["spec"]["leaderWorkerTemplate"]
    assert group["size"] == 2 and group["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader = group["leaderTemplate"]["spec"]["containers"][0]
    worker = group["workerTemplate"]["spec"]["containers"][0]
    assert leader["command"][1:3] == ["leader", "--ray_cluster_size=2"]
    assert "--model=llama-3.1-70b-instruct" in leader["command"]
    assert worker["command"][1:3] == ["worker", "--ray_address=$(LWS_LEADER_ADDRESS)"]
    assert leader["resources"]["limits"] == {"nvidia.com/gpu": 4}
    assert leader["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    volumes = {v["name"]: v for v in group["leaderTemplate"]["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert "persistentVolumeClaim" in volumes["model-cache"]
    assert volumes["api-key"]["secret"]["secretName"].endswith("-api-key")
    service = docs[-1]
    assert service["kind"] == "Service" and service["spec"]["selector"]["role"] == "leader"


@pytest.mark.parametrize(
    ("request_", "option", "port"),
    [
        ({}, "--preflight-port=29510", 29510),
        ({"preflight_port": 29999}, "--preflight-port=29999", 29999),
        ({"no_preflight": True}, "--no-preflight", None),
    ],
)
def test_the_plans_preflight_reaches_every_pod(
    make_plan: Callable[..., LaunchPlan], request_: dict[str, Any], option: str, port: int | None
) -> None:
    launch = make_plan(model="llama-3.1-70b-instruct", nodes=2, gpus_per_node=4, **request_)
    listed = [] if port is None else [port]
    lws = next(d for d in yaml.safe_load_all(render_k8s(launch)) if d["kind"] == "LeaderWorkerSet")
    group = lws["spec"]["leaderWorkerTemplate"]
    leader = group["leaderTemplate"]["spec"]["containers"][0]
    worker = group["workerTemplate"]["spec"]["containers"][0]
    assert option in leader["command"] and option in worker["command"]
    assert [p["containerPort"] for p in leader["ports"] if p["name"] == "preflight"] == listed
    headless, statefulset, _ = yaml.safe_load_all(render_k8s(launch, kind="statefulset"))
    assert [p["port"] for p in headless["spec"]["ports"] if p["name"] == "preflight"] == listed
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "VLLM_HPC_PREFLIGHT", "value": option} in container["env"]
    assert [p["containerPort"] for p in container["ports"] if p["name"] == "preflight"] == listed


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
@pytest.mark.parametrize("preflight", [None, "--no-preflight"])
def test_statefulset_script_passes_the_preflight_option_as_one_word(
    preflight: str | None, tmp_path: Path
) -> None:
    stub = tmp_path / "bin" / "multi-node-serving.sh"
    stub.parent.mkdir()
    stub.write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    script = STATEFULSET_SCRIPT.replace(IMAGE_WRAPPER, str(stub))
    env = {
        "PATH": "/usr/bin:/bin",
        "POD_NAME": "x-1",  # a worker
        "VLLM_HPC_RAY_PORT": "6379",
        "VLLM_HPC_GPUS": "4",
        "VLLM_HPC_NODES_TIMEOUT": "300",
        "VLLM_HPC_LEADER": "x-0",
    }
    if preflight:
        env["VLLM_HPC_PREFLIGHT"] = preflight
    done = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, check=True
    )
    words = done.stdout.splitlines()
    assert words[0] == "worker" and "" not in words
    assert (preflight in words) if preflight else not any("preflight" in w for w in words)


def test_no_secret_literals(make_plan: Callable[..., LaunchPlan]) -> None:
    text = render_k8s(_seventy(make_plan))
    for doc in yaml.safe_load_all(text):
        for template in _templates(doc):
            for container in template["spec"]["containers"]:
                names = {e["name"] for e in container.get("env", [])}
                assert not names & {"VLLM_API_KEY", "RAY_AUTH_TOKEN", "HF_TOKEN"}
                assert not any(
                    "api-key" in arg or "api_key=" in arg for arg in container["command"]
                )


def _templates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] == "LeaderWorkerSet":
        group = doc["spec"]["leaderWorkerTemplate"]
        return [group["leaderTemplate"], group["workerTemplate"]]
    if doc["kind"] == "StatefulSet":
        return [doc["spec"]["template"]]
    return []


def test_validation_catches_mistakes(make_plan: Callable[..., LaunchPlan]) -> None:
    docs = list(yaml.safe_load_all(render_k8s(_seventy(make_plan), kind="statefulset")))
    docs[1]["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(yaml.safe_dump_all(docs))
    lws = list(yaml.safe_load_all(render_k8s(_seventy(make_plan))))
    lws[1]["spec"]["leaderWorkerTemplate"]["restartPolicy"] = "RecreateGroupOnRestart"
    with pytest.raises(jsonschema.ValidationError):
        validate_k8s(yaml.safe_dump_all(lws))
    lws[1]["spec"]["leaderWorkerTemplate"]["restartPolicy"] = "None"
    lws[1]["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containerz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(yaml.safe_dump_all(lws))


def test_native_runtime_is_refused(make_plan: Callable[..., LaunchPlan]) -> None:
    launch = make_plan(model="llama-3.1-70b-instruct", runtime="native")
    with pytest.raises(InputError, match="native runtime"):
        render_k8s(launch)


def test_names() -> None:
    assert k8s_name("vllm-llama-3.1-70b-instruct") == "vllm-llama-3-1-70b-instruct"
    assert k8s_name("7B_Model") == "vllm-7b-model"
    assert len(k8s_name("x" * 100)) == 40


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_statefulset_script_passes_shellcheck() -> None:
    done = subprocess.run(
        ["shellcheck", "-s", "bash", "-"],
        input="#!/bin/bash\n" + STATEFULSET_SCRIPT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout
