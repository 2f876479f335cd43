"""Which endpoint ``status``, ``metrics`` and ``bench`` may send a job's API key to.

Only the job's own recorded endpoint: ``endpoint.json`` of a job directory that belongs
to this user and that nobody else can write (another user who can write it could name
their own server as the job's URL and collect the key). An untrusted directory is
refused in one line (exit 2); the key is read only from a private file of ours.
"""

from __future__ import annotations

import os

from launchers.errors import InputError
from launchers.jobdir import jobfiles
from launchers.jobdir.paths import JobDir
from launchers.jobdir.safe import check_private, read_private_text


def trusted_endpoint(job_dir: str) -> jobfiles.Endpoint | None:
    """The job's ``endpoint.json`` (None before the leader wrote one), read only from a
    job directory and a file of ours that no other user can write; its URL must be the
    one the leader records (``http://LEADER_IP:PORT/v1``)."""
    check_private(job_dir, "job directory")
    path = JobDir(job_dir).endpoint
    name = os.path.basename(path)
    try:
        check_private(path, name)
    except FileNotFoundError:
        return None
    info = jobfiles.read(path, jobfiles.Endpoint)
    if info is not None and info.url:
        recorded = f"http://{info.leader_ip}:{info.port}/v1"
        if info.url != recorded:
            raise InputError(
                f"{name}: {path} names {info.url}, not the leader's {recorded}",
                fix="the job directory was changed: do not trust it (resubmit the job)",
            )
    return info


def key_for(info: jobfiles.Endpoint | None) -> str | None:
    """The API key of a trusted endpoint (None: the job has none, or its key file is
    gone); a key file that is a symlink, another user's or readable by others is refused."""
    path = info.api_key_file if info is not None else None
    if not path:
        return None
    try:
        return read_private_text(path, "API key").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def job_api_key(job_dir: str) -> str | None:
    """The API key for the job's own recorded endpoint, the job directory checked first."""
    return key_for(trusted_endpoint(job_dir))
