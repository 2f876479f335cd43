"""An in-memory stand-in for torch's TCPStore, shared by threads (one per node): the calls
the pre-flight's and the doctor's meetings make."""

from __future__ import annotations

import threading


class Store:
    """The TCPStore's calls the meeting makes, in memory, shared by threads. Once
    ``closed`` (rank 0, its holder, has left) every call fails, as a real client's does."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, bytes] = {}
        self.counts: dict[str, int] = {}
        self.closed = False

    def _open(self) -> None:
        if self.closed:
            raise RuntimeError("Failed to recv, got 0 bytes: the store's holder has left")

    def set(self, key: str, value: str) -> None:
        with self.lock:
            self._open()
            self.data[key] = value.encode()

    def get(self, key: str) -> bytes:
        with self.lock:
            self._open()
            return self.data[key]

    def check(self, keys: list[str]) -> bool:
        with self.lock:
            self._open()
            return all(k in self.data for k in keys)

    def add(self, key: str, amount: int) -> int:
        with self.lock:
            self._open()
            self.counts[key] = self.counts.get(key, 0) + amount
            return self.counts[key]


class Prefixed:
    """torch's PrefixStore over a ``Store``: every key under ``prefix/``."""

    def __init__(self, prefix: str, store: Store) -> None:
        self.prefix, self.store = prefix, store

    def set(self, key: str, value: str) -> None:
        self.store.set(f"{self.prefix}/{key}", value)

    def get(self, key: str) -> bytes:
        return self.store.get(f"{self.prefix}/{key}")

    def check(self, keys: list[str]) -> bool:
        return self.store.check([f"{self.prefix}/{k}" for k in keys])

    def add(self, key: str, amount: int) -> int:
        return self.store.add(f"{self.prefix}/{key}", amount)
