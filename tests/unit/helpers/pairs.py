"""A stand-in peer for the pair checks (``collective.probe``, ``collective.measure``):
it acknowledges small messages and never reads a large one, what a smaller MTU on the
way does to large frames."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def small_only_peer(answers: int = 1) -> Iterator[tuple[str, int]]:
    """A listener on loopback, its address yielded: on its first connection it
    acknowledges ``answers`` small messages (a ``!I`` length, then that many bytes) with
    ``b"k"``, then holds the connection and reads nothing more. Closed on exit."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    done = threading.Event()

    def answer_small_only() -> None:
        conn, _ = server.accept()
        with conn:
            for _ in range(answers):
                (size,) = struct.unpack("!I", conn.recv(4))
                conn.recv(size)
                conn.sendall(b"k")
            done.wait(10)  # holds the connection, reads nothing more

    threading.Thread(target=answer_small_only, daemon=True).start()
    try:
        yield ("127.0.0.1", server.getsockname()[1])
    finally:
        done.set()
        server.close()
