"""Kubernetes manifests from a ``LaunchPlan``: a LeaderWorkerSet, or a StatefulSet with a
headless Service (the seed plan's shape). Python dicts dumped with PyYAML, no templates.

Every pod runs the image's ``bin/multi-node-serving.sh`` (the same runtime as on SLURM):
the leader starts the Ray head, waits for the group and serves the API; workers join.
No secret is a literal in the manifest; the header says how to create each Secret:

- the API key: a Secret mounted (0400) as the job directory's ``api_key`` file, which
  the leader reads;
- the Ray token: every pod starts Ray with ``RAY_AUTH_MODE=token`` and
  ``RAY_AUTH_TOKEN_PATH`` naming a Secret's ``ray_token`` mounted 0400;
- secret-looking variables of the plan's env (``secretenv.is_secret``: ``HF_TOKEN``...):
  ``secretKeyRef`` into one Secret made with ``--from-env-file``.

Names (namespace, objects, Secrets, claims) are checked against what the API server
accepts; user text in ``env`` values and ``command`` has its ``$`` doubled, since
Kubernetes expands ``$(VAR)`` there (see ``render.checks``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from launchers import __version__
from launchers.plan.launch import LaunchPlan
from launchers.render import checks
from launchers.render.containers import (
    IMAGE_HF_HOME,
    IMAGE_JOB_DIR,
    IMAGE_RAY_TOKEN,
    IMAGE_ROOT,
    IMAGE_WRAPPER,
    build_leader_wrapper_argv,
    build_worker_wrapper_argv,
    check_wrapper_plan,
    image_env,
    image_ray_auth_env,
    wrapper_preflight_args,
    wrapper_preflight_port,
    wrapper_ray_port,
)

Kind = Literal["lws", "statefulset"]
DEFAULT_IMAGE = f"vllm-hpc:{__version__}"
LWS_API = "leaderworkerset.x-k8s.io/v1"
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
GPU_RESOURCE = "nvidia.com/gpu"
_NAME_MAX = 40  # pod names add "-<group>-<index>" and a revision hash to this

# StatefulSet pods share one template: the ordinal in the pod name picks the role.
# Constant text (values come from the pod's environment), checked by shellcheck in tests.
# VLLM_HPC_PREFLIGHT: the wrapper's pre-flight option (wrapper_preflight_args), if any.
STATEFULSET_SCRIPT = f"""\
set -euo pipefail
common=(--ray_port="$VLLM_HPC_RAY_PORT" --num-gpus="$VLLM_HPC_GPUS" --temp-dir=/tmp/ray
  --job-dir={IMAGE_JOB_DIR} --nodes-timeout="$VLLM_HPC_NODES_TIMEOUT"
  ${{VLLM_HPC_PREFLIGHT:+"$VLLM_HPC_PREFLIGHT"}})
if [[ "${{POD_NAME##*-}}" == 0 ]]; then
  exec {IMAGE_WRAPPER} leader "${{common[@]}}" --ray_cluster_size="$VLLM_HPC_NODES" \\
    --model="$VLLM_HPC_MODEL" --port="$VLLM_HPC_PORT"
fi
exec {IMAGE_WRAPPER} worker "${{common[@]}}" --ray_address="$VLLM_HPC_LEADER"
"""
# Workers serve no API: ready while running. The leader: when /health answers.
STATEFULSET_PROBE = """\
import os, sys, urllib.request
if os.environ["POD_NAME"].rsplit("-", 1)[-1] != "0":
    sys.exit(0)
urllib.request.urlopen(f"http://127.0.0.1:{os.environ['VLLM_HPC_PORT']}/health", timeout=5)
"""


def k8s_name(text: str) -> str:
    """A DNS-1035 label (Service names): lowercase letters, digits and '-'."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if not name or not name[0].isalpha():
        name = f"vllm-{name}"
    return name[:_NAME_MAX].rstrip("-")


class _Dumper(yaml.SafeDumper):
    """Safe dumping: multi-line strings as literal blocks, no anchors or aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_all(docs: list[dict[str, Any]], header: str) -> str:
    body = yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, width=100)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "vllm-hpc", "app.kubernetes.io/instance": name}


@dataclass(frozen=True)
class Names:
    """The names a render uses: objects' base and the Secrets it reads."""

    base: str
    namespace: str
    api_key_secret: str | None
    ray_token_secret: str
    env_secret: str | None
    env_secret_names: tuple[str, ...]


