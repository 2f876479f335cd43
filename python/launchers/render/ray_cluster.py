"""A Ray cluster launcher file (``ray up``) from a ``LaunchPlan``: the head and
``nodes - 1`` workers on a local (on-premise, over SSH), AWS or GCP provider.

Every node runs the plan's image under ``docker:`` with the GPUs, ``/dev/shm``, the
environment and the binds the compose render gives its containers; ``setup_commands``
install the pinned vllm-hpc (a no-op in the vllm-hpc image). Ray is started by the node
runtime, as on every other door: ``head_start_ray_commands`` start the image's
``multi-node-serving.sh leader`` (its ``ray start --head`` built from the plan's typed
Ray role, with Ray's autoscaler config added so that ``ray up`` can bring up the
workers; then the plan's ``vllm serve``, once the workers have joined), and
``worker_start_ray_commands`` start ``multi-node-serving.sh worker`` joining
``$RAY_HEAD_IP``. Both run detached, since ``ray up`` returns when its commands do.

No secret value is in the file: the Ray token (Ray runs with ``RAY_AUTH_MODE=token``)
is the local 0600 file ``ray_token`` that ``file_mounts`` copies to every node, and that
a setup command installs 0600 for the container's user; the API key is written by the
leader at its start (0600, in its job directory on the head). The plan's secret
variables (``HF_TOKEN``...) come from ``secret.env`` (``NAME='VALUE'`` lines, 0600),
copied the same way and read by the start commands' shell.

Ray runs every command through a shell (``bash -c``), and joins ``docker.run_options``
into the ``docker run`` command line: each word the render writes is quoted
(``shlex.quote``) so that the shell reads back exactly the plan's text.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from launchers import __version__
from launchers.defaults import (
    RAY_CLUSTER_DISK_GB,
    RAY_CLUSTER_GCP_IMAGE,
    RAY_CLUSTER_GCP_ZONE,
    RAY_CLUSTER_INSTANCE_TYPES,
    RAY_CLUSTER_REGIONS,
    RAY_CLUSTER_SSH_USER,
    RENDER_HF_CACHE_DIR,
    RENDER_JOB_ROOT,
    RENDER_SHM_SIZE,
)
from launchers.errors import InputError
from launchers.plan.launch import LaunchPlan
from launchers.render import checks
from launchers.render.containers import (
    IMAGE_HF_HOME,
    IMAGE_RAY_TOKEN,
    build_leader_wrapper_argv,
    build_worker_wrapper_argv,
    check_host_render,
    image_env,
    image_ray_auth_env,
    wrapper_ray_port,
)
from launchers.render.k8s import DEFAULT_IMAGE, dump_all, k8s_name

Provider = Literal["local", "aws", "gcp"]
PROVIDERS = ("local", "aws", "gcp")
CLUSTER_FILE = "cluster.yaml"
# The image's wrapper, on PATH in the vllm-hpc image and wherever pip installed vllm-hpc.
WRAPPER = "multi-node-serving.sh"
# Where the job root is inside the containers (bound from RENDER_JOB_ROOT on the host).
IMAGE_JOB_ROOT = "/var/lib/vllm-hpc/jobs"
# Where file_mounts put the local files on every node (owned by the SSH user there).
MOUNT_DIR = "/run/vllm-hpc-files"
RAY_TOKEN_FILE = "ray_token"  # noqa: S105 - a file name, not a secret
SECRET_ENV_FILE = "secret.env"  # noqa: S105 - a file name, not a secret
# Ray's autoscaler on the head brings up the workers from this file (ray up copies it).
AUTOSCALING_CONFIG = "--autoscaling-config=~/ray_bootstrap_config.yaml"
LOG_DIR = "/tmp"  # the wrappers' own output (their logs are in the job directories)
HEAD_TYPE, WORKER_TYPE = "head", "worker"
HEAD_IP = "@RAY_HEAD_IP@"  # in an argv: the head's address, from Ray's $RAY_HEAD_IP
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")
_INSTANCE = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
_SSH_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class RayClusterOptions:
    """What ``render ray-cluster`` takes besides the plan (checked by ``render``)."""

    provider: Provider = "local"
    head_ip: str | None = None
    worker_ips: tuple[str, ...] = ()
    ssh_user: str = RAY_CLUSTER_SSH_USER
    ssh_private_key: str | None = None
    region: str | None = None
    zone: str | None = None
    project_id: str | None = None
    instance_type: str | None = None
    image: str = DEFAULT_IMAGE
    shm_size: str = RENDER_SHM_SIZE
    rdma: bool = True
    hf_cache_dir: str = RENDER_HF_CACHE_DIR
    job_root: str = RENDER_JOB_ROOT


def _bad(message: str, fix: str) -> InputError:
    return InputError(message, fix=fix)


def _host(flag: str, value: str) -> str:
    checks.check_text(flag, value)
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOST.fullmatch(value):
        raise _bad(
            f"{flag}: {checks.show(value)} is not an IP address or host name",
            fix="write e.g. 10.0.0.1 or node1.example.org",
        )
    return value


def _pattern(flag: str, value: str, pattern: re.Pattern[str], example: str) -> str:
    checks.check_text(flag, value)
    if not pattern.fullmatch(value):
        raise _bad(f"{flag}: {checks.show(value)} is not valid", fix=f"write e.g. {example}")
    return value


def _host_path(flag: str, value: str) -> str:
    """An absolute host path for ``docker run -v SRC:DST`` (no ':' or ',' in it)."""
    checks.check_text(flag, value)
    if not value.startswith("/") or ":" in value or "," in value:
        raise _bad(
            f"{flag}: {checks.show(value)} is not an absolute path docker can bind (no ':' or ',')",
            fix="use an absolute path such as /var/cache/huggingface",
        )
    return value


def _instance_type(opts: RayClusterOptions, gpus: int) -> str:
    if opts.instance_type is not None:
        return _pattern("--instance-type", opts.instance_type, _INSTANCE, "g5.12xlarge")
    table = RAY_CLUSTER_INSTANCE_TYPES[opts.provider]
    if gpus not in table:
        known = ", ".join(f"{n} ({name})" for n, name in sorted(table.items()))
        raise _bad(
            f"--instance-type: no default {opts.provider} instance type with {gpus} GPUs "
            f"(defaults for {known})",
            fix=f"pass --instance-type with {gpus} GPUs, or choose --gpus-per-node from those",
        )
    return table[gpus]


def _checked(plan: LaunchPlan, opts: RayClusterOptions) -> RayClusterOptions:
    """``opts`` with every value checked against the provider and the plan's layout
    (``--image`` and ``--shm-size``: ``check_host_render``)."""
    _host_path("--hf-cache-dir", opts.hf_cache_dir)
    _host_path("--job-root-dir", opts.job_root)
    _pattern("--ssh-user", opts.ssh_user, _SSH_USER, "ubuntu")
    if opts.ssh_private_key is not None:
        checks.check_text("--ssh-private-key", opts.ssh_private_key)
    if opts.provider == "local":
        return _checked_local(opts, plan.layout.nodes - 1)
    return _checked_cloud(opts, plan.layout.gpus_per_node)


def _checked_local(opts: RayClusterOptions, workers: int) -> RayClusterOptions:
    """The hosts of ``--provider local``: one per node, each once; no cloud options."""
    for flag, value in (
        ("--region", opts.region),
        ("--zone", opts.zone),
        ("--project-id", opts.project_id),
        ("--instance-type", opts.instance_type),
    ):
        if value is not None:
            raise _bad(
                f"{flag}: is for a cloud provider, not --provider local",
                fix=f"drop {flag}, or choose --provider aws or gcp",
            )
    if opts.head_ip is None:
        raise _bad(
            "--head-ip: --provider local needs the head node's address",
            fix="pass --head-ip ADDRESS (and --worker-ips A,B,... for the workers)",
        )
    head = _host("--head-ip", opts.head_ip)
    hosts = tuple(_host("--worker-ips", ip) for ip in opts.worker_ips)
    if len(hosts) != workers:
        raise _bad(
            f"--worker-ips: the plan has {workers} worker node(s), {len(hosts)} address(es) given",
            fix=f"give {workers} comma-separated address(es) (one per worker node)",
        )
    if len({head, *hosts}) != len(hosts) + 1:
        raise _bad(
            "--worker-ips: an address is given twice (or is the head's)",
            fix="give each node once: the head in --head-ip, the others in --worker-ips",
        )
    return RayClusterOptions(**{**opts.__dict__, "head_ip": head, "worker_ips": hosts})


def _checked_cloud(opts: RayClusterOptions, gpus: int) -> RayClusterOptions:
    """A cloud's region, zone, project and instance type (defaults filled in)."""
    for flag, value in (("--head-ip", opts.head_ip), ("--worker-ips", opts.worker_ips or None)):
        if value is not None:
            raise _bad(
                f"{flag}: is for --provider local (the cloud provider makes the nodes)",
                fix=f"drop {flag}",
            )
    region = _pattern("--region", opts.region or RAY_CLUSTER_REGIONS[opts.provider], _REGION, "")
    zone = opts.zone
    if opts.provider == "gcp":
        zone = _pattern("--zone", zone or RAY_CLUSTER_GCP_ZONE, _REGION, "us-central1-a")
        if opts.project_id is None:
            raise _bad(
                "--project-id: --provider gcp needs the GCP project",
                fix="pass --project-id PROJECT (gcloud config get-value project)",
            )
        _pattern("--project-id", opts.project_id, _PROJECT, "my-project-123")
    else:
        for flag, value in (("--zone", zone), ("--project-id", opts.project_id)):
            if value is not None:
                raise _bad(f"{flag}: is for --provider gcp", fix=f"drop {flag}")
    instance = _instance_type(opts, gpus)
    return RayClusterOptions(
        **{**opts.__dict__, "region": region, "zone": zone, "instance_type": instance}
    )


