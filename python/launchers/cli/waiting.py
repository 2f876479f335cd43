"""What ``submit --wait`` shows while a job starts.

On a terminal: each new state as a line, under one live line (rich) that says how long,
the state, the Ray nodes joined and vLLM's own start-up step (``observe.progress``),
redrawn at every look and gone when the wait ends. Elsewhere (a pipe, a file, or stderr
under ``--json``): a plain timestamped line at each change of any of these.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import IO, Protocol

import click

from launchers.observe.progress import Progress, line
from launchers.observe.status import JobStatus


class Waitable(Protocol):
    """What is followed: ``observe.job.Job``."""

    def wait_ready(
        self,
        timeout: float = ...,
        on_change: Callable[[JobStatus], None] | None = ...,
        on_poll: Callable[[JobStatus], None] | None = ...,
    ) -> JobStatus: ...

    def progress(self, status: JobStatus | None = ...) -> Progress: ...


Show = Callable[[Progress, float], None]


def follow(
    job: Waitable,
    timeout: float,
    *,
    live: bool,
    err: bool = False,
    file: IO[str] | None = None,
    now: Callable[[], float] = time.monotonic,
) -> JobStatus:
    """Wait for ``job`` to be READY (``Job.wait_ready``, the one wait), showing its
    progress live (a terminal) or as plain lines (to stderr when ``err``)."""
    start = now()
    with _live(file) if live else _plain(err, file) as show:

        def poll(status: JobStatus) -> None:
            show(job.progress(status), now() - start)

        return job.wait_ready(timeout=timeout, on_poll=poll)


@contextlib.contextmanager
def _plain(err: bool, file: IO[str] | None) -> Iterator[Show]:
    shown: list[Progress] = []

    def show(progress: Progress, elapsed: float) -> None:
        if not shown or progress != shown[-1]:
            click.echo(f"  {line(progress, elapsed)}", err=err, file=file)
        shown[:] = [progress]

    yield show


@contextlib.contextmanager
def _live(file: IO[str] | None) -> Iterator[Show]:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console(file=file, highlight=False)
    last: list[Progress] = []
    with Live(console=console, auto_refresh=False, transient=True) as view:

        def show(progress: Progress, elapsed: float) -> None:
            if not last or (progress.state, progress.message) != (
                last[-1].state,
                last[-1].message,
            ):
                state = Progress(progress.state, progress.message)
                view.console.print(Text(f"  {line(state, elapsed)}"))  # kept above the live line
            last[:] = [progress]
            view.update(Text(f"  {line(progress, elapsed)}", no_wrap=True, overflow="ellipsis"))
            view.refresh()

        yield show