def names_for(
    plan: LaunchPlan,
    *,
    namespace: str = "default",
    name: str | None = None,
    api_key_secret: str | None = None,
    ray_token_secret: str | None = None,
    env_secret: str | None = None,
) -> Names:
    """Every name checked: ``--name`` must already be a valid base (the job name is
    made into one); Secrets default to ``BASE-api-key``, ``BASE-ray-token``, ``BASE-env``."""
    checks.k8s_namespace("--namespace", namespace)
    if name is None:
        base = k8s_name(plan.job_name)
    else:
        base = checks.k8s_object_name("--name", name, _NAME_MAX)
    _, secret_names = image_env(plan)
    out = Names(
        base=base,
        namespace=namespace,
        api_key_secret=(api_key_secret or f"{base}-api-key") if plan.api_key_file else None,
        ray_token_secret=ray_token_secret or f"{base}-ray-token",
        env_secret=(env_secret or f"{base}-env") if secret_names else None,
        env_secret_names=tuple(secret_names),
    )
    for flag, value in (
        ("--api-key-secret", out.api_key_secret),
        ("--ray-token-secret", out.ray_token_secret),
        ("--env-secret", out.env_secret),
    ):
        if value is not None:
            checks.k8s_resource_name(flag, value)
    return out


def _env(plan: LaunchPlan, names: Names, extra: dict[str, str]) -> list[dict[str, Any]]:
    plain, _ = image_env(plan)
    env = {**plain, "HF_HOME": IMAGE_HF_HOME, **extra, **image_ray_auth_env()}
    out: list[dict[str, Any]] = [
        {"name": key, "value": checks.k8s_escape(value)} for key, value in env.items()
    ]
    for key in names.env_secret_names:
        ref = {"name": names.env_secret, "key": key, "optional": False}
        out.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return out


def _mounts(api_key_secret: str | None) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "model-cache", "mountPath": IMAGE_HF_HOME},
        {"name": "job", "mountPath": IMAGE_JOB_DIR},
        # subPath: a plain file (a Secret volume's own entries are symlinks)
        {
            "name": "ray-token",
            "mountPath": IMAGE_RAY_TOKEN,
            "subPath": "ray_token",
            "readOnly": True,
        },
    ]
    if api_key_secret:
        mounts.append(
            {
                "name": "api-key",
                "mountPath": f"{IMAGE_JOB_DIR}/api_key",
                "subPath": "api_key",
                "readOnly": True,
            }
        )
    return mounts


def _secret_volume(name: str, secret: str) -> dict[str, Any]:
    return {
        "name": name,
        "secret": {"secretName": secret, "defaultMode": 0o400, "optional": False},
    }


def _volumes(
    shm_size: str, cache_claim: str | None, api_key_secret: str | None, ray_token_secret: str
) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}},
        {"name": "job", "emptyDir": {}},
    ]
    if cache_claim:
        volumes.append({"name": "model-cache", "persistentVolumeClaim": {"claimName": cache_claim}})
    volumes.append(_secret_volume("ray-token", ray_token_secret))
    if api_key_secret:
        volumes.append(_secret_volume("api-key", api_key_secret))
    return volumes


def _container(
    name: str,
    image: str,
    command: list[str],
    plan: LaunchPlan,
    *,
    env: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    serves: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": command,
        "workingDir": IMAGE_ROOT,
        "env": env,
    }
    if serves:
        out["ports"] = [
            {"name": "http", "containerPort": plan.api_port},
            {"name": "ray", "containerPort": wrapper_ray_port(plan)},
            *_preflight_ports(plan, "containerPort"),
        ]
    out["resources"] = {"limits": {GPU_RESOURCE: plan.layout.gpus_per_node}}
    out["volumeMounts"] = mounts
    return out


def _preflight_ports(plan: LaunchPlan, key: str) -> list[dict[str, Any]]:
    """The pre-flight's port where the leader's ports are listed (none without one)."""
    port = wrapper_preflight_port(plan)
    return [] if port is None else [{"name": "preflight", key: port}]


def _http_probe(plan: LaunchPlan) -> dict[str, Any]:
    return {
        "httpGet": {"path": plan.ready.health_path, "port": plan.api_port},
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }


def _api_service(
    name: str, namespace: str, plan: LaunchPlan, selector: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"{name}-api", "namespace": namespace, "labels": _labels(name)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": "http",
                    "port": plan.api_port,
                    "targetPort": plan.api_port,
                    "protocol": "TCP",
                }
            ],
        },
    }