def cluster_name_for(plan: LaunchPlan, name: str | None) -> str:
    """The Ray cluster's name: ``--name``, else made from the job name (a DNS label)."""
    if name is None:
        return k8s_name(plan.job_name)
    return checks.k8s_object_name("--name", name, 40)


def _run_options(plan: LaunchPlan, opts: RayClusterOptions) -> list[str]:
    """``docker run``'s options, each one shell word (Ray joins them with spaces)."""
    plain, _ = image_env(plan)
    env = {
        **plain,
        "HF_HOME": IMAGE_HF_HOME,
        "VLLM_HPC_JOB_ROOT": IMAGE_JOB_ROOT,
        **image_ray_auth_env(),
    }
    words = [
        # Ray runs `bash` in the container: the image's entrypoint (the wrapper) is reset.
        "--entrypoint=",
        f"--gpus={plan.layout.gpus_per_node}",
        f"--shm-size={opts.shm_size}",
        "--ulimit=memlock=-1:-1",
        f"--volume={opts.hf_cache_dir}:{IMAGE_HF_HOME}",
        f"--volume={opts.job_root}:{IMAGE_JOB_ROOT}",
    ]
    if plan.model.startswith("/"):
        words.append(f"--volume={_host_path('model path', plan.model)}:{plan.model}:ro")
    if opts.rdma:
        words += ["--device=/dev/infiniband", "--cap-add=IPC_LOCK"]
    words += [f"--env={key}={value}" for key, value in env.items()]
    return [shlex.quote(word) for word in words]


