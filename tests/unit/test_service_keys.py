"""A key per user (launchers.service.keys, `vllm-hpc service key`): only hashes are
kept (0600), a revoked key is refused from the next request on without a restart, the
check goes over every live key in constant time, odd and hostile Authorization values
are refused before any hashing, and a service of before per-user keys keeps its one key
as `default`."""

from __future__ import annotations

import hmac
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from launchers import jobdir
from launchers.defaults import FRONT_MAX_TOKEN_CHARS, SERVICE_DEFAULT_KEY_LABEL
from launchers.errors import InputError
from launchers.jobdir.paths import ServiceDir
from launchers.service import keys, store
from launchers.service.definition import SERVICE_FORMAT
from launchers.service.manage import Services
from launchers.service.usage import UsageBook

from .conftest import service_spec
from .helpers.cli import run as cli_run

V2 = Path(__file__).with_name("golden") / "service.v2.json"


def a_service(root: Path, name: str = "llama") -> tuple[str, str]:
    """A service directory as `service up` leaves it before keys.json (format 2's
    files): its spec and its internal key. Returns the directory and the key."""
    directory = root / "services" / name
    jobdir.safe.private_dir(directory, "service directory")
    key_file = ServiceDir(str(directory)).key
    jobdir.ensure_secret(key_file, "service key")
    store.write_spec(str(directory), service_spec(name=name, key_file=key_file))
    return str(directory), Path(key_file).read_text().strip()


def bearer(token: str) -> str:
    return f"Bearer {token}"


# --- keys.json: hashes only, 0600, `default` from the internal key ----------------------


def test_a_new_key_is_returned_once_and_only_its_hash_is_kept(tmp_path: Path) -> None:
    directory, internal = a_service(tmp_path)
    token = keys.add_key(directory, internal, "alice")
    path = Path(ServiceDir(directory).keys)
    text = path.read_text()
    assert token not in text and internal not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    held = keys.read_keys(str(path))
    assert held is not None
    assert [(k.label, k.kind, k.sha256) for k in held.keys] == [
        (SERVICE_DEFAULT_KEY_LABEL, "user", keys.digest(internal)),
        ("alice", "user", keys.digest(token)),
    ]
    assert len(token) >= 43  # 32 random bytes


def test_a_service_without_keys_json_keeps_its_one_key_as_default(tmp_path: Path) -> None:
    directory, internal = a_service(tmp_path)
    assert not os.path.exists(ServiceDir(directory).keys)
    ring = keys.KeyRing(ServiceDir(directory).keys, internal)
    before = ring.caller(bearer(internal))  # no file yet: no user key (fail closed)
    assert before is not None and not before.may_use_model and before.may_scrape
    keys.ensure_keys(directory, internal)
    caller = ring.caller(bearer(internal))
    assert caller == keys.Caller(SERVICE_DEFAULT_KEY_LABEL, "user", internal=True)
    assert caller.may_use_model and caller.may_scrape


def test_a_format_2_service_reads_in_the_current_format(tmp_path: Path) -> None:
    directory = tmp_path / "chat"
    directory.mkdir(mode=0o700)
    Path(ServiceDir(str(directory)).spec).write_text(V2.read_text())
    spec = store.read_spec(str(directory))
    assert spec.format == SERVICE_FORMAT
    assert spec.request.registry == ("/shared/site-models.yaml",)
    assert spec.key_file == "/shared/jobs/services/chat/api_key"  # the internal key, as it was


@pytest.mark.parametrize("label", ["", "Alice", "-x", "a b", "a/b", "x" * 33, "a\nb", "é"])
def test_a_bad_label_is_refused(tmp_path: Path, label: str) -> None:
    directory, internal = a_service(tmp_path)
    with pytest.raises(InputError, match="LABEL: .* is not a key label"):
        keys.add_key(directory, internal, label)


def test_a_live_label_is_not_given_a_second_key(tmp_path: Path) -> None:
    directory, internal = a_service(tmp_path)
    keys.add_key(directory, internal, "alice")
    with pytest.raises(InputError, match="alice already has a live key"):
        keys.add_key(directory, internal, "alice")


def test_a_key_file_others_can_read_is_refused_by_the_cli_and_accepts_nobody_at_the_front(
    tmp_path: Path,
) -> None:
    directory, internal = a_service(tmp_path)
    token = keys.add_key(directory, internal, "alice")
    path = ServiceDir(directory).keys
    os.chmod(path, 0o644)
    with pytest.raises(InputError, match="can be read by other users"):
        keys.read_keys(path)
    said: list[str] = []
    ring = keys.KeyRing(path, internal, log=said.append)
    assert ring.caller(bearer(token)) is None
    assert ring.caller(bearer(token)) is None
    assert len(said) == 1 and "no user key is accepted" in said[0]  # said once


