"""The one wait helper. Every poll in vllm-hpc goes through here.

``wait_for``: a condition, a deadline, what is awaited and the log to read when it never
comes. ``ticks``: the cadence of a loop that supervises for a lifetime and ends on its own
condition (a child exits, the leader goes, Ctrl+C). Both take a ``Clock``, so a unit test
drives them with a fake one instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from launchers.errors import WaitTimeout

POLL = 0.5  # seconds between two looks at a condition
T = TypeVar("T")


@dataclass(frozen=True)
class Clock:
    """Monotonic time and a sleep; tests pass a fake pair."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


REAL = Clock()


@dataclass(frozen=True)
class Waited(Generic[T]):
    value: T
    seconds: float


def wait_for(
    condition: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    log: str | None = None,
    fix: str | None = None,
    detail: Callable[[], str] | None = None,
    interval: float = POLL,
    clock: Clock = REAL,
) -> Waited[T]:
    """Look at ``condition`` every ``interval`` until it returns something other than
    None (returned with the seconds waited). ``condition`` may raise to stop waiting (a
    process it depends on died). After ``timeout`` seconds: ``WaitTimeout`` saying
    "waited N s for <what><detail()>", with ``fix`` or "read <log>" as the fix."""
    start = clock.now()
    while True:
        value = condition()
        if value is not None:
            return Waited(value, clock.now() - start)
        if clock.now() - start > timeout:
            tail = detail() if detail is not None else ""
            raise WaitTimeout(
                f"waited {timeout:.0f} s for {what}{tail}",
                fix=fix or (f"read {log}" if log else None),
            )
        clock.sleep(interval)


def ticks(interval: float = POLL, *, clock: Clock = REAL) -> Iterator[float]:
    """Seconds since the first tick, once per ``interval``, for as long as the caller
    loops: ``for elapsed in ticks(): ...`` (the caller breaks or returns to end it)."""
    start = clock.now()
    while True:
        yield clock.now() - start
        clock.sleep(interval)


def seen(flag: bool) -> bool | None:
    """A boolean condition as ``wait_for`` wants it: True, or None to keep waiting."""
    return True if flag else None
