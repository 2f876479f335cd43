"""What each key used: requests, errors, and tokens in and out, counted by the front from
the answers' own ``usage``, kept in ``usage.json`` (the front is its one writer; ``service
key list`` reads it).

- An answer read whole (not streamed): the ``usage`` of its JSON body (chat and text
  completions, embeddings: ``prompt_tokens`` / ``completion_tokens``; responses:
  ``input_tokens`` / ``output_tokens``).
- A stream of chat or text completions: the front asks for the usage chunk
  (``stream_options.include_usage``) when the client did not (``ask_for_usage``), and
  then takes that chunk out of what the client gets (``StreamScanner``): the client sees
  the stream it asked for. A stream of responses ends with its ``response.completed``
  event, which carries the usage.

Pure but for ``UsageBook.save``/``load`` (its counters are shared by the proxy's event
loop and the heartbeat's thread: a lock).
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

from pydantic import Field

from launchers import jobdir
from launchers.defaults import FRONT_MAX_EVENT_BYTES
from launchers.jobdir import jobfiles
from launchers.jobdir.jobfiles import JobFile, Record

# Where a stream of chat or text completions may be asked for its usage chunk.
STREAM_USAGE_PATHS = ("/v1/chat/completions", "/v1/completions")
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class KeyUsage(Record):
    requests: int = 0
    errors: int = 0  # answers of 400 and above (the front's own refusals after the key included)
    tokens_in: int = 0
    tokens_out: int = 0
    last_used: float | None = None


class UsageFile(JobFile):
    """``usage.json``: per key label, since the service began (fronts carry it on)."""

    keys: dict[str, KeyUsage] = Field(default_factory=dict)
    updated_at: float = 0.0


def tokens_of(data: Any) -> tuple[int, int] | None:
    """(in, out) from an answer's JSON (or one event of a stream), or None when it carries
    no usage. Pure."""
    if not isinstance(data, dict):
        return None
    usage = data.get("usage")
    if data.get("type") == "response.completed" and isinstance(data.get("response"), dict):
        usage = data["response"].get("usage")
    if not isinstance(usage, dict):
        return None

    def count(*names: str) -> int:
        for name in names:
            value = usage.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
        return 0

    return count("prompt_tokens", "input_tokens"), count("completion_tokens", "output_tokens")


def ask_for_usage(path: str, body: bytes | None) -> tuple[bytes | None, bool]:
    """The body to forward, and whether the stream's usage chunk is the front's to take
    out: a streamed chat or text completion whose client did not ask for usage gets
    ``stream_options.include_usage`` set. Anything else passes as it came. Pure."""
    if path not in STREAM_USAGE_PATHS or not body or b'"stream"' not in body:
        return body, False
    try:
        data = json.loads(body)
    except ValueError:
        return body, False
    if not isinstance(data, dict) or data.get("stream") is not True:
        return body, False
    options = data.get("stream_options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        return body, False  # vLLM refuses it: its answer says why
    if options.get("include_usage") is True:
        return body, False
    data["stream_options"] = {**options, "include_usage": True}
    return json.dumps(data).encode(), True


def _plain(chunk: bytes) -> bool:
    """Whether ``chunk`` is whole events of which none is the scanner's business (no
    usage, no end of stream): at a GPU's pace nearly every piece of a stream. Pure."""
    return (
        chunk.endswith((b"\n\n", b"\r\n\r\n", b"\r\r"))
        and b"usage" not in chunk
        and b"[DONE]" not in chunk
    )


class StreamScanner:
    """Reads a stream of server-sent events as it passes: ``feed`` returns the bytes to
    pass on now (whole events; the rest waits for its end), ``finish`` what is left.
    ``tokens``: the last usage seen (a stream's usage is cumulative). With ``strip``, the
    usage-only chunk (no choices) is taken out. An event longer than
    FRONT_MAX_EVENT_BYTES is passed on unread."""

    def __init__(self, strip: bool, max_event: int = FRONT_MAX_EVENT_BYTES) -> None:
        self.strip = strip
        self.max_event = max_event
        self.tokens: tuple[int, int] | None = None
        self.ended = False  # the stream's own end (``data: [DONE]``) has passed
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._pending and _plain(chunk):
            return chunk  # whole events, none to read: passed as they came
        data = self._pending + chunk
        out = bytearray()
        start = 0
        for end in _EVENT_END.finditer(data):
            event = data[start : end.end()]
            start = end.end()
            if self._keep(event):
                out += event
        self._pending = data[start:]
        if len(self._pending) > self.max_event:
            out += self._pending
            self._pending = b""
        return bytes(out)

    def finish(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest if rest and self._keep(rest) else b""

    def _keep(self, event: bytes) -> bool:
        payload = b"".join(
            line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")
        )
        if payload == b"[DONE]":
            self.ended = True
        if not payload or payload == b"[DONE]" or b"usage" not in payload:
            return True
        try:
            data = json.loads(payload)
        except ValueError:
            return True
        tokens = tokens_of(data)
        if tokens is None:
            return True
        self.tokens = tokens
        usage_only = isinstance(data, dict) and not data.get("choices") and "type" not in data
        return not (self.strip and usage_only)


class UsageBook:
    """The counters of one front, per key label, on top of what ``usage.json`` said when
    it started; ``save`` writes them when they changed."""

    def __init__(self, start: UsageFile | None = None) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, KeyUsage] = dict(start.keys) if start is not None else {}
        self._changed = False

    @classmethod
    def load(cls, path: str) -> UsageBook:
        return cls(jobfiles.read(path, UsageFile))

    def record(
        self, label: str, status: int, tokens: tuple[int, int] | None, now: float | None = None
    ) -> None:
        tokens_in, tokens_out = tokens or (0, 0)
        with self._lock:
            was = self._keys.get(label, KeyUsage())
            self._keys[label] = KeyUsage(
                requests=was.requests + 1, errors=was.errors + (status >= 400),
                tokens_in=was.tokens_in + tokens_in, tokens_out=was.tokens_out + tokens_out,
                last_used=time.time() if now is None else now,
            )  # fmt: skip
            self._changed = True

    def snapshot(self) -> UsageFile:
        with self._lock:
            return UsageFile(keys=dict(self._keys), updated_at=time.time())

    def save(self, path: str) -> bool:
        """Write ``usage.json`` if anything was counted since the last save; True if it
        wrote."""
        with self._lock:
            if not self._changed:
                return False
            self._changed = False
            current = UsageFile(keys=dict(self._keys), updated_at=time.time())
        try:
            jobdir.write_json(path, current.model_dump(mode="json"))
        except BaseException:
            with self._lock:
                self._changed = True
            raise
        return True


def read_usage(path: str) -> UsageFile:
    return jobfiles.read(path, UsageFile) or UsageFile()


_USAGE_KEY = re.compile(rb'"usage"\s*:\s*')


def tokens_in_body(body: bytes) -> tuple[int, int] | None:
    """(in, out) from a whole JSON answer: its last ``"usage":`` object (vLLM writes it
    last; inside a JSON string the quotes would be escaped), decoded alone, so a large
    answer (embeddings) is not parsed whole. Pure."""
    at = body.rfind(b'"usage"')
    if at < 0:
        return None
    found = _USAGE_KEY.match(body, at)
    if found is None:
        return None
    try:
        usage, _ = json.JSONDecoder().raw_decode(body[found.end() :].decode("utf-8", "replace"))
    except ValueError:
        return None
    return tokens_of({"usage": usage})
