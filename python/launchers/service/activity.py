"""Between the front's proxy and its controller, in the front's one process: when the
proxy last forwarded a request and whether a request waits for a replica (the
controller reads that each tick: ``decide.Demand``), and the controller's word that a
replica is routed (which wakes the waiting requests at once, not at their next look). A
request whose client has gone stops waiting at once (the front's server says so:
``proxy.client_gone``), so it no longer counts as waiting.

The proxy runs on the event loop, the controller on its own thread: every field is
behind one lock, and a waiting request is woken through its loop
(``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

from launchers.service.decide import Demand


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Activity:
    """The front's requests as its controller sees them. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def requested(self) -> None:
        """A request is forwarded now (or waits for a replica to be forwarded to)."""
        with self._lock:
            self._last = self._clock()

    def demand(self) -> Demand:
        """What the controller's next tick decides from."""
        with self._lock:
            return Demand(last_request=self._last, waiting=bool(self._waiters))

    def routed(self, any_routed: bool) -> None:
        """The controller's word after each tick: once a replica is routed, every
        waiting request goes on."""
        if not any_routed:
            return
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits
                loop.call_soon_threadsafe(_settle, waiter)

    async def until_routed(
        self,
        routed: Callable[[], bool],
        timeout: float,
        gone: asyncio.Future[None] | None = None,
    ) -> bool:
        """Wait at most ``timeout`` seconds until ``routed()`` (woken by ``routed``, the
        controller's word), or until ``gone`` is done (the client's connection is lost:
        it waits no more, and no longer counts as waiting); whether a replica is
        routed."""
        if routed():
            return True
        loop = asyncio.get_running_loop()
        entry = (loop, loop.create_future())
        with self._lock:
            self._waiters.append(entry)
        try:
            if routed():  # routed between the first look and the registration
                return True
            watched = {entry[1]} if gone is None else {entry[1], gone}
            await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            return entry[1].done() or routed()
        finally:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)


__all__ = ["Activity"]