def _word(text: str) -> str:
    """``text`` as one shell word; ``HEAD_IP`` in it becomes ``"$RAY_HEAD_IP"`` (Ray sets
    it for the worker commands), the rest quoted."""
    return '"$RAY_HEAD_IP"'.join(shlex.quote(part) if part else "" for part in text.split(HEAD_IP))


def _detached(argv: Sequence[str], log: str, *, secret_env: bool, head_ip: bool = False) -> str:
    """``argv`` started in the background (``ray up`` waits for its commands), its output
    in ``log``; with ``secret_env`` after reading ``secret.env``'s variables; with
    ``head_ip`` (a worker's argv, no user text) ``HEAD_IP`` is the head's address."""
    words = [_word(word) if head_ip else shlex.quote(word) for word in argv]
    line = f"nohup {' '.join(words)} > {shlex.quote(log)} 2>&1 < /dev/null &"
    if secret_env:
        line = f"set -a && . {shlex.quote(f'{MOUNT_DIR}/{SECRET_ENV_FILE}')} && set +a && {line}"
    return line


def _commands(plan: LaunchPlan, secret_env: bool) -> dict[str, list[str]]:
    token = f"{MOUNT_DIR}/{RAY_TOKEN_FILE}"
    install = ["python3", "-m", "pip", "install", "--no-cache-dir", f"vllm-hpc=={__version__}"]
    # The mounted token belongs to the SSH user: the container's user gets its own 0600 copy.
    own_token = ["install", "-D", "-m", "0600", token, IMAGE_RAY_TOKEN]
    leader = build_leader_wrapper_argv(
        plan, wrapper=WRAPPER, job_dir=None, ray_args=(AUTOSCALING_CONFIG,)
    )
    address = f"{HEAD_IP}:{wrapper_ray_port(plan)}"
    worker = build_worker_wrapper_argv(plan, ray_address=address, wrapper=WRAPPER, job_dir=None)
    return {
        "setup_commands": [shlex.join(install), shlex.join(own_token)],
        "head_start_ray_commands": [
            shlex.join(["ray", "stop"]),
            _detached(
                leader, f"{LOG_DIR}/vllm-hpc-leader.log", secret_env=secret_env, head_ip=True
            ),
        ],
        "worker_start_ray_commands": [
            shlex.join(["ray", "stop"]),
            _detached(
                worker, f"{LOG_DIR}/vllm-hpc-worker.log", secret_env=secret_env, head_ip=True
            ),
        ],
    }


