"""``vllm-hpc clean``: remove the directories of jobs that ended long ago, or only the
secrets of jobs that ended; a thin printer of ``Client.clean``."""

from __future__ import annotations

import re

import click

from launchers.cli.jobs import client_for, job_root_option

_DURATION = re.compile(r"(?P<n>[0-9]{1,6})(?P<unit>[smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_OLDER_THAN = "7d"


class Duration(click.ParamType):  # type: ignore[type-arg]
    """``30m``, ``12h``, ``7d`` (or ``90s``) as seconds."""

    name = "DURATION"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        match = _DURATION.fullmatch(str(value))
        if match is None:
            self.fail(f"{str(value)[:40]!r} is not a duration (a number and s, m, h or d: 12h, 7d)")
        return float(int(match["n"]) * _UNIT[match["unit"]])


@click.command("clean")
@job_root_option
@click.option(
    "--older-than",
    type=Duration(),
    default=DEFAULT_OLDER_THAN,
    show_default=True,
    help="Remove the directory of a job that ended at least this long ago (30m, 12h, 7d).",
)
@click.option(
    "--secrets-only",
    is_flag=True,
    help="Remove only the secrets (API key, Ray token, sealed secret environment) of every "
    "job that ended, whatever its age; keep the directories.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
def clean_cmd(job_root: str | None, older_than: float, secrets_only: bool, dry_run: bool) -> None:
    """Remove old job directories and the secrets of jobs that ended.

    A job SLURM still holds (PENDING, RUNNING) is never touched, and neither is a
    directory that is not a private one of yours (a symlink, another user's, or one
    others can write).
    """
    client = client_for(job_root)
    decisions = client.clean(older_than=older_than, secrets_only=secrets_only, dry_run=dry_run)
    verb = {"remove": "would remove", "secrets": "would remove secrets"} if dry_run else {
        "remove": "removed", "secrets": "removed secrets"}  # fmt: skip
    dirs = secrets = kept = refused = 0
    for d in decisions:
        names = ", ".join(f.rsplit("/", 1)[-1] for f in d.files)
        if d.action == "remove":
            dirs += 1
            secrets += len(d.files)
            extra = f" and {names}" if names else ""
            click.echo(f"{d.seen.job_id}: {verb['remove']} {d.seen.job_dir}{extra} ({d.why})")
        elif d.action == "secrets":
            secrets += len(d.files)
            what = f"{verb['secrets']} {names}" if names else "no secrets left"
            click.echo(f"{d.seen.job_id}: {what} ({d.why})")
        elif d.action == "keep":
            kept += 1
            click.echo(f"{d.seen.job_id}: kept ({d.why})")
        else:
            refused += 1
            click.echo(f"{d.seen.job_id}: refused: {d.why}")
    total = "would remove" if dry_run else "removed"
    click.echo(
        f"{total} {dirs} job director{'y' if dirs == 1 else 'ies'} and {secrets} secret "
        f"file{'' if secrets == 1 else 's'}; kept {kept}, refused {refused} "
        f"(job root {client.job_root})"
    )
