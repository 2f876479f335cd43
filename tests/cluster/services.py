"""A service from the login namespace, as a user drives it: `vllm-hpc service ... --json`,
its key and READY replicas, the real `openai` client through its front, a plain GET on
the front (its `/metrics`), and a request loop through it. Used by the service test
modules."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from launchers import waits

from . import api
from .jobs import EAGER_VLLM_ARGS

# vllm serve's arguments of every replica the service modules start (12 starts): eager,
# these modules are about the service, not vLLM's compile (which the jobs' tests keep).
REPLICA_ARGS = tuple(EAGER_VLLM_ARGS.split())


def svc(env: dict[str, str], *args: str, code: int = 0, timeout: float = 300) -> Any:
    """`vllm-hpc service SUB ARGS --json`, its exit code checked, its output parsed."""
    head, sep, tail = list(args), [], []
    if "--" in args:  # vllm serve's arguments stay last
        cut = args.index("--")
        head, sep, tail = list(args[:cut]), ["--"], list(args[cut + 1 :])
    done = api.cli(env, "service", *head, "--json", *sep, *tail, timeout=timeout)
    assert done.returncode == code, f"service {' '.join(args)}: {done.stderr[-3000:]}"
    return json.loads(done.stdout)


def wait_status(
    env: dict[str, str], name: str, what: str, timeout: float, ok: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """`service status NAME --json` once ``ok(row)``: the row (the wait helper's error, with
    the last row, after ``timeout``)."""

    def look() -> dict[str, Any] | None:
        row = svc(env, "status", name)
        return row if ok(row) else None

    return waits.wait_for(
        look, what=what, timeout=timeout, interval=2.0,
        detail=lambda: f"; last: {json.dumps(svc(env, 'status', name))}"[:4000],
    ).value  # fmt: skip


def key_of(row: dict[str, Any]) -> str:
    """The service's API key (``key`` in its directory)."""
    return Path(row["directory"], "key").read_text().strip()


def ready_jobs(row: dict[str, Any]) -> list[str]:
    """The job ids of the service's READY replicas that are not draining, sorted."""
    return sorted(
        r["job_id"] for r in row["replicas"] if r["state"] == "READY" and r["role"] != "draining"
    )


@dataclass
class Load:
    """Requests in a loop through the front, counted (stopped with ``stop``)."""

    client: openai.OpenAI
    model: str
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = self.client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": "Hello"}],
                    temperature=0, max_tokens=8,
                )  # fmt: skip
                assert answer.choices[0].message.content
                self.ok += 1
            except Exception as exc:
                self.failed.append(f"{type(exc).__name__}: {exc}"[:300])

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=120)


def client(row: dict[str, Any], key: str | None = None) -> openai.OpenAI:
    """The `openai` client of the service's front, with its key (or ``key``), no retries."""
    return openai.OpenAI(base_url=row["url"], api_key=key or key_of(row), max_retries=0)


def front_get(row: dict[str, Any], path: str, key: str | None = None) -> tuple[int, str]:
    """``GET path`` on the service's front (its URL without ``/v1``), with ``key`` as the
    bearer token (none without): the status and the body. No proxy variable is read."""
    parts = urllib.parse.urlsplit(str(row["url"]).removesuffix("/v1"))
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=30)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        conn.request("GET", path, headers=headers)
        answer = conn.getresponse()
        return int(answer.status), answer.read().decode(errors="replace")
    finally:
        conn.close()
