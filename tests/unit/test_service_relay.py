"""The front's stream relay (launchers.service.relay): after an answer's first piece, the
rest passes from the upstream's socket to the client's in the upstream's read callback,
and the relay steps aside (the upstream's protocol its own again) whenever passing is
not plain: the end, a failed upstream, a client gone or slow, a cancelled task.

A real aiohttp server streams on loopback, one piece per step of the test (a queue: no
timing); the client's end is a real loopback connection, or, for the client's states
the kernel cannot be made to show on demand (a full send buffer), a stand-in transport.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from launchers.service import relay as relay_module
from launchers.service.proxy import make_app
from launchers.service.relay import CLIENT, ENDED, FAILED, SLOW, STOPPED, Relay, chunk
from launchers.service.usage import StreamScanner, UsageBook

from .helpers.aioserve import serve

T = TypeVar("T")
KEY = "s3cret-key"
END, CUT = "end", "cut"
# The front runs on uvloop's loop where it is installed (front.event_loop), else asyncio's.
LOOPS = ["asyncio", "uvloop"]


@pytest.fixture(params=LOOPS)
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(check: Callable[[], Coroutine[Any, Any, T]], loop: str) -> T:
    """``check()`` on the named event loop; a hang fails after 30 s instead of waiting."""
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if loop == "uvloop":
        factory = pytest.importorskip("uvloop").new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(asyncio.wait_for(check(), 30))


class Streamer:
    """An upstream whose answer is a stream of the pieces put on ``steps`` (``END``:
    its clean end; ``CUT``: its connection closed mid-answer)."""

    def __init__(self) -> None:
        self.steps: asyncio.Queue[bytes | str] = asyncio.Queue()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        while True:
            step = await self.steps.get()
            if step == END:
                await response.write_eof()
                return response
            if step == CUT:
                assert request.transport is not None
                request.transport.close()
                return response
            assert isinstance(step, bytes)
            await response.write(step)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("POST", "/v1/chat/completions", self.handle)
        return app


class Collector(asyncio.Protocol):
    """The client's end of a loopback connection: every byte the relay sent."""

    def __init__(self) -> None:
        self.data = b""
        self.grew = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.grew.set()

    async def until(self, want: bytes) -> None:
        while want not in self.data:
            self.grew.clear()
            await self.grew.wait()


class StandIn:
    """A client transport whose state the test sets: closing, or holding unsent bytes."""

    def __init__(self, closing: bool = False, unsent: int = 0) -> None:
        self.closing, self.unsent = closing, unsent
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def write(self, data: bytes) -> None:
        self.written.append(data)


@asynccontextmanager
async def streaming() -> AsyncIterator[tuple[Streamer, aiohttp.ClientResponse]]:
    """An answer under way: its head read, its pieces to come from ``Streamer.steps``."""
    streamer = Streamer()
    runner, url = await serve(streamer.app())
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/v1/chat/completions", data=b"{}") as answer,
        ):
            yield streamer, answer
    finally:
        await runner.cleanup()


