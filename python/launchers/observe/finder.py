"""The jobs of a job root (``JobFinder``): found by id, or all of them. Reading only;
a job itself is ``launchers.observe.job``'s (imported when one is asked for, so a
client that only plans does not import it).

Jobs are found by id in the job root (``--job-root``, ``$VLLM_HPC_JOB_ROOT``, the site
file's ``job_root``, or ``~/.vllm-hpc/jobs``): a job's directory is
``<cluster>-<job id>`` (``jobdir.jobroot``), found from the id alone by one listing of
the root; only when two clusters' jobs share the id is the cluster asked
(``$SLURM_CLUSTER_NAME``, else ``scontrol show config``), else ``CLUSTER-ID`` names it.
The root and the job's directory are checked (ours, closed to others) when opened.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from launchers.errors import InputError
from launchers.jobdir import jobroot
from launchers.jobdir.paths import JobDir, JobRoot
from launchers.jobdir.safe import UnsafePathError, check_private

if TYPE_CHECKING:
    from launchers.observe.job import Job


class JobFinder:
    """Find vllm-hpc jobs in a job root (``launchers.client.Client`` adds planning and
    submitting; this floor only reads)."""

    def __init__(
        self,
        job_root: str | None = None,
        environ: Mapping[str, str] | None = None,
        site_job_root: Callable[[], str | None] = lambda: None,
    ):
        self.environ = dict(os.environ if environ is None else environ)
        self.job_root = jobroot.job_root(job_root, self.environ, site_job_root)

    def job(self, job_id: str) -> Job:
        """The job ``job_id`` (a SLURM id, ``CLUSTER-ID``, or ``local-...``)."""
        from launchers.observe.job import Job

        parsed = jobroot.parse_key(job_id)
        if parsed is None:
            raise InputError(
                f"JOB: {job_id[:80]!r} is not a job id ({jobroot.JOB_ID_FORMS}, or CLUSTER-ID)",
                fix="check the id with `vllm-hpc jobs`",
            )
        cluster, plain = parsed
        name = job_id if cluster or not plain.isdigit() else self._key_of(plain)
        job_dir = JobRoot(self.job_root).job(name).root
        if not Path(job_dir).is_dir():
            raise InputError(
                f"JOB: no job directory {job_dir}",
                fix="check the id with `vllm-hpc jobs`, or pass --job-root",
            )
        check_private(self.job_root, "job root")
        check_private(job_dir, "job directory")
        return Job(plain, job_dir)

    def _key_of(self, job_id: str) -> str:
        """The directory name of SLURM job ``job_id``: the one ``<cluster>-<id>`` there
        is (or a directory named by the id alone, from an earlier vllm-hpc)."""
        keys = [name for cluster, plain, name in self._keys() if cluster and plain == job_id]
        if len(keys) == 1:
            return keys[0]
        if not keys:
            return job_id
        from launchers.submit.slurmctl import cluster_name

        here = f"{cluster_name(self.environ)}-{job_id}"
        if here in keys:
            return here
        raise InputError(
            f"JOB: job {job_id} is in more than one cluster's directory "
            f"({', '.join(sorted(keys))})",
            fix="name one as CLUSTER-ID",
        )

    def _keys(self) -> list[tuple[str | None, str, str]]:
        """(cluster or None, job id, directory name) of every job directory in the root."""
        try:
            names = os.listdir(self.job_root)
        except OSError:
            return []
        out = []
        for name in names:
            parsed = jobroot.parse_key(name)
            if parsed is not None:
                out.append((parsed[0], parsed[1], name))
        return out

    def jobs(self) -> list[Job]:
        """Every job in the root (a directory another user owns or can write is left out)."""
        from launchers.observe.job import Job

        root = Path(self.job_root)
        if not root.is_dir():
            return []
        check_private(root, "job root")
        found = []
        for _, job_id, name in self._keys():
            p = root / name
            if not p.is_dir() or not _private(p):
                continue
            if Path(JobDir(str(p)).plan).exists() or Path(JobDir(str(p)).endpoint).exists():
                found.append(Job(job_id, str(p)))
        return sorted(found, key=lambda j: (_job_sort_key(j.job_id), j.job_dir))


def _private(path: Path) -> bool:
    try:
        check_private(path, "job directory")
    except UnsafePathError:
        return False
    return True


def _job_sort_key(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (0, job_id)


__all__ = ["JobFinder"]
