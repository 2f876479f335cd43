"""Which job directories ``vllm-hpc clean`` may remove, and which secrets.

``decide`` is pure: it takes what was seen of each job (its state, whether it has ended,
how long ago its directory last changed, and why it is not ours to touch, if it is not)
and returns one decision per job. ``look`` reads a job root to make those sightings;
the removing itself is a write, so it is ``launchers.client.Client.clean``'s.

The rules, in order:
1. a directory that is not a private directory of this user (a symlink, another user's,
   or one others can write) is refused: never read further, never removed;
2. a job that has not ended (SLURM still holds it, or its processes still run) is kept;
3. with ``secrets_only``, every ended job loses its secrets (the API key, the Ray token,
   its sealed secret environment file) and keeps its directory;
4. an ended job whose directory changed less than ``older_than`` seconds ago is kept;
5. any other ended job's directory is removed (with its sealed secret file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from launchers.jobdir import jobroot
from launchers.jobdir.paths import JobDir, JobRoot
from launchers.jobdir.safe import UnsafePathError, check_private
from launchers.observe.job import Job

Action = Literal["remove", "secrets", "keep", "refuse"]


@dataclass(frozen=True)
class Seen:
    """One job directory as ``look`` found it."""

    job_id: str
    job_dir: str
    state: str = ""  # JobStatus.state ("" when refused: not read)
    ended: bool = False  # final, and SLURM no longer holds it
    age: float = 0.0  # seconds since the directory or its endpoint.json last changed
    refused: str = ""  # why the directory is not ours to touch ("" when it is)
    secret_env_file: str | None = None  # its sealed secret file in the root's secrets/


@dataclass(frozen=True)
class Decision:
    seen: Seen
    action: Action
    why: str
    files: tuple[str, ...] = ()  # the secret files it removes (or would), beside a directory


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def decide(seen: list[Seen], *, older_than: float, secrets_only: bool) -> list[Decision]:
    """One decision per job (the module's rules). Pure."""
    out = []
    for job in seen:
        if job.refused:
            out.append(Decision(job, "refuse", job.refused))
        elif not job.ended:
            out.append(Decision(job, "keep", f"{job.state or 'unknown'}: not ended"))
        elif secrets_only:
            out.append(Decision(job, "secrets", f"{job.state}, ended {_age(job.age)} ago"))
        elif job.age < older_than:
            out.append(
                Decision(job, "keep", f"{job.state}, ended {_age(job.age)} ago (newer than "
                         f"{_age(older_than)})")
            )  # fmt: skip
        else:
            out.append(Decision(job, "remove", f"{job.state}, ended {_age(job.age)} ago"))
    return out


def secret_files(seen: Seen, job_root: str) -> list[str]:
    """The secret files of a job that exist: its key, its Ray token, its sealed secret
    environment (only when it is in this root's ``secrets`` directory)."""
    files = JobDir(seen.job_dir)
    found = [p for p in (files.api_key, files.ray_token) if os.path.lexists(p)]
    sealed = seen.secret_env_file
    if sealed and os.path.dirname(sealed) == JobRoot(job_root).secrets and os.path.lexists(sealed):
        found.append(sealed)
    return found


def last_change(job_dir: str) -> float:
    """When the job last changed: the newest mtime of its directory and endpoint.json."""
    times = [os.lstat(job_dir).st_mtime]
    endpoint = JobDir(job_dir).endpoint
    if os.path.lexists(endpoint):
        times.append(os.lstat(endpoint).st_mtime)
    return max(times)


def refusal(path: str | Path) -> str:
    """Why ``path`` is not a private job directory of this user ("" when it is)."""
    try:
        info = check_private(path, "job directory")
    except UnsafePathError as exc:
        return exc.one_line()
    except OSError as exc:
        return f"job directory: {path}: {exc.strerror}"
    import stat

    return "" if stat.S_ISDIR(info.st_mode) else f"job directory: {path} is not a directory"


def look(job_root: str, now: float) -> list[Seen]:
    """Every job directory of ``job_root`` (the root itself checked by the caller): its
    state through ``Job.status`` (SLURM and its files), or why it is refused. A directory
    that holds neither ``plan.json`` nor ``endpoint.json`` is no job and is left out."""
    seen = []
    for name in sorted(os.listdir(job_root)):
        parsed = jobroot.parse_key(name)
        if parsed is None:
            continue
        path = str(Path(job_root) / name)
        why = refusal(path)
        if why:
            seen.append(Seen(parsed[1], path, refused=why))
            continue
        job = Job(parsed[1], path)
        if not (os.path.lexists(job.files.plan) or os.path.lexists(job.files.endpoint)):
            continue
        status = job.status()
        plan = job.recorded_plan() if os.path.lexists(job.files.plan) else None
        sealed = plan.secret_env_file if plan is not None else None
        age = now - last_change(path)
        seen.append(Seen(job.job_id, path, status.state, status.ended, age, "", sealed))
    return seen


__all__ = ["Action", "Decision", "Seen", "decide", "last_change", "look", "refusal", "secret_files"]
