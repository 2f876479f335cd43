"""A stand-in for the parts of torch and torch.distributed the pre-flight and the doctor
use (the unit tests' Python has no torch): the nodes' store in memory (threads are the
nodes), and a process group whose all-reduce sums as a real one does, or blocks until
released (a collective over a dropped link)."""

from __future__ import annotations

import sys
import threading
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from .store import Prefixed, Store


class Tensor:
    """Every element the same ``value``, as the pre-flight's tensors are (``ones``)."""

    def __init__(self, size: int, value: float = 1.0) -> None:
        self.size, self.value = size, value

    def item(self) -> float:
        return self.value

    def __getitem__(self, _: int) -> Tensor:
        return Tensor(1, self.value)


class Distributed(ModuleType):
    """torch.distributed: ``TCPStore`` is one in-memory store for every node; the
    process group of ``init_process_group`` sums over its world (or to ``sums``), and,
    when ``hang`` is given, each all-reduce after the first ``hang_after`` waits for it
    to be set (what one over a dropped link does). ``calls``: the all-reduces asked."""

    def __init__(
        self, hang: threading.Event | None = None, sums: float | None = None, hang_after: int = 0
    ) -> None:
        super().__init__("torch.distributed")
        self.store = Store()
        self.hang, self.sums, self.hang_after = hang, sums, hang_after
        self.world = 0
        self.groups: list[dict[str, Any]] = []
        self.calls = 0
        self.destroyed = False

    def TCPStore(self, *_: Any, **__: Any) -> Store:
        return self.store

    def PrefixStore(self, prefix: str, store: Any) -> Prefixed:
        return Prefixed(prefix, store)

    def init_process_group(self, backend: str, **kwargs: Any) -> None:
        self.world = int(kwargs["world_size"])
        self.groups.append({"backend": backend, **kwargs})

    def all_reduce(self, tensor: Tensor) -> None:
        self.calls += 1
        if self.hang is not None and self.calls > self.hang_after:
            self.hang.wait()
        tensor.value = tensor.value * self.world if self.sums is None else self.sums

    def barrier(self) -> None:
        pass

    def destroy_process_group(self) -> None:
        self.destroyed = True


def install(monkeypatch: pytest.MonkeyPatch, dist: Distributed) -> ModuleType:
    """``import torch`` and ``import torch.distributed`` give the stand-ins (CPU only)."""
    torch = ModuleType("torch")
    torch.distributed = dist  # type: ignore[attr-defined]
    torch.float32 = "float32"  # type: ignore[attr-defined]
    torch.ones = lambda size, **_: Tensor(size)  # type: ignore[attr-defined]
    torch.cuda = SimpleNamespace(is_available=lambda: False, synchronize=lambda: None)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch.distributed", dist)
    return torch
