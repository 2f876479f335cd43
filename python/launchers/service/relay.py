"""How the front passes a streamed answer on: once its first piece has gone to the client
the normal way (``StreamResponse.write``, which sends the answer's head with it), the
rest goes from the upstream's socket to the client's in the upstream's own read
callback, with no task woken per piece.

aiohttp's client hands each piece of an answer to a ``StreamReader`` and wakes the
task that reads it; the task then hands it to the server's writer, which frames it as an
HTTP chunk: at a GPU's token rate that is a future, a task switch and two layers of
Python per token (py-spy on the bench's front: a fifth of its CPU in the wake-ups
alone). ``Relay`` instead stands in as the upstream connection's protocol for a while:
each piece the socket delivers is parsed by aiohttp's own protocol as before (the HTTP
framing, the chunked decoding and aiohttp's read timer are all still its), taken at once
out of the answer's ``content`` (``read_nowait``), read by the usage scanner and written
to the client's transport as one HTTP chunk, in the same callback.

The relay steps aside, and the handler's usual loop carries on from where it stopped
(every case it already knows how to end), as soon as anything is not plain passing:

- the answer is whole (``content`` at its end) or failed (an exception on ``content``,
  or the upstream's connection lost before the end);
- the client's connection is closing, or holds more than ``max_buffer`` bytes not yet
  sent (a slow client: the usual loop waits for it to drain, then the relay may resume;
  it must wait explicitly, since aiohttp's writer does not count what the relay wrote:
  a client that never reads would otherwise have the whole answer buffered for it);
- the handler's task is cancelled (the front's deadline, or its shutdown).

It relays only where the answer goes out chunked (HTTP/1.1; an HTTP/1.0 client's answer
takes the usual loop throughout). aiohttp comes with vllm-router; it is imported only
where a front runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web

# The client's unsent bytes past which the relay steps aside and the usual loop waits for
# them to drain: aiohttp's own writer waits for a drain past the same size.
CLIENT_BUFFER_LIMIT = 0x10000

ENDED, FAILED, CLIENT, SLOW, STOPPED = "ended", "failed", "client", "slow", "stopped"


def chunk(data: bytes) -> bytes:
    """``data`` framed as one HTTP/1.1 chunk (RFC 9112 7.1). Pure."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class Relay(asyncio.Protocol):
    """Stands in as the upstream connection's protocol from ``__init__`` until ``done``
    holds why it stepped aside (one of ``ENDED``, ``FAILED``, ``CLIENT``, ``SLOW``,
    ``STOPPED``); the upstream's protocol is its own again from then on. ``feed`` reads
    each piece (the usage scanner's ``feed``: the bytes to pass on)."""

    def __init__(
        self,
        upstream: asyncio.Transport,
        content: aiohttp.StreamReader,
        client: asyncio.Transport,
        feed: Callable[[bytes], bytes],
        *,
        max_buffer: int = CLIENT_BUFFER_LIMIT,
    ) -> None:
        self.upstream = upstream
        self.inner = cast(asyncio.Protocol, upstream.get_protocol())
        self.content = content
        self.client = client
        self.feed = feed
        self.max_buffer = max_buffer
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pieces = 0  # passed in the callback (for the tests and the bench)
        upstream.set_protocol(self)
        # What arrived before the relay stood in (or a client already slow or gone).
        self._pass()

    def step_aside(self, why: str) -> None:
        """Give the upstream's protocol back (once) and say why."""
        if self.done.done():
            return
        if self.upstream.get_protocol() is self:
            self.upstream.set_protocol(self.inner)
        self.done.set_result(why)

    def _pass(self) -> None:
        """Pass what ``content`` holds, unless the client cannot take it now."""
        content, client = self.content, self.client
        if content.exception() is not None:
            self.step_aside(FAILED)
            return
        if client.is_closing():
            self.step_aside(CLIENT)
            return
        if client.get_write_buffer_size() > self.max_buffer:
            self.step_aside(SLOW)
            return
        piece = content.read_nowait()
        if piece:
            out = self.feed(piece)
            if out:
                client.write(chunk(out))
                self.pieces += 1
        if content.at_eof():
            self.step_aside(ENDED)

    # asyncio.Protocol: everything goes to aiohttp's protocol first.

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)
        if not self.done.done():
            self._pass()

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # the transport closes: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.step_aside(FAILED)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def can_relay(
    request: web.Request, response: web.StreamResponse, upstream: aiohttp.ClientResponse
) -> tuple[asyncio.Transport, asyncio.Transport] | None:
    """The client's and the upstream's transports when the rest of ``upstream`` may be
    relayed to ``response`` (prepared and chunked; both connections open), else None.
    (uvloop's transports are no ``asyncio.Transport`` subclass: their methods are.)"""
    connection = upstream.connection
    chunked = response.headers.get("Transfer-Encoding", "").lower() == "chunked"
    if not chunked or connection is None:
        return None
    ends = (request.transport, connection.transport)
    for end in ends:
        if end is None or end.is_closing() or not hasattr(end, "set_protocol"):
            return None
    return cast(asyncio.Transport, ends[0]), cast(asyncio.Transport, ends[1])


async def relay_rest(
    client: asyncio.Transport,
    transport: asyncio.Transport,
    upstream: aiohttp.ClientResponse,
    feed: Callable[[bytes], bytes],
) -> str:
    """Relay ``upstream``'s answer to ``client`` until the relay steps aside; why it did.
    A cancelled task gives the upstream's protocol back before it ends."""
    relay = Relay(transport, upstream.content, client, feed)
    try:
        return await asyncio.shield(relay.done)
    finally:
        relay.step_aside(STOPPED)