def _cache_pvc(name: str, namespace: str, size: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": f"{name}-model-cache",
            "namespace": namespace,
            "labels": _labels(name),
        },
        "spec": {
            # Every node of the group reads the same weights.
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": size}},
        },
    }


@dataclass(frozen=True)
class _Build:
    """What both kinds need besides the plan (checked)."""

    names: Names
    image: str
    shm_size: str
    cache_pvc: str | None
    cache_size: str


def _lws_docs(plan: LaunchPlan, b: _Build) -> list[dict[str, Any]]:
    name, namespace = b.names.base, b.names.namespace
    docs: list[dict[str, Any]] = []
    claim = b.cache_pvc
    if claim is None:
        docs.append(_cache_pvc(name, namespace, b.cache_size))
        claim = f"{name}-model-cache"
    env = _env(plan, b.names, {})
    leader = _container(
        "vllm-leader",
        b.image,
        build_leader_wrapper_argv(plan, model=checks.k8s_escape(plan.name)),
        plan,
        env=env,
        mounts=_mounts(b.names.api_key_secret),
        serves=True,
    )
    leader["readinessProbe"] = _http_probe(plan)
    worker = _container(
        "vllm-worker",
        b.image,
        # LWS sets LWS_LEADER_ADDRESS in every pod; Kubernetes expands $(VAR) in command.
        build_worker_wrapper_argv(plan, ray_address="$(LWS_LEADER_ADDRESS)"),
        plan,
        env=env,
        mounts=_mounts(None),
        serves=False,
    )
    secrets = b.names.ray_token_secret
    docs.append(
        {
            "apiVersion": LWS_API,
            "kind": "LeaderWorkerSet",
            "metadata": {"name": name, "namespace": namespace, "labels": _labels(name)},
            "spec": {
                "replicas": 1,
                "startupPolicy": "LeaderCreated",
                "leaderWorkerTemplate": {
                    "size": plan.layout.nodes,
                    "restartPolicy": "RecreateGroupOnPodRestart",
                    "leaderTemplate": {
                        "metadata": {"labels": {**_labels(name), "role": "leader"}},
                        "spec": {
                            "containers": [leader],
                            "volumes": _volumes(b.shm_size, claim, b.names.api_key_secret, secrets),
                        },
                    },
                    "workerTemplate": {
                        "metadata": {"labels": {**_labels(name), "role": "worker"}},
                        "spec": {
                            "containers": [worker],
                            "volumes": _volumes(b.shm_size, claim, None, secrets),
                        },
                    },
                },
            },
        }
    )
    docs.append(_api_service(name, namespace, plan, {LWS_NAME_LABEL: name, "role": "leader"}))
    return docs


def _statefulset_docs(plan: LaunchPlan, b: _Build) -> list[dict[str, Any]]:
    name, namespace = b.names.base, b.names.namespace
    labels = _labels(name)
    settings = {
        "VLLM_HPC_MODEL": plan.name,
        "VLLM_HPC_NODES": str(plan.layout.nodes),
        "VLLM_HPC_GPUS": str(plan.layout.gpus_per_node),
        "VLLM_HPC_PORT": str(plan.api_port),
        "VLLM_HPC_RAY_PORT": str(wrapper_ray_port(plan)),
        "VLLM_HPC_NODES_TIMEOUT": f"{plan.ready.nodes_timeout:g}",
        "VLLM_HPC_LEADER": f"{name}-0.{name}.{namespace}.svc",
    }
    preflight = wrapper_preflight_args(plan)
    if preflight:  # one option, one word of the script's array
        (settings["VLLM_HPC_PREFLIGHT"],) = preflight
    env = _env(plan, b.names, settings)
    env.insert(0, {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    container = _container(
        "vllm",
        b.image,
        ["/bin/bash", "-c", STATEFULSET_SCRIPT],
        plan,
        env=env,
        mounts=_mounts(b.names.api_key_secret),
        serves=True,
    )
    container["readinessProbe"] = {
        "exec": {"command": ["python3", "-c", STATEFULSET_PROBE]},
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }
    volumes = _volumes(b.shm_size, b.cache_pvc, b.names.api_key_secret, b.names.ray_token_secret)
    spec: dict[str, Any] = {
        "serviceName": name,
        "replicas": plan.layout.nodes,
        # All pods at once: the leader is ready only when the workers have joined.
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [container], "volumes": volumes},
        },
    }
    if b.cache_pvc is None:
        spec["volumeClaimTemplates"] = [
            {
                "metadata": {"name": "model-cache"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": b.cache_size}},
                },
            }
        ]
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "clusterIP": "None",
            # Workers must resolve the leader before it is ready (it waits for them).
            "publishNotReadyAddresses": True,
            "selector": labels,
            "ports": [
                {"name": "ray", "port": wrapper_ray_port(plan)},
                *_preflight_ports(plan, "port"),
            ],
        },
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }
    leader_selector = {**labels, "statefulset.kubernetes.io/pod-name": f"{name}-0"}
    return [headless, statefulset, _api_service(name, namespace, plan, leader_selector)]


