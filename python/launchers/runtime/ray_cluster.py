"""Ray on the allocated nodes: start the head or a worker, and watch who is alive.

The watch runs ``python -m launchers.runtime.ray_watch`` as a child (Ray's own GCS client), so
the runtime never imports Ray and a hung query cannot hang the runtime.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from launchers import _proc


@dataclass(frozen=True)
class RayMember:
    ip: str
    name: str
    gpus: float


@dataclass(frozen=True)
class Snapshot:
    alive: tuple[RayMember, ...] | None  # None: the GCS did not answer
    error: str | None
    at: float

    @property
    def count(self) -> int:
        return len(self.alive or ())

    @property
    def gpus(self) -> float:
        return sum(n.gpus for n in self.alive or ())


class RayWatcher:
    """Follows the alive nodes of the cluster at ``address`` (host:port)."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str], log_path: str) -> None:
        """``argv`` runs ``python -m launchers.runtime.ray_watch HOST:PORT`` (maybe in an
        image)."""
        self.child = _proc.start_piped("ray-watch", argv, env=env, log_path=log_path)
        self._latest = Snapshot(None, "no answer yet", time.monotonic())
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name="ray-watch", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        stream = self.child.popen.stdout
        assert stream is not None
        for raw in stream:
            try:
                data = json.loads(raw)
            except ValueError:
                continue
            alive = data.get("alive")
            nodes = (
                tuple(RayMember(str(n["ip"]), str(n["name"]), float(n["gpus"])) for n in alive)
                if isinstance(alive, list)
                else None
            )
            with self._lock:
                self._latest = Snapshot(nodes, data.get("error"), time.monotonic())

    def latest(self) -> Snapshot:
        with self._lock:
            return self._latest

    def running(self) -> bool:
        return self.child.poll() is None

    def stop(self, grace: float = 1.0) -> None:
        self.child.stop(grace=grace)


def start_ray(
    name: str, argv: Sequence[str], *, env: Mapping[str, str], log_path: str
) -> _proc.Child:
    """``ray start ... --block`` (argv ready to run) as a child stopped as a tree."""
    return _proc.start(name, argv, env=env, log_path=log_path)
