"""The job root: the one rule for where job directories live.

``--job-root``, else ``$VLLM_HPC_JOB_ROOT``, else the site file's ``job_root``, else
``~/.vllm-hpc/jobs``. submit, jobs, status, logs, stop, the Python client, the sbatch
templates (through ``vllm-hpc job-root``) and the wrapper door all ask this function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

DEFAULT_JOB_ROOT = "~/.vllm-hpc/jobs"

# The names of a job directory's files: the planner (plan.json's paths), the runtime and
# the readers all build paths from these.
PLAN_FILE = "plan.json"
LEADER_FILE = "leader.json"
ENDPOINT_FILE = "endpoint.json"
LOCAL_FILE = "local.json"
API_KEY_FILE = "api_key"
RAY_TOKEN_FILE = "ray_token"  # noqa: S105 - a file name, not a secret


def job_root(
    flag: str | None,
    environ: Mapping[str, str],
    site_root: str | Callable[[], str | None] | None = None,
) -> str:
    """The job root, with ``~`` expanded from ``environ``'s HOME. ``site_root`` may be a
    callable, asked only when neither the flag nor the environment names a root (so
    readers do not parse the site file for nothing)."""
    chosen = flag or environ.get("VLLM_HPC_JOB_ROOT") or None
    if chosen is None:
        site = site_root() if callable(site_root) else site_root
        chosen = site or DEFAULT_JOB_ROOT
    return expand_home(chosen, environ)


def expand_home(path: str, environ: Mapping[str, str]) -> str:
    if path == "~" or path.startswith("~/"):
        home = environ.get("HOME") or "/tmp"
        return home.rstrip("/") + path[1:]
    return path
