"""The connection side of a service's front: how its public port accepts, times and
counts client connections, whatever the app behind it (``proxy.make_app``) does with a
request.

``start_site`` serves an aiohttp app with the connection rules of ``FrontLimits``: a
request head must be complete within ``header_timeout`` seconds (aiohttp's server has no
such timeout of its own), idle keep-alive connections close after ``keepalive_timeout``,
a connection beyond ``max_connections`` gets a quick 503, and aiohttp's server log keeps
a bounded number of lines per client (``LogBudget``). Each request is told when its
client's connection is lost (``proxy.client_gone``: a request waiting for a replica
stops waiting). aiohttp comes with vllm-router; it is imported only where a front runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from launchers.defaults import (
    FRONT_HEADER_TIMEOUT,
    FRONT_KEEPALIVE_TIMEOUT,
    FRONT_LOG_LINES_PER_PEER,
    FRONT_LOG_LINES_TOTAL,
    FRONT_LOG_WINDOW,
    FRONT_MAX_CONNECTIONS,
)
from launchers.service.proxy import client_gone, error_body

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.typedefs import Handler
    from aiohttp.web_protocol import RequestHandler


@dataclass(frozen=True)
class FrontLimits:
    """How ``start_site`` treats connections and aiohttp's server log (defaults.py)."""

    header_timeout: float = FRONT_HEADER_TIMEOUT
    keepalive_timeout: float = FRONT_KEEPALIVE_TIMEOUT
    max_connections: int = FRONT_MAX_CONNECTIONS
    log_lines_per_peer: int = FRONT_LOG_LINES_PER_PEER
    log_lines_total: int = FRONT_LOG_LINES_TOTAL
    log_window: float = FRONT_LOG_WINDOW


_BUSY_BODY = error_body(503, "the front has too many connections; try again",
                         "service_unavailable").encode()  # fmt: skip
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n\r\n%s"
) % (len(_BUSY_BODY), _BUSY_BODY)


class _Gate:
    """The connections of one site: how many are open, and which is whose. At most
    ``max_refusing`` connections at once wait to be closed after their 503; beyond
    that, one is closed right after it."""

    def __init__(self, limits: FrontLimits) -> None:
        self.limits = limits
        self.max_refusing = max(1, limits.max_connections // 8)
        self.open = 0  # served connections
        self.refusing = 0  # connections being told 503
        self.served: dict[RequestHandler, _Connection] = {}

    def files(self) -> int:
        """Open files the site may need at once: each served connection and its
        connection to the router, those being refused, and some for the rest."""
        return 2 * self.limits.max_connections + self.max_refusing + 64


class _Connection(asyncio.Protocol):
    """One client connection, in front of aiohttp's protocol for it (``make``): counted
    against ``max_connections`` (beyond it: 503 and close, aiohttp never sees it), and
    closed when a request head is not complete ``header_timeout`` seconds after the
    connection opened, or after the first byte that came while no request was handled.
    The app's middleware (``start_site``) says when a request starts and ends, and hands
    each request ``gone``: done once the connection is lost."""

    def __init__(self, gate: _Gate, make: Callable[[], RequestHandler]) -> None:
        self._gate = gate
        self._make = make
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._handler: RequestHandler | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._refusing = False
        self._busy = 0  # requests being handled

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)
        gate = self._gate
        if gate.open >= gate.limits.max_connections:
            self._refuse()
            return
        gate.open += 1
        self._handler = self._make()
        gate.served[self._handler] = self
        self._handler.connection_made(transport)
        self._arm()

    def _refuse(self) -> None:
        """503 at once; the connection closes when the client says anything or ends (so
        the answer is not lost to a reset), or after the header timeout; when as many
        are being refused already, at once."""
        assert self._transport is not None
        self._transport.write(_BUSY)
        if self._gate.refusing >= self._gate.max_refusing:
            self._transport.close()
            return
        self._refusing = True
        self._gate.refusing += 1
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._gate.limits.header_timeout, self._transport.close)

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._gate.limits.header_timeout, self._overdue)

    def _overdue(self) -> None:
        self._timer = None
        if self._busy == 0 and self._handler is not None:
            self._handler.force_close()

    def request_started(self) -> None:
        self._busy += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def request_ended(self) -> None:
        self._busy -= 1

    def data_received(self, data: bytes) -> None:
        if self._handler is None:
            if self._transport is not None:
                self._transport.close()
            return
        self._handler.data_received(data)
        if self._busy == 0 and self._timer is None and self._handler.transport is not None:
            self._arm()  # the first bytes of a new request head

    def eof_received(self) -> None:  # the transport closes (aiohttp's says the same)
        if self._handler is not None:
            self._handler.eof_received()

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.gone.done():
            self.gone.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._refusing:
            self._refusing = False
            self._gate.refusing -= 1
        if self._handler is not None:
            self._gate.open -= 1
            self._gate.served.pop(self._handler, None)
            self._handler.connection_lost(exc)