# --- revoke: refused from the next request on ----------------------------------------------


def test_a_revoked_key_is_refused_at_the_next_request_without_a_restart(tmp_path: Path) -> None:
    directory, internal = a_service(tmp_path)
    alice = keys.add_key(directory, internal, "alice")
    bob = keys.add_key(directory, internal, "bob")
    # refresh never comes: only the file's change makes the ring read it again
    ring = keys.KeyRing(ServiceDir(directory).keys, internal, refresh=1e9)
    assert ring.caller(bearer(alice)) == keys.Caller("alice", "user")
    keys.revoke_key(directory, internal, "alice")
    assert ring.caller(bearer(alice)) is None
    assert ring.caller(bearer(bob)) == keys.Caller("bob", "user")
    # a new key for the same label: the old one stays refused
    again = keys.add_key(directory, internal, "alice")
    assert ring.caller(bearer(again)) == keys.Caller("alice", "user")
    assert ring.caller(bearer(alice)) is None


def test_the_file_is_read_again_after_refresh_though_its_stat_looks_the_same(
    tmp_path: Path,
) -> None:
    """An NFS client may show a cached mtime: the ring reads the file every refresh."""
    directory, internal = a_service(tmp_path)
    alice = keys.add_key(directory, internal, "alice")
    path = ServiceDir(directory).keys
    now = [0.0]
    ring = keys.KeyRing(path, internal, refresh=5.0, clock=lambda: now[0])
    assert ring.caller(bearer(alice)) is not None
    before = os.stat(path)
    revoked = Path(path).read_text().replace('"revoked_at": null', '"revoked_at": 9.00')
    assert len(revoked) == before.st_size  # same size, same inode (written in place)
    with open(path, "r+", encoding="utf-8") as fh:
        fh.write(revoked)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert ring.caller(bearer(alice)) is not None  # nothing told it yet
    now[0] = 5.0
    assert ring.caller(bearer(alice)) is None


def test_revoking_what_is_not_live_says_which_keys_are(tmp_path: Path) -> None:
    directory, internal = a_service(tmp_path)
    keys.add_key(directory, internal, "alice")
    keys.revoke_key(directory, internal, "alice")
    with pytest.raises(InputError, match=r"alice is revoked already \(live keys: default\)"):
        keys.revoke_key(directory, internal, "alice")
    with pytest.raises(InputError, match="carol has no key"):
        keys.revoke_key(directory, internal, "carol")


def test_revoking_default_leaves_the_internal_key_for_the_metrics_only(tmp_path: Path) -> None:
    directory, internal = a_service(tmp_path)
    keys.ensure_keys(directory, internal)
    keys.revoke_key(directory, internal, SERVICE_DEFAULT_KEY_LABEL)
    caller = keys.KeyRing(ServiceDir(directory).keys, internal).caller(bearer(internal))
    assert caller is not None and caller.kind is None and caller.internal
    assert not caller.may_use_model and caller.may_scrape


# --- the check: constant time over every live key, hostile values refused ------------------


def test_every_live_key_is_compared_whichever_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, internal = a_service(tmp_path)
    tokens = [keys.add_key(directory, internal, f"user{i}") for i in range(5)]
    keys.revoke_key(directory, internal, "user4")
    ring = keys.KeyRing(ServiceDir(directory).keys, internal)
    ring.labels()  # read the file first
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for token in (tokens[0], tokens[3], "x" * 43):
        compared.clear()
        ring.caller(bearer(token))
        assert len(compared) == 5 + 1  # default and user0-3, then the internal key
        assert all(len(a) == len(b) == 32 for a, b in compared)  # digests, never the key


def test_another_services_key_is_refused(tmp_path: Path) -> None:
    one, one_key = a_service(tmp_path, "one")
    two, two_key = a_service(tmp_path, "two")
    theirs = keys.add_key(two, two_key, "alice")
    keys.add_key(one, one_key, "alice")
    ring = keys.KeyRing(ServiceDir(one).keys, one_key)
    assert ring.caller(bearer(theirs)) is None
    assert ring.caller(bearer(two_key)) is None