def _check_plan(plan: LaunchPlan) -> None:
    """The plan's text that reaches the manifest (the environment: ``image_env``)."""
    checks.check_model_text("model", plan.name)
    checks.url_path("health path", plan.ready.health_path)


def secret_commands(names: Names) -> list[str]:
    """How the user creates each Secret the manifest reads (fresh random values, files
    kept 0600; no value on a command line)."""
    ns = names.namespace
    lines = []
    if names.api_key_secret:
        lines += [
            "API key (a fresh random one; clients send it as Authorization: Bearer KEY):",
            "  (umask 077 && openssl rand -hex 32 > api_key) &&",
            f"  kubectl -n {ns} create secret generic {names.api_key_secret} "
            "--from-file=api_key=api_key",
        ]
    lines += [
        "Ray token (every pod starts Ray with RAY_AUTH_MODE=token and this token):",
        "  (umask 077 && openssl rand -hex 32 > ray_token) &&",
        f"  kubectl -n {ns} create secret generic {names.ray_token_secret} "
        "--from-file=ray_token=ray_token",
    ]
    if names.env_secret:
        listed = ", ".join(names.env_secret_names)
        lines += [
            f"Secret environment ({listed}; their values are not in this manifest):",
            "  NAME=VALUE lines in secret.env (chmod 600 secret.env), then",
            f"  kubectl -n {ns} create secret generic {names.env_secret} "
            "--from-env-file=secret.env",
        ]
    return lines


def render_k8s(
    plan: LaunchPlan,
    *,
    kind: Kind = "lws",
    image: str = DEFAULT_IMAGE,
    namespace: str = "default",
    name: str | None = None,
    shm_size: str = "16Gi",
    cache_pvc: str | None = None,
    cache_size: str = "200Gi",
    api_key_secret: str | None = None,
    ray_token_secret: str | None = None,
    env_secret: str | None = None,
) -> str:
    """Multi-document YAML for ``plan``. ``cache_pvc`` names an existing claim for the
    Hugging Face cache (otherwise one is part of the output); ``api_key_secret`` names
    the Secret holding ``api_key`` (default ``<name>-api-key``; none when the plan
    serves without a key), ``ray_token_secret`` the one holding ``ray_token`` (default
    ``<name>-ray-token``), ``env_secret`` the one with the plan's secret variables
    (default ``<name>-env``; none when there are none). Bad names: ``InputError``."""
    check_wrapper_plan(plan, "render k8s")
    _check_plan(plan)
    names = names_for(
        plan,
        namespace=namespace,
        name=name,
        api_key_secret=api_key_secret,
        ray_token_secret=ray_token_secret,
        env_secret=env_secret,
    )
    if cache_pvc is not None:
        checks.k8s_resource_name("--cache-pvc", cache_pvc)
    build = _Build(
        names=names,
        image=checks.image("--image", image),
        shm_size=checks.quantity("--shm-size", shm_size),
        cache_pvc=cache_pvc,
        cache_size=checks.quantity("--cache-size", cache_size),
    )
    docs = (_lws_docs if kind == "lws" else _statefulset_docs)(plan, build)
    what = "LeaderWorkerSet" if kind == "lws" else "StatefulSet + headless Service"
    header = (
        f"vllm-hpc {__version__}: {what} for {plan.name}\n"
        f"layout: {plan.layout.describe()}\n"
        f"image: build containers/docker/Dockerfile (or push it) as {image}\n"
    )
    header += "".join(f"{line}\n" for line in secret_commands(names))
    if kind == "lws":
        header += "needs the LeaderWorkerSet controller (leaderworkerset.x-k8s.io)\n"
    return dump_all(docs, header)
