"""A service's keys, one per user: ``keys.json`` (0600, in the service directory) holds
each key's label, kind, when it was made and revoked, and the SHA-256 of the key, never
the key itself (``service key add`` prints it once).

A key is 32 random bytes (``secrets.token_urlsafe``). One SHA-256 is the right hash for
such a token: a slow password hash guards secrets people choose and others can guess;
nobody guesses 256 random bits, and the front hashes every request's key.

The front accepts any live key of kind ``user`` on the model routes, and forwards with
the service's internal key (``key``), which the replicas and the router know; users
never see it. A ``scrape`` key reads the front's ``/metrics`` only, as does the internal
key (the owner's: it reaches every replica anyway). A service made before keys were per
user had one key, the internal one: it becomes the key labelled ``default``
(``ensure_keys``), so its clients keep working until the owner revokes it (then the
front refuses it; the replicas, which share it, still accept it directly).

``KeyRing`` is the front's copy: it looks at the file's inode, size and mtime before
every request and re-reads it when one changed (and every FRONT_KEYS_REFRESH_SECONDS
anyway), so a revoked key is refused from the next request on, without a restart. A
file it cannot read accepts nobody.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, ValidationError

from launchers import jobdir
from launchers.defaults import (
    FRONT_KEYS_REFRESH_SECONDS,
    FRONT_MAX_TOKEN_CHARS,
    SERVICE_DEFAULT_KEY_LABEL,
)
from launchers.errors import InputError
from launchers.jobdir.jobfiles import JobFile, Record
from launchers.jobdir.paths import ServiceDir
from launchers.jobdir.safe import create_private_file, read_private_text

KeyKind = Literal["user", "scrape"]
LABEL_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}", re.ASCII)
LABEL_RULE = "a lowercase letter or digit, then up to 31 lowercase letters, digits, '.', '_' or '-'"
# RFC 6750's b64token, bounded: what a bearer token may be at all. Anything else (other
# bytes, spaces inside, a huge header) is refused before it is hashed.
_TOKEN_RE = re.compile(rf"[A-Za-z0-9._~+/=-]{{1,{FRONT_MAX_TOKEN_CHARS}}}", re.ASCII)
_HEX64 = r"[0-9a-f]{64}"


class KeyRecord(Record):
    """One key: who it is for (``label``), what it may do, and its hash."""

    label: str = Field(pattern=LABEL_RE.pattern)
    kind: KeyKind = "user"
    sha256: str = Field(pattern=_HEX64)
    created_at: float
    revoked_at: float | None = None

    @property
    def live(self) -> bool:
        return self.revoked_at is None


class KeyFile(JobFile):
    """``keys.json``: every key the service ever had (revoked ones are kept, marked)."""

    keys: tuple[KeyRecord, ...] = ()

    def find(self, label: str) -> KeyRecord | None:
        return next((k for k in self.keys if k.label == label), None)


def digest(token: str) -> str:
    """The SHA-256 (hex) of a key, as ``keys.json`` keeps it."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` value, or None when the value is
    anything else: another scheme, no token, a token with a character no key has, or
    one longer than FRONT_MAX_TOKEN_CHARS. Pure, and cheap before any hashing."""
    if not header or len(header) > FRONT_MAX_TOKEN_CHARS + 16:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip(" \t")
    if scheme.lower() != "bearer" or not _TOKEN_RE.fullmatch(token):
        return None
    return token


def check_label(label: str) -> str:
    if not LABEL_RE.fullmatch(label):
        raise InputError(
            f"LABEL: {label[:40]!r} is not a key label ({LABEL_RULE})", fix="e.g. alice"
        )
    return label


def read_keys(path: str) -> KeyFile | None:
    """``keys.json`` (ours, 0600, no symlink: ``read_private_text``); None when missing.
    A file that is there but unreadable or not this format is bad input."""
    try:
        text = read_private_text(path, "service keys")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"service keys: cannot read {path}: {exc.strerror or exc}") from None
    try:
        return KeyFile.model_validate(json.loads(text))
    except (ValueError, ValidationError):
        raise InputError(
            f"service keys: {path} is not a key file of this vllm-hpc",
            fix="use the vllm-hpc that made it",
        ) from None


def _write(path: str, keys: KeyFile) -> None:
    jobdir.write_json(path, keys.model_dump(mode="json"))  # mkstemp: 0600, then renamed


def ensure_keys(service_dir: str, internal_key: str, now: float | None = None) -> KeyFile:
    """``keys.json``, made when missing from the service's internal key (label
    ``default``): a service from before keys were per user keeps its one key. Made with
    ``O_EXCL``, so a front starting and a ``key add`` at once do not overwrite each
    other."""
    path = ServiceDir(service_dir).keys
    found = read_keys(path)
    if found is not None:
        return found
    first = KeyFile(keys=(KeyRecord(label=SERVICE_DEFAULT_KEY_LABEL, sha256=digest(internal_key),
                                    created_at=time.time() if now is None else now),))  # fmt: skip
    text = json.dumps(first.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    if create_private_file(path, text):
        return first
    return read_keys(path) or first


def add_key(
    service_dir: str, internal_key: str, label: str, kind: KeyKind = "user",
    now: float | None = None,
) -> str:  # fmt: skip
    """A new key for ``label``: its hash goes into ``keys.json``, the key is returned
    (and kept nowhere). A live key of that label is refused; a revoked one is replaced
    (a new key for the same user: usage goes on under the label)."""
    check_label(label)
    keys = ensure_keys(service_dir, internal_key)
    held = keys.find(label)
    if held is not None and held.live:
        raise InputError(
            f"LABEL: {label} already has a live key",
            fix=f"revoke it first (vllm-hpc service key revoke NAME {label}), or choose "
            "another label",
        )
    token = secrets.token_urlsafe(32)
    record = KeyRecord(label=label, kind=kind, sha256=digest(token),
                       created_at=time.time() if now is None else now)  # fmt: skip
    kept = tuple(k for k in keys.keys if k.label != label)
    _write(ServiceDir(service_dir).keys, keys.model_copy(update={"keys": (*kept, record)}))
    return token


def revoke_key(
    service_dir: str, internal_key: str, label: str, now: float | None = None
) -> KeyRecord:
    """Mark ``label``'s key revoked (the front refuses it from the next request on)."""
    check_label(label)
    keys = ensure_keys(service_dir, internal_key)
    held = keys.find(label)
    if held is None or not held.live:
        live = ", ".join(k.label for k in keys.keys if k.live) or "none"
        said = "is revoked already" if held is not None else "has no key"
        raise InputError(f"LABEL: {label} {said} (live keys: {live})",
                         fix="vllm-hpc service key list NAME")  # fmt: skip
    revoked = held.model_copy(update={"revoked_at": time.time() if now is None else now})
    updated = tuple(revoked if k.label == label else k for k in keys.keys)
    _write(ServiceDir(service_dir).keys, keys.model_copy(update={"keys": updated}))
    return revoked