ODD = [
    # (what the header holds, with KEY standing for a live key; accepted?)
    ("Bearer KEY", True),
    ("bearer KEY", True),
    ("BEARER KEY", True),
    ("Bearer  KEY", True),  # two spaces
    ("Bearer KEY \t", True),  # trailing whitespace (aiohttp strips it anyway)
    ("Bearer\tKEY", False),
    ("Basic KEY", False),
    ("KEY", False),
    ("Bearer", False),
    ("Bearer ", False),
    ("", False),
    ("Bearer KEYx", False),
    ("Bearer xKEY", False),
    ("Bearer KEY KEY", False),
    ("Bearer KEY,Bearer KEY", False),
    ("Bearer KEY\x00", False),
    ("Bearer KEY\r\nX: 1", False),
    ("Bearer %4bEY", False),  # percent-encoded: never decoded
    ("Bearer KEY\u200b", False),  # a zero-width space
    ("Bearer KEY\udcff", False),  # a byte that is no UTF-8, as aiohttp decodes it
    ("Bearer ＫＥＹ", False),  # fullwidth letters
    ("Bearer " + "A" * (FRONT_MAX_TOKEN_CHARS + 1), False),
    ("Bearer " + "A" * 1_000_000, False),
]


@pytest.mark.parametrize(("header", "ok"), ODD)
def test_odd_authorization_values(tmp_path: Path, header: str, ok: bool) -> None:
    directory, internal = a_service(tmp_path)
    token = keys.add_key(directory, internal, "alice")
    value = header.replace("KEY", token)
    if "%4bEY" in value:
        value = "Bearer " + "".join(f"%{ord(c):02x}" for c in token)
    if "ＫＥＹ" in value:
        value = "Bearer " + "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in token)
    caller = keys.KeyRing(ServiceDir(directory).keys, internal).caller(value)
    assert (caller == keys.Caller("alice", "user")) is ok, value[:80]


def test_a_huge_header_is_refused_before_it_is_scanned() -> None:
    assert keys.bearer_token("Bearer " + "A" * 10_000_000) is None


# --- the commands ----------------------------------------------------------------------------


def run(root: Path, *argv: str) -> tuple[int, str, str]:
    """`vllm-hpc service key ARGV --job-root ROOT`: exit code, stdout, stderr."""
    return cli_run(["service", "key", *argv, "--job-root", str(root)])


def test_key_add_list_revoke_through_the_cli(tmp_path: Path) -> None:
    directory, internal = a_service(tmp_path)
    code, out, err = run(tmp_path, "add", "llama", "alice")
    assert code == 0, err
    token = out.strip()
    assert keys.digest(token) in Path(ServiceDir(directory).keys).read_text()
    assert "shown this once" in err
    code, out, _ = run(tmp_path, "add", "llama", "prom", "--scrape", "--json")
    assert json.loads(out)["label"] == "prom"
    # the front saved some usage
    book = UsageBook()
    book.record("alice", 200, (12, 34), now=1.0)
    book.record("alice", 500, None, now=2.0)
    book.save(ServiceDir(directory).usage)
    _, listed, _ = run(tmp_path, "list", "llama", "--json")
    rows = {r["label"]: r for r in json.loads(listed)}
    assert set(rows) == {"default", "alice", "prom"}
    assert rows["prom"]["kind"] == "scrape"
    fields = ("requests", "errors", "tokens_in", "tokens_out", "last_used")
    assert tuple(rows["alice"][f] for f in fields) == (2, 1, 12, 34, 2.0)
    assert all("sha256" not in r for r in rows.values())
    table = run(tmp_path, "list", "llama")[1].splitlines()
    assert table[0].split() == ["LABEL", "KIND", "CREATED", "LAST_USED", "REQUESTS", "ERRORS",
                                "TOKENS_IN", "TOKENS_OUT", "REVOKED"]  # fmt: skip
    code, out, _ = run(tmp_path, "revoke", "llama", "alice")
    assert code == 0 and "revoked" in out
    code, out, err = run(tmp_path, "revoke", "llama", "alice")
    assert code == 2 and "alice is revoked already" in err
    assert len(err.strip().splitlines()) <= 2  # a one-line error (and its fix)
    assert internal not in listed + out + err + token


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (("add", "nope", "alice"), "no service 'nope'"),
        (("add", "llama", "Bad Label"), "is not a key label"),
        (("revoke", "llama", "carol"), "carol has no key"),
    ],
)
def test_key_commands_refuse_bad_input_with_exit_2(
    tmp_path: Path, argv: tuple[str, ...], said: str
) -> None:
    a_service(tmp_path)
    code, _, err = run(tmp_path, *argv)
    assert code == 2 and said in err


def test_services_users_get_their_keys_as_python(tmp_path: Path) -> None:
    from launchers.client import Client

    a_service(tmp_path)
    svc = Services(Client(job_root=str(tmp_path))).get("llama")
    token = svc.add_key("carol")
    assert [r["label"] for r in svc.list_keys()] == ["default", "carol"]
    assert svc.revoke_key("carol").revoked_at is not None
    held = Path(ServiceDir(svc.directory).keys).read_text()
    assert keys.digest(token) in held