def _node_types(opts: RayClusterOptions, workers: int) -> dict[str, Any]:
    instance = str(opts.instance_type)
    if opts.provider == "aws":
        node_config: dict[str, Any] = {
            "InstanceType": instance,
            "BlockDeviceMappings": [
                {
                    "DeviceName": "/dev/sda1",
                    "Ebs": {"VolumeSize": RAY_CLUSTER_DISK_GB, "VolumeType": "gp3"},
                }
            ],
        }
    else:
        node_config = {
            "machineType": instance,
            "disks": [
                {
                    "boot": True,
                    "autoDelete": True,
                    "type": "PERSISTENT",
                    "initializeParams": {
                        "diskSizeGb": RAY_CLUSTER_DISK_GB,
                        "sourceImage": RAY_CLUSTER_GCP_IMAGE,
                    },
                }
            ],
            "metadata": {"items": [{"key": "install-nvidia-driver", "value": "True"}]},
            # GPU machines cannot live-migrate.
            "scheduling": [{"onHostMaintenance": "TERMINATE"}],
        }
    return {
        HEAD_TYPE: {"resources": {}, "node_config": node_config},
        WORKER_TYPE: {
            "min_workers": workers,
            "max_workers": workers,
            "resources": {},
            "node_config": node_config,
        },
    }


