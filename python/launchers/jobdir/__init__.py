"""The job directory on shared storage: what each node writes and everyone else reads.

``leader.json`` (rendezvous), ``endpoint.json`` (state and URL), ``nodes/<rank>.json``
(who each node is), logs: their names are ``jobdir.paths``'s. Files are written
atomically (temp file + rename), the directory is 0700 and files 0600, so a half-written
file is never read and nothing is readable by other users. A directory a file is
written into is checked first (ours, not writable by others: ``jobdir.safe``); reads
and writes never follow a symlink.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def ensure_dir(path: str | Path) -> Path:
    """``mkdir -p``, each directory made 0700 (an output directory: not checked)."""
    from launchers.jobdir.safe import make_dirs

    return make_dirs(path)


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Atomically: a temp file (``O_EXCL``) renamed over ``path`` (a symlink there is
    replaced, never followed), in a directory of ours that only we can write."""
    from launchers.jobdir.safe import private_dir

    target = Path(path)
    private_dir(target.parent, "job directory")
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
    from launchers.jobdir.safe import open_nofollow

    try:
        with os.fdopen(open_nofollow(path), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def ensure_secret(path: str, what: str = "secret") -> bool:
    """Create ``path`` (0600, ``O_EXCL|O_NOFOLLOW``) with a new random secret unless it
    exists; True if created. An existing file is kept only when it passes
    ``read_private_text``'s checks (a requeued job keeps its key; a symlink, a file of
    another user or one others can read is refused) and is not empty."""
    import secrets

    from launchers.jobdir.safe import (
        UnsafePathError,
        create_private_file,
        private_dir,
        read_private_text,
    )

    private_dir(Path(path).parent, "job directory")
    if create_private_file(path, secrets.token_urlsafe(32) + "\n"):
        return True
    try:
        kept = read_private_text(path, what)
    except OSError as exc:  # ELOOP: a symlink planted at the name
        raise UnsafePathError(
            f"{what}: cannot use {path}: {exc.strerror or exc}",
            fix=f"remove {path}; a new one is made at the next start",
        ) from None
    if not kept.strip():
        raise UnsafePathError(
            f"{what}: {path} is empty", fix=f"remove {path}; a new one is made at the next start"
        )
    return False


def remove_stale(job_dir: str) -> None:
    """A rerun (requeue) must not read the previous attempt's rendezvous."""
    from launchers.jobdir.paths import JobDir

    Path(JobDir(job_dir).leader).unlink(missing_ok=True)
    for path in Path(job_dir).glob(JobDir.FAILURES):
        path.unlink(missing_ok=True)


def now() -> float:
    return time.time()