@dataclass(frozen=True)
class Caller:
    """Who a request's key says it comes from: a live key's label and kind; ``internal``
    when it is the service's internal key (whatever ``keys.json`` says of ``default``)."""

    label: str
    kind: KeyKind | None
    internal: bool = False

    @property
    def may_use_model(self) -> bool:
        return self.kind == "user"

    @property
    def may_scrape(self) -> bool:
        return self.kind == "scrape" or self.internal


INTERNAL_LABEL = "internal"  # the metrics' label of a request made with the internal key


class KeyRing:
    """The front's view of ``keys.json``: ``caller(header)`` in constant time over every
    live key, the file re-read when it changed (inode, size or mtime, looked at before
    every request) or when the last read is ``refresh`` seconds old. A file that cannot
    be read accepts no user key (and says so once in the log)."""

    def __init__(
        self,
        path: str,
        internal_key: str,
        *,
        refresh: float = FRONT_KEYS_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] = print,
    ) -> None:
        self.path = path
        self._internal = hashlib.sha256(internal_key.encode()).digest()
        self._refresh = refresh
        self._clock = clock
        self._log = log
        self._seen: tuple[int, int, int] | None = None
        self._loaded_at = -float("inf")
        self._live: tuple[tuple[bytes, KeyRecord], ...] = ()
        self._complaint = ""

    @classmethod
    def of_key(cls, internal_key: str) -> KeyRing:
        """A ring that knows only the internal key, as ``default`` (no file)."""
        ring = cls("", internal_key)
        record = KeyRecord(label=SERVICE_DEFAULT_KEY_LABEL, sha256=digest(internal_key),
                           created_at=0.0)  # fmt: skip
        ring._live = ((bytes.fromhex(record.sha256), record),)
        ring._loaded_at = float("inf")
        return ring

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return None
        return info.st_ino, info.st_size, info.st_mtime_ns

    def _current(self) -> tuple[tuple[bytes, KeyRecord], ...]:
        if not self.path:
            return self._live
        seen = self._signature()
        now = self._clock()
        if seen == self._seen and now - self._loaded_at < self._refresh:
            return self._live
        self._seen, self._loaded_at = seen, now
        try:
            keys = read_keys(self.path)
            complaint = "" if keys is not None else f"{self.path} is missing"
        except InputError as exc:
            keys, complaint = None, exc.one_line()
        if complaint and complaint != self._complaint:
            self._log(f"service keys: {complaint}: no user key is accepted until it is fixed")
        self._complaint = complaint
        records = keys.keys if keys is not None else ()
        self._live = tuple((bytes.fromhex(k.sha256), k) for k in records if k.live)
        return self._live

    def caller(self, header: str | None) -> Caller | None:
        """Whose key ``header`` (an Authorization value) carries, or None: no bearer
        token, or one that is no live key nor the internal key. Every live key is
        compared (``hmac.compare_digest``), whichever matches."""
        token = bearer_token(header)
        if token is None:
            return None
        given = hashlib.sha256(token.encode()).digest()
        found: KeyRecord | None = None
        for hashed, record in self._current():
            if hmac.compare_digest(given, hashed):
                found = record
        internal = hmac.compare_digest(given, self._internal)
        if found is not None:
            return Caller(found.label, found.kind, internal)
        if internal:
            return Caller(INTERNAL_LABEL, None, True)
        return None

    def labels(self) -> tuple[str, ...]:
        return tuple(record.label for _, record in self._current())