class LogBudget(logging.Filter):
    """At most ``per_peer`` lines per client address and ``total`` in all per ``window``
    seconds, for aiohttp's server log (``aiohttp.server``: a line and a traceback for
    every malformed request). A client's malformed request is kept as one line, its
    message and the error's (printable, cut short); a line that follows dropped ones says
    how many were dropped. The clock is injectable."""

    def __init__(
        self,
        per_peer: int,
        total: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._per_peer, self._total, self._window, self._clock = per_peer, total, window, clock
        self._start = clock()
        self._kept = 0
        self._peers: dict[str, int] = {}  # at most ``total`` entries
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        if now - self._start >= self._window:
            self._start, self._kept = now, 0
            self._peers.clear()
        peer = _peer(record)
        if self._kept >= self._total or self._peers.get(peer, 0) >= self._per_peer:
            self._dropped += 1
            return False
        self._kept += 1
        self._peers[peer] = self._peers.get(peer, 0) + 1
        _shorten(record, self._dropped)
        self._dropped = 0
        return True


def _peer(record: logging.LogRecord) -> str:
    """The client's address in one of aiohttp's "... from %s" lines, else '-'."""
    args = record.args
    if isinstance(args, tuple) and args and "from %s" in str(record.msg):
        return str(args[0])[:64]
    return "-"


def _printable(text: str, limit: int) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def _client_fault(exc: BaseException | None) -> bool:
    from aiohttp.http_exceptions import HttpProcessingError

    return isinstance(exc, HttpProcessingError)


def _shorten(record: logging.LogRecord, dropped: int) -> None:
    """One printable line for a client's malformed request (its traceback is aiohttp's
    parser, not news); other errors keep their traceback. Says what was dropped."""
    exc = record.exc_info[1] if record.exc_info else None
    text = record.getMessage()
    if exc is not None and _client_fault(exc):
        text = f"{text}: {type(exc).__name__}: {exc}"
        record.exc_info, record.exc_text = None, None
    text = _printable(text, 300)
    if dropped:
        text += f" ({dropped} more aiohttp.server lines dropped by the front's log budget)"
    record.msg, record.args = text, ()


def _enough_files(needed: int) -> None:
    """Raise this process's soft limit of open files to ``needed`` (as far as the hard
    limit allows): past it a front accepts nobody, /health included."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    goal = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if goal > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (goal, hard))


async def start_site(
    app: web.Application, host: str, port: int, limits: FrontLimits | None = None
) -> web.AppRunner:
    """Serve ``app`` (not yet started) on ``host:port`` under ``limits``; the runner's
    ``cleanup()`` stops it all (and takes the log budget off aiohttp's server log). The
    process's soft limit of open files is raised to what ``limits`` may need."""
    from aiohttp import web

    limits = limits or FrontLimits()
    gate = _Gate(limits)
    _enough_files(gate.files())

    @web.middleware
    async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
        connection = gate.served.get(request.protocol)
        if connection is None:
            return await handler(request)
        connection.request_started()
        told = client_gone.set(connection.gone)
        try:
            return await handler(request)
        finally:
            client_gone.reset(told)
            connection.request_ended()

    app.middlewares.append(track)
    server_log = logging.getLogger("aiohttp.server")
    budget = LogBudget(limits.log_lines_per_peer, limits.log_lines_total, limits.log_window)
    server_log.addFilter(budget)

    async def unfilter(_: web.Application) -> None:
        server_log.removeFilter(budget)

    app.on_cleanup.append(unfilter)

    class GuardedSite(web.BaseSite):
        @property
        def name(self) -> str:
            return f"http://{host}:{port}"

        async def start(self) -> None:
            await super().start()
            server = runner.server
            assert server is not None
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                lambda: _Connection(gate, server), host, port, backlog=128
            )

    runner = web.AppRunner(app, access_log=None, keepalive_timeout=limits.keepalive_timeout)
    await runner.setup()
    try:
        await GuardedSite(runner).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
