"""The job directory on shared storage: what each node writes and everyone else reads.

``leader.json`` (rendezvous), ``endpoint.json`` (state and URL), ``nodes/<rank>.json``
(who each node is), logs. Files are written atomically (temp file + rename), the
directory is 0700 and files 0600, so a half-written file is never read and nothing is
readable by other users.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def ensure_dir(path: str | Path) -> Path:
    p = Path(path)
    p.mkdir(mode=0o700, parents=True, exist_ok=True)
    return p


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    target = Path(path)
    ensure_dir(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def node_file(job_dir: str, rank: int) -> str:
    return f"{job_dir}/nodes/{rank}.json"


def ensure_secret(path: str) -> bool:
    """Create ``path`` (0600) with a new random secret unless it exists; True if created.
    An existing file is kept, so a requeued job keeps its key."""
    import secrets

    ensure_dir(Path(path).parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secrets.token_urlsafe(32) + "\n")
    return True


def failure_file(job_dir: str, rank: int) -> str:
    """Where a rank > 0 records why it failed, for the leader to report."""
    return f"{job_dir}/failed/{rank}.json"


def remove_stale(job_dir: str) -> None:
    """A rerun (requeue) must not read the previous attempt's rendezvous."""
    from launchers.jobdir.jobroot import LEADER_FILE

    Path(job_dir, LEADER_FILE).unlink(missing_ok=True)
    for path in Path(job_dir, "failed").glob("*.json"):
        path.unlink(missing_ok=True)


def now() -> float:
    return time.time()
