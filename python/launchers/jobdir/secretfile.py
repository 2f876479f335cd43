"""The job's secret environment file: where secret-looking variables of a registry
entry's ``env``, the site's ``env`` or the request (``HF_TOKEN``, ``WANDB_API_KEY``:
``spec.secretenv``) travel from the submitting machine to the nodes.

Their values never go into the sbatch text or ``plan.json`` (slurmctld and accounting
keep both), nor onto a command line: the plan holds only their names (``secret_env``)
and this file's path (``secret_env_file``).

Where: ``<job_root>/secrets/<job name>-<random>.env.json``. The file must exist before
the job can start, and the job directory does not: it is named by the job id, which only
``sbatch`` knows, and the job may start the moment ``sbatch`` returns. So the file lives
beside the job directories, in the user's job root, under a name nobody can guess; it
is created ``O_CREAT|O_EXCL|O_NOFOLLOW`` at 0600 in a ``secrets`` directory that must be
the user's own and private (0700), so a planted file or symlink is refused, never
followed or reused.

Lifetime: written once by the submitting side (``submit``, ``plan``, ``render sbatch``);
read by every node when it starts, with ``read_private_text`` (a symlink, a file of
another user or one others can read is refused), and exported into the environment of
the processes the node starts (inside Apptainer through ``APPTAINERENV_*``, never on the
command line). A requeued job reads it again on every attempt, so it is kept while a
next attempt may come: the leader removes it when the job ends for good, that is when
it ends by itself (served and stopped, or failed), or is stopped by a signal and the
plan does not requeue. A job stopped by a signal in a plan that requeues keeps it for
the next attempt (a job cancelled for good then leaves it behind, 0600, in the user's
own ``secrets`` directory), as does a file written by ``plan`` or ``render sbatch``
whose script is never submitted. A node that cannot read the file fails closed: the job
stops with a one-line reason, nothing starts without its secrets.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from launchers.errors import RuntimeFailure
from launchers.jobdir import ensure_dir
from launchers.jobdir.paths import JobRoot
from launchers.jobdir.safe import UnsafePathError, check_private, open_nofollow, read_private_text

FORMAT = 1
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def new_path(
    job_root: str, job_name: str, token: Callable[[], str] = lambda: secrets.token_hex(8)
) -> str:
    """A new, unguessable path for a job's secret file under ``job_root``."""
    name = _UNSAFE_NAME.sub("-", job_name).strip("-.")[:64] or "job"
    return JobRoot(job_root).secret_env(f"{name}-{token()}")


def write(path: str, values: Mapping[str, str]) -> None:
    """Create ``path`` (0600, it must not exist, no symlink followed) holding ``values``,
    in a directory of the user's own that nobody else can enter."""
    directory = Path(path).parent
    ensure_dir(directory.parent)  # the job root first: mkdir gives parents no mode
    ensure_dir(directory)
    info = check_private(directory, "secret environment directory")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UnsafePathError(
            f"secret environment directory: {directory} can be entered by other users "
            f"({stat.filemode(info.st_mode)})",
            fix=f"chmod 700 {directory}",
        )
    try:
        fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UnsafePathError(
            f"secret environment file: {path} already exists",
            fix="remove it: a secret file is written once, for one job",
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            json.dump({"format": FORMAT, "env": dict(sorted(values.items()))}, fh)
            fh.write("\n")
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise


def read(path: str, names: Sequence[str]) -> dict[str, str]:
    """The values of ``names`` from the file at ``path``. RuntimeFailure (one line) when
    the file is missing, unsafe, unreadable or lacks one of them: no secret, no start."""
    try:
        text = read_private_text(path, "secret environment file")
    except UnsafePathError as exc:
        raise RuntimeFailure(exc.one_line()) from None
    except OSError as exc:
        reason = "is a symlink" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror})"
        raise RuntimeFailure(
            f"secret environment file: {path} {reason}: the job stops without {', '.join(names)}",
            fix="submit the job again (the file is written at submission)",
        ) from None
    try:
        data = json.loads(text)
        env = data["env"] if isinstance(data, dict) and data.get("format") == FORMAT else None
    except (ValueError, KeyError):
        env = None
    if not isinstance(env, dict):
        raise RuntimeFailure(
            f"secret environment file: {path} is not a vllm-hpc secret file",
            fix="submit the job again",
        )
    missing = [name for name in names if not isinstance(env.get(name), str)]
    if missing:
        raise RuntimeFailure(
            f"secret environment file: {path} has no value for {', '.join(missing)}",
            fix="submit the job again",
        )
    return {name: env[name] for name in names}


def remove(path: str) -> None:
    """Delete the file (nothing to do when it is gone already)."""
    Path(path).unlink(missing_ok=True)
