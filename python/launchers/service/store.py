"""Reading and writing a service directory's files (atomic writes; the directory
checked private, ours and no symlink, whenever it is opened)."""

from __future__ import annotations

import os
from pathlib import Path

from launchers.errors import InputError
from launchers.jobdir import jobfiles
from launchers.jobdir.safe import check_private, private_dir
from launchers.service.definition import (
    FRONT_FILE,
    KEY_FILE,
    SPEC_FILE,
    STATE_FILE,
    Front,
    ServiceSpec,
    ServiceState,
    services_root,
)


def open_dir(service_dir: str) -> str:
    """An existing service directory, checked; a missing one is bad input."""
    if not Path(service_dir, SPEC_FILE).is_file():
        name = os.path.basename(service_dir)
        raise InputError(
            f"NAME: no service {name!r} ({service_dir} has no {SPEC_FILE})",
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
    return f"{service_dir}/{KEY_FILE}"


def read_spec(service_dir: str) -> ServiceSpec:
    spec = jobfiles.read(f"{service_dir}/{SPEC_FILE}", ServiceSpec)
    if spec is None:
        raise InputError(
            f"{service_dir}/{SPEC_FILE}: not a service definition of this vllm-hpc",
            fix="remove the directory, or use the vllm-hpc that made it",
        )
    return spec


def write_spec(service_dir: str, spec: ServiceSpec) -> None:
    jobfiles.write(f"{service_dir}/{SPEC_FILE}", spec)


def read_state(service_dir: str) -> ServiceState | None:
    return jobfiles.read(f"{service_dir}/{STATE_FILE}", ServiceState)


def write_state(service_dir: str, state: ServiceState) -> None:
    jobfiles.write(f"{service_dir}/{STATE_FILE}", state)


def read_front(service_dir: str) -> Front | None:
    return jobfiles.read(f"{service_dir}/{FRONT_FILE}", Front)


def write_front(service_dir: str, front: Front) -> None:
    jobfiles.write(f"{service_dir}/{FRONT_FILE}", front)


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
        Path(service_dir, FRONT_FILE).unlink(missing_ok=True)
