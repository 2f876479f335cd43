"""An exception the runtime did not expect (a missing executable found too late, a full
file system, a malformed ``leader.json``): it still ends the rank as FAILED with a reason.

Its traceback goes to the node log, line by line; its one-line reason goes where the
rank's failures go (``endpoint.json`` on the leader, ``failed/<rank>.json`` on the
others); the rank's children are stopped by the caller's ``finally`` and it exits 1.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable

from launchers import jobdir
from launchers.jobdir import jobfiles
from launchers.runtime.context import NodeContext

MAX_REASON = 400


def reason(exc: BaseException) -> str:
    """``OSError: [Errno 28] No space left on device``: one line, bounded."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:MAX_REASON] if text else type(exc).__name__


def log_traceback(log: Callable[[str], None], exc: BaseException) -> None:
    for block in traceback.format_exception(exc):
        for line in block.rstrip("\n").splitlines():
            log(line)


def failed(ctx: NodeContext, exc: BaseException) -> str:
    """Log ``exc`` with its traceback and return the one-line reason to record."""
    why = reason(exc)
    log_traceback(ctx.log, exc)
    ctx.log(f"FAILED: {why}")
    return why


def record_failure(ctx: NodeContext, why: str) -> None:
    """A rank > 0's failure record, for the leader to report (a full disk: logged only)."""
    with contextlib.suppress(OSError):
        jobfiles.write(
            ctx.files.failure(ctx.rank),
            jobfiles.Failure(rank=ctx.rank, hostname=ctx.hostname, attempt=ctx.attempt,
                             message=why, time=jobdir.now()),
        )  # fmt: skip


def record_leader_failure(ctx: NodeContext, why: str) -> None:
    """``endpoint.json`` FAILED for a leader that failed before its endpoint writer ran:
    the fields it knows, the rest at their defaults."""
    now = jobdir.now()
    with contextlib.suppress(OSError):
        jobfiles.write(
            ctx.endpoint_file,
            jobfiles.Endpoint(state="FAILED", message=why, job_id=ctx.job_id,
                              attempt=ctx.attempt, hostname=ctx.hostname,
                              leader_ip=ctx.node_ip, nodes=ctx.nodes, started=now, updated=now),
        )  # fmt: skip
