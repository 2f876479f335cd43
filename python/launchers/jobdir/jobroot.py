"""The job root and the job directories under it: the one rule for where jobs live.

The root is ``--job-root``, else ``$VLLM_HPC_JOB_ROOT``, else the site file's
``job_root``, else ``~/.vllm-hpc/jobs``. submit, jobs, status, logs, stop, the Python
client, the sbatch templates (through ``vllm-hpc job-root``) and the wrapper door all
ask ``job_root``.

A site's ``job_root`` is shared by every user of the site (e.g. ``/scratch/vllm-hpc``,
mode 1777), so it always ends in a directory of the user's own: ``{user}`` in the site
value is replaced by the user's name (``/scratch/{user}/vllm-hpc``), and a value without
``{user}`` gets ``/<user>`` appended (``/scratch/vllm-hpc/alice``). A root named by the
flag or the environment is the user's choice and is taken as it is (``{user}`` is
replaced there too). Whatever the source, the root must be the user's own and not
writable by others (``jobdir.safe``, checked whenever it is opened; created 0700).

Each job's directory is ``<root>/<job key>``: for a SLURM job ``<cluster>-<job id>``
(``$SLURM_CLUSTER_NAME``, ``slurm`` where it is unset), so clusters that share ``$HOME``
and clusters whose ids restart never meet in one directory; for a run without SLURM
the job id itself (``local-<pid>-<time>``, ``manual-<date>-<time>``, ``dp-<addr>-<port>``),
which already says it is not a SLURM job. Job ids and cluster names are checked before
they become a path (``SLURM_JOB_ID=../../x`` is refused).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

from launchers.errors import InputError

DEFAULT_JOB_ROOT = "~/.vllm-hpc/jobs"
USER_FIELD = "{user}"
DEFAULT_CLUSTER = "slurm"  # the cluster of a SLURM job whose environment names none

SLURM_JOB_ID = re.compile(r"[0-9]{1,20}")
OTHER_JOB_ID = re.compile(
    r"local-[0-9]{1,10}(-[0-9]{1,12})?|manual-[0-9]{8}-[0-9]{6}|dp-[0-9A-Fa-f][0-9A-Fa-f-]{0,70}"
)
CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_SLURM_KEY = re.compile(r"(?P<cluster>[A-Za-z0-9][A-Za-z0-9_-]{0,63})-(?P<id>[0-9]{1,20})")
JOB_ID_FORMS = "digits (SLURM), local-<pid>, manual-<date>-<time> or dp-<addr>-<port>"


def job_root(
    flag: str | None,
    environ: Mapping[str, str],
    site_root: str | Callable[[], str | None] | None = None,
    user: str | None = None,
) -> str:
    """The job root, with ``~`` expanded from ``environ``'s HOME and ``{user}`` filled
    in (``user``, else this process's user). ``site_root`` may be a callable, asked only
    when neither the flag nor the environment names a root (so readers do not parse the
    site file for nothing); a site root always ends in a per-user directory."""
    chosen = flag or environ.get("VLLM_HPC_JOB_ROOT") or None
    if chosen is None:
        site = site_root() if callable(site_root) else site_root
        if site and USER_FIELD not in site:
            site = f"{site.rstrip('/')}/{USER_FIELD}"
        chosen = site or DEFAULT_JOB_ROOT
    root = expand_home(chosen, environ)
    if USER_FIELD in root:
        root = root.replace(USER_FIELD, user or user_name(environ))
    return root


def user_name(environ: Mapping[str, str]) -> str:
    """This process's user name (the password database, else $USER, else uid-<n>)."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        name = environ.get("USER") or environ.get("LOGNAME") or ""
        return name if CLUSTER_NAME.fullmatch(name) else f"uid-{os.geteuid()}"


def expand_home(path: str, environ: Mapping[str, str]) -> str:
    if path == "~" or path.startswith("~/"):
        home = environ.get("HOME") or "/tmp"
        return home.rstrip("/") + path[1:]
    return path


def check_job_id(job_id: str, what: str = "job id") -> str:
    """``job_id`` when it is one of the forms a job directory is named by; else one line."""
    if SLURM_JOB_ID.fullmatch(job_id) or OTHER_JOB_ID.fullmatch(job_id):
        return job_id
    raise InputError(
        f"{what}: {job_id[:80]!r} is not a job id ({JOB_ID_FORMS})",
        fix="unset or correct it: a job id never names a path",
    )


def cluster_name(environ: Mapping[str, str]) -> str:
    """The SLURM cluster a job runs on, from its environment (``slurm`` if unset)."""
    return _checked_cluster(environ.get("SLURM_CLUSTER_NAME") or DEFAULT_CLUSTER)


def _checked_cluster(name: str) -> str:
    if not CLUSTER_NAME.fullmatch(name):
        raise InputError(
            f"SLURM_CLUSTER_NAME: {name[:80]!r} is not a cluster name (letters, digits, _ -)",
            fix="unset or correct it",
        )
    return name


def job_key(job_id: str, cluster: str, what: str = "job id") -> str:
    """The name of a job's directory under the root: ``<cluster>-<id>`` for a SLURM job
    id, the id itself for the other forms. ``what`` names where the id came from."""
    check_job_id(job_id, what)
    if not SLURM_JOB_ID.fullmatch(job_id):
        return job_id
    return f"{_checked_cluster(cluster)}-{job_id}"


def parse_key(name: str) -> tuple[str | None, str] | None:
    """A job directory's name as (cluster or None, job id); None if it names no job.
    A bare number is a directory of an earlier vllm-hpc (keyed by the id alone)."""
    if SLURM_JOB_ID.fullmatch(name) or OTHER_JOB_ID.fullmatch(name):
        return (None, name)
    keyed = _SLURM_KEY.fullmatch(name)
    if keyed is None:
        return None
    return (keyed["cluster"], keyed["id"])