def _provider(opts: RayClusterOptions) -> dict[str, Any]:
    if opts.provider == "local":
        return {"type": "local", "head_ip": opts.head_ip, "worker_ips": list(opts.worker_ips)}
    if opts.provider == "aws":
        # Stopped nodes would keep their disks (and bills): ray down terminates them.
        return {"type": "aws", "region": opts.region, "cache_stopped_nodes": False}
    return {
        "type": "gcp",
        "region": opts.region,
        "availability_zone": opts.zone,
        "project_id": opts.project_id,
        "cache_stopped_nodes": False,
    }


def use_lines(plan: LaunchPlan, name: str, secret_names: Sequence[str]) -> list[str]:
    """How to make the local files the cluster file reads, and the commands to use it."""
    lines = [
        f"Ray token (every node starts Ray with RAY_AUTH_MODE=token), beside {CLUSTER_FILE}:",
        f"  (umask 077 && openssl rand -hex 32 > {RAY_TOKEN_FILE})",
    ]
    if secret_names:
        lines += [
            f"Secret environment ({', '.join(secret_names)}; the values are not here):",
            f"  NAME='VALUE' lines in {SECRET_ENV_FILE} beside {CLUSTER_FILE} "
            f"(chmod 600 {SECRET_ENV_FILE})",
        ]
    lines += [
        "Then:",
        f"  ray up {CLUSTER_FILE} -y",
        f"  ray exec {CLUSTER_FILE} 'vllm-hpc jobs'            # the job's id and state",
        f"  ray exec {CLUSTER_FILE} 'vllm-hpc status JOB'      # READY: exit 0",
        f"  ray exec {CLUSTER_FILE} 'cat {IMAGE_JOB_ROOT}/JOB/api_key'   # the API key",
        f"  ray down {CLUSTER_FILE} -y",
        f"The API: http://HEAD:{plan.api_port}/v1 (Authorization: Bearer KEY); cluster {name}.",
    ]
    return lines


def render_ray_cluster(
    plan: LaunchPlan, options: RayClusterOptions | None = None, *, name: str | None = None
) -> str:
    """The ``ray up`` file for ``plan``, its use in the header. Bad input: ``InputError``."""
    given = options or RayClusterOptions()
    check_host_render(plan, "render ray-cluster", image=given.image, shm_size=given.shm_size)
    opts = _checked(plan, given)
    cluster = cluster_name_for(plan, name)
    secret_names = image_env(plan)[1]
    workers = plan.layout.nodes - 1
    file_mounts = {f"{MOUNT_DIR}/{RAY_TOKEN_FILE}": f"./{RAY_TOKEN_FILE}"}
    if secret_names:
        file_mounts[f"{MOUNT_DIR}/{SECRET_ENV_FILE}"] = f"./{SECRET_ENV_FILE}"
    doc: dict[str, Any] = {
        "cluster_name": cluster,
        # A fixed layout: the workers stay up while the cluster does.
        "max_workers": workers,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "docker": {
            "image": opts.image,
            "container_name": "vllm-hpc",
            "pull_before_run": True,
            "run_options": _run_options(plan, opts),
        },
        "provider": _provider(opts),
        "auth": {"ssh_user": opts.ssh_user},
    }
    if opts.ssh_private_key is not None:
        doc["auth"]["ssh_private_key"] = opts.ssh_private_key
    if opts.provider != "local":
        doc["available_node_types"] = _node_types(opts, workers)
        doc["head_node_type"] = HEAD_TYPE
    doc["file_mounts"] = file_mounts
    doc.update(_commands(plan, bool(secret_names)))
    header = [
        f"vllm-hpc {__version__}: Ray cluster ({opts.provider}) for {plan.name} "
        f"({plan.layout.describe()})",
        f"image: {opts.image} (containers/docker/Dockerfile, or any image with Python;",
        "  the setup commands install vllm-hpc)",
        *use_lines(plan, cluster, secret_names),
    ]
    return dump_all([doc], "\n".join(header) + "\n")


__all__ = [
    "CLUSTER_FILE",
    "PROVIDERS",
    "RayClusterOptions",
    "render_ray_cluster",
    "use_lines",
]