@asynccontextmanager
async def collector() -> AsyncIterator[tuple[Collector, asyncio.Transport]]:
    """A real loopback connection: the transport to write to, and what its peer read."""
    loop = asyncio.get_running_loop()
    peer = Collector()
    server = await loop.create_server(lambda: peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    try:
        yield peer, transport
    finally:
        transport.close()
        server.close()


def _upstream_transport(answer: aiohttp.ClientResponse) -> asyncio.Transport:
    assert answer.connection is not None and answer.connection.transport is not None
    return answer.connection.transport


def _event(i: int) -> bytes:
    return f"data: {json.dumps({'choices': [{'delta': {'content': str(i)}}]})}\n\n".encode()


def test_a_piece_is_framed_as_one_http_chunk() -> None:
    assert chunk(b"data: x\n\n") == b"9\r\ndata: x\n\n\r\n"
    assert chunk(b"a" * 255) == b"ff\r\n" + b"a" * 255 + b"\r\n"


def test_the_rest_of_a_stream_passes_in_the_read_callback_and_the_end_steps_aside(
    loop: str,
) -> None:
    async def check() -> None:
        async with streaming() as (streamer, answer), collector() as (peer, client):
            transport = _upstream_transport(answer)
            aiohttp_protocol = transport.get_protocol()
            fed: list[bytes] = []

            def feed(piece: bytes) -> bytes:
                fed.append(piece)
                return piece

            relay = Relay(transport, answer.content, client, feed)
            assert transport.get_protocol() is relay
            for i in range(20):  # one piece at a time: each passes before the next is sent
                await streamer.steps.put(_event(i))
                await peer.until(chunk(_event(i)))
            assert not relay.done.done()
            await streamer.steps.put(END)
            assert await relay.done == ENDED
            assert transport.get_protocol() is aiohttp_protocol
            assert relay.pieces == 20 and b"".join(fed) == b"".join(map(_event, range(20)))
            assert peer.data == b"".join(chunk(_event(i)) for i in range(20))
            assert answer.content.at_eof()

    run(check, loop)


def test_an_upstream_cut_mid_answer_steps_aside_as_failed(loop: str) -> None:
    async def check() -> None:
        async with streaming() as (streamer, answer), collector() as (_, client):
            transport = _upstream_transport(answer)
            relay = Relay(transport, answer.content, client, lambda piece: piece)
            await streamer.steps.put(_event(0))
            await streamer.steps.put(CUT)
            assert await relay.done == FAILED
            assert transport.get_protocol() is not relay
            with pytest.raises(aiohttp.ClientPayloadError):  # the usual loop's to report
                async for _ in answer.content.iter_any():
                    pass

    run(check, loop)


@pytest.mark.parametrize(
    ("state", "why"),
    [({"closing": True}, CLIENT), ({"unsent": relay_module.CLIENT_BUFFER_LIMIT + 1}, SLOW)],
    ids=["client-gone", "slow-client"],
)
def test_a_client_gone_or_slow_leaves_the_piece_to_the_usual_loop(
    state: dict[str, Any], why: str, loop: str
) -> None:
    async def check() -> None:
        async with streaming() as (streamer, answer):
            transport = _upstream_transport(answer)
            client = StandIn()
            relay = Relay(transport, answer.content, client, lambda piece: piece)  # type: ignore[arg-type]
            await streamer.steps.put(_event(0))
            while not client.written:
                await asyncio.sleep(0)  # the first piece passes: the client takes it
            for name, value in state.items():
                setattr(client, name, value)  # then it is gone, or slow
            await streamer.steps.put(_event(1))
            assert await relay.done == why
            assert client.written == [chunk(_event(0))]  # nothing more to one that cannot take it
            await streamer.steps.put(END)
            rest = b"".join([piece async for piece in answer.content.iter_any()])
            assert rest == _event(1)  # the piece stayed for the usual loop

    run(check, loop)


def test_a_cancelled_task_gives_the_upstream_its_protocol_back(loop: str) -> None:
    async def check() -> None:
        async with streaming() as (streamer, answer), collector() as (_, client):
            transport = _upstream_transport(answer)
            aiohttp_protocol = transport.get_protocol()
            task = asyncio.ensure_future(
                relay_module.relay_rest(client, transport, answer, lambda piece: piece)
            )
            while transport.get_protocol() is aiohttp_protocol:
                await asyncio.sleep(0)  # until the task has put the relay in
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert transport.get_protocol() is aiohttp_protocol
            await streamer.steps.put(_event(0))
            await streamer.steps.put(END)
            rest = b"".join([piece async for piece in answer.content.iter_any()])
            assert rest == _event(0)  # aiohttp's protocol reads the stream again

    run(check, loop)


def test_a_stopped_relay_says_so_once(loop: str) -> None:
    async def check() -> None:
        async with streaming() as (streamer, answer), collector() as (_, client):
            relay = Relay(_upstream_transport(answer), answer.content, client, lambda p: p)
            relay.step_aside(STOPPED)
            relay.step_aside(ENDED)
            assert relay.done.result() == STOPPED
            await streamer.steps.put(END)

    run(check, loop)


# --- through the front: what the client gets is what the upstream sent --------------------


def _front_of(streamer: Streamer, book: UsageBook) -> Callable[[], Any]:
    @asynccontextmanager
    async def front() -> AsyncIterator[str]:
        up_runner, up_url = await serve(streamer.app())
        front_runner, front_url = await serve(
            make_app(up_url, KEY, healthy=lambda: True, usage=book)
        )
        try:
            yield front_url
        finally:
            await front_runner.cleanup()
            await up_runner.cleanup()

    return front


def _usage_and_done() -> bytes:
    usage = {"prompt_tokens": 7, "completion_tokens": 30, "total_tokens": 37}
    return f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode()


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_a_long_stream_through_the_front_arrives_whole_and_its_usage_is_counted(
    version: str, loop: str
) -> None:
    """HTTP/1.1: relayed after its first piece, chunk-framed; HTTP/1.0 (no chunked
    answers): the usual loop throughout. Either way the client's body is the upstream's
    events, the usage-only chunk the front asked for taken out, and its tokens counted."""
    streamer, book = Streamer(), UsageBook()
    made: list[Relay] = []
    real_init = Relay.__init__

    def recording(self: Relay, *args: Any, **kw: Any) -> None:
        made.append(self)
        real_init(self, *args, **kw)

    async def check() -> bytes:
        async with _front_of(streamer, book)() as url:
            where = URL(url)
            reader, writer = await asyncio.open_connection(where.host, where.port)
            body = json.dumps({"model": "m", "stream": True}).encode()
            writer.write(
                f"POST /v1/chat/completions HTTP/{version}\r\nHost: front\r\n".encode()
                + f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n".encode()
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            seen = b""
            for i in range(30):
                await streamer.steps.put(_event(i))
                while _event(i) not in seen:
                    seen += await reader.read(65536)
            await streamer.steps.put(_usage_and_done())
            await streamer.steps.put(END)
            while True:
                more = await reader.read(65536)
                if not more:
                    break
                seen += more
                if version == "1.1" and seen.endswith(b"0\r\n\r\n"):
                    break
            writer.close()
            while book.snapshot().keys.get("default") is None:
                await asyncio.sleep(0)  # the front records the request as it ends
            return seen

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Relay, "__init__", recording)
        seen = run(check, loop)
    head, _, body = seen.partition(b"\r\n\r\n")
    events = b"".join(map(_event, range(30))) + b"data: [DONE]\n\n"
    if version == "1.1":
        assert b"transfer-encoding: chunked" in head.lower()
        assert made and sum(r.pieces for r in made) >= 29  # all but the first piece
        assert _unchunk(body) == events
    else:
        assert made == []
        assert body == events
    used = book.snapshot().keys["default"]
    assert (used.requests, used.errors, used.tokens_in, used.tokens_out) == (1, 0, 7, 30)


def _unchunk(body: bytes) -> bytes:
    out, at = bytearray(), 0
    while True:
        end = body.index(b"\r\n", at)
        size = int(body[at:end], 16)
        if size == 0:
            return bytes(out)
        out += body[end + 2 : end + 2 + size]
        at = end + 2 + size + 2


def test_the_scanner_passes_plain_pieces_as_they_came_and_reads_the_rest() -> None:
    scanner = StreamScanner(strip=True)
    plain = _event(1) + _event(2)
    assert scanner.feed(plain) is plain
    assert scanner.feed(b'data: {"choi') == b""  # half an event waits for its end
    assert scanner.feed(b'ces": []}\n\n' + _event(3)) == b'data: {"choices": []}\n\n' + _event(3)
    assert scanner.feed(_usage_and_done()) == b"data: [DONE]\n\n"
    assert scanner.tokens == (7, 30) and scanner.ended


def test_a_client_that_reads_slowly_holds_a_bounded_buffer_and_gets_the_whole_stream(
    loop: str,
) -> None:
    """An upstream offering 8 MiB at once to a client that reads 4 KiB at a time: the
    relay steps aside for it (SLOW) and the front waits for the client's connection to
    drain before it reads on, so what the front holds for that client stays near the
    drain limit instead of the whole answer (a stranger's stream that is never read
    costs the front no memory)."""
    streamer, book = Streamer(), UsageBook()
    made: list[Relay] = []
    real_init = Relay.__init__
    piece = b"data: " + b"x" * (64 * 1024 - 8) + b"\n\n"
    pieces = 128

    def recording(self: Relay, *args: Any, **kw: Any) -> None:
        made.append(self)
        real_init(self, *args, **kw)

    async def check() -> tuple[bytes, int, list[str]]:
        async with _front_of(streamer, book)() as url:
            where = URL(url)
            reader, writer = await asyncio.open_connection(where.host, where.port, limit=2**16)
            body = json.dumps({"model": "m", "stream": True}).encode()
            writer.write(
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: front\r\n"
                f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            for _ in range(pieces):
                await streamer.steps.put(piece)
            await streamer.steps.put(b"data: [DONE]\n\n")
            await streamer.steps.put(END)
            seen, held = bytearray(), 0
            while not seen.endswith(b"0\r\n\r\n"):
                seen += await reader.read(4 * 1024)
                for _ in range(4):  # the client gives the front and the upstream their turns
                    await asyncio.sleep(0)
                held = max([held, *(r.client.get_write_buffer_size() for r in made)])
            writer.close()
            return bytes(seen), held, [r.done.result() for r in made if r.done.done()]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Relay, "__init__", recording)
        seen, held, why = run(check, loop)
    _, _, body = seen.partition(b"\r\n\r\n")
    assert _unchunk(body) == piece * pieces + b"data: [DONE]\n\n"
    assert SLOW in why, why
    # Held here: 70-270 KB (the limit, and a socket read's worth of pieces past it);
    # without the front's wait for the drain: 0.79-0.86 MB (8 runs on each loop).
    assert held < 8 * relay_module.CLIENT_BUFFER_LIMIT, held


def test_the_end_of_a_stream_is_seen_in_a_piece_of_its_own() -> None:
    """``[DONE]`` alone in a piece is whole events with no usage: the scanner must still
    read it (a client that closes after it then had the whole answer: 200, not 499)."""
    scanner = StreamScanner(strip=False)
    assert scanner.feed(_event(1)) == _event(1) and not scanner.ended
    assert scanner.feed(b"data: [DONE]\n\n") == b"data: [DONE]\n\n"
    assert scanner.ended
