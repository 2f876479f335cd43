"""Reading and writing a service directory's files (atomic writes; the directory
checked private, ours and no symlink, whenever it is opened)."""

from __future__ import annotations

import os
from pathlib import Path

from launchers.errors import InputError
from launchers.jobdir import jobfiles
from launchers.jobdir.paths import ServiceDir
from launchers.jobdir.safe import check_private, private_dir
from launchers.service.definition import (
    Front,
    ServiceSpec,
    ServiceState,
    services_root,
)


def open_dir(service_dir: str) -> str:
    """An existing service directory, checked; a missing one is bad input."""
    spec = ServiceDir(service_dir).spec
    if not Path(spec).is_file():
        name = os.path.basename(service_dir)
        raise InputError(
            f"NAME: no service {name!r} ({service_dir} has no {os.path.basename(spec)})",
            fix="see `vllm-hpc service list`, or start it with `vllm-hpc service up`",
        )
    check_private(service_dir, "service directory")
    return service_dir


def make_dir(job_root: str, service_dir: str) -> str:
    private_dir(job_root, "job root")
    private_dir(services_root(job_root), "services directory")
    private_dir(service_dir, "service directory")
    return service_dir


def key_file(service_dir: str) -> str:
    return ServiceDir(service_dir).key


def read_spec(service_dir: str) -> ServiceSpec:
    path = ServiceDir(service_dir).spec
    spec = jobfiles.read(path, ServiceSpec)
    if spec is None:
        raise InputError(
            f"{path}: not a service definition of this vllm-hpc",
            fix="remove the directory, or use the vllm-hpc that made it",
        )
    return spec


def write_spec(service_dir: str, spec: ServiceSpec) -> None:
    jobfiles.write(ServiceDir(service_dir).spec, spec)


def read_state(service_dir: str) -> ServiceState | None:
    return jobfiles.read(ServiceDir(service_dir).state, ServiceState)


def write_state(service_dir: str, state: ServiceState) -> None:
    jobfiles.write(ServiceDir(service_dir).state, state)


def read_front(service_dir: str) -> Front | None:
    return jobfiles.read(ServiceDir(service_dir).front, Front)


def write_front(service_dir: str, front: Front) -> None:
    jobfiles.write(ServiceDir(service_dir).front, front)


def note_front_beat(service_dir: str, job_id: str | None) -> None:
    """The front job ``job_id`` has written its first heartbeat: say so in state.json
    (the front does, before its controller's first tick; once per job)."""
    state = read_state(service_dir)
    if job_id and state is not None and state.front_job == job_id and not state.front_job_beat:
        write_state(service_dir, state.model_copy(update={"front_job_beat": True}))


def remove_front(service_dir: str, pid: int) -> None:
    """Remove front.json if it is still this front's (a newer front keeps its own)."""
    front = read_front(service_dir)
    if front is not None and front.pid == pid:
        Path(ServiceDir(service_dir).front).unlink(missing_ok=True)
