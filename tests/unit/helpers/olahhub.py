"""olah (a self-hosted Hugging Face mirror, PyPI ``olah``) as a real hub-protocol server
for the tests: a model's files become a local git repository in olah's ``mirrors-path``
and olah serves it on 127.0.0.1 in offline mode, with no upstream.

What olah 0.5.4 expects (``olah/server_mirror.py``, ``olah/mirror/repos.py``):

- ``<mirrors-path>/models/<org>/<name>``: a git repository with a work tree (GitPython
  ``Repo(path)``); a revision is whatever ``repo.commit(rev)`` resolves (a branch, a tag,
  a commit id). Every route (model info with ``siblings``, the tree, paths-info, refs,
  commits, HEAD and GET of ``resolve/<rev>/<file>``) reads the commit, not the work tree.
- A large file is a Git LFS pointer (120 to 150 bytes, ``version ...\\noid sha256:<hex>\\n
  size <n>\\n``) committed in its place, its bytes in ``.git/lfs/objects/<h[:2]>/<h[2:4]>
  /<h>``: the tree lists it with ``lfs: {oid: sha256, size}``, HEAD gives its size and the
  sha256 as ``ETag``, GET streams the object. No git-lfs program is needed.
- ``[accessibility] offline = true``: without it every request first asks huggingface.co
  whether the repository exists (``server_access.ensure_repo_visibility``).

It cannot (nothing in the local-mirror code path does it): gated repositories (``gated``
is always false, no token is checked), a refused file, ranges (GET always sends the whole
file, 200, chunked; huggingface_hub then starts the file again), the hub's
``RevisionNotFound`` (an unknown revision is ``RepoNotFound``, 401), model info without a
revision (``/api/models/<id>`` answers only from olah's cache: 401 here). A shard "served
short" is a truncated LFS object: HEAD and GET agree on the short size, the tree keeps
the pointer's; the ETag is the short bytes' sha256. The fault-injection tests therefore
keep ``helpers.fakehub``.

Requests: uvicorn's access log (olah's stderr, which the helper sends to a file) has a
line per answered request: method, path with query, status, no headers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from launchers import _proc, health, waits
from launchers.errors import RuntimeFailure

OLAH = "olah==0.5.4"  # the one release this helper was written against
PYTHON_VARIABLE = "VLLM_HPC_OLAH_PYTHON"  # a Python with olah installed
DEFAULT_PYTHON = Path("/opt/vllm-hpc/olah/bin/python")
LFS = (".safetensors", ".bin", ".pt")  # files kept as LFS objects, as helpers.fakehub
START_TIMEOUT = 60.0  # seconds for olah to listen (~2 s on an idle machine)
BRANCH = "main"
# One author and one date for every commit: the same files give the same commit id.
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "vllm-hpc tests",
    "GIT_AUTHOR_EMAIL": "tests@localhost",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+00:00",
    "GIT_COMMITTER_NAME": "vllm-hpc tests",
    "GIT_COMMITTER_EMAIL": "tests@localhost",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+00:00",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}
_RUNNING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")
_ACCESS = re.compile(r' - "(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3})\b')


def olah_python() -> Path | None:
    """The Python that runs olah: ``$VLLM_HPC_OLAH_PYTHON``, else the bed's
    ``/opt/vllm-hpc/olah``; None when there is none."""
    given = os.environ.get(PYTHON_VARIABLE)
    path = Path(given) if given else DEFAULT_PYTHON
    return path if path.is_file() and os.access(path, os.X_OK) else None


def lfs_pointer(data: bytes) -> bytes:
    """The Git LFS pointer of ``data``, as ``git lfs`` writes it."""
    sha = hashlib.sha256(data).hexdigest()
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
    )


def _git(repo: Path, *args: str) -> str:
    env = {"PATH": os.environ.get("PATH", os.defpath), **_GIT_ENV}
    done = _proc.run(["git", "-C", str(repo), *args], env=env)
    if done.returncode != 0:
        raise RuntimeFailure(f"git {' '.join(args)} in {repo}: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def write_repository(
    mirrors: Path, repo_id: str, files: Mapping[str, bytes], *, lfs: tuple[str, ...] = LFS
) -> str:
    """``files`` as one commit on ``main`` of a new git repository where olah looks for
    ``repo_id`` under ``mirrors``, the files ending in ``lfs`` as LFS pointers with their
    objects; returns the commit id (the same for the same files)."""
    org, _, name = repo_id.partition("/")
    if not org or not name or "/" in name:
        raise ValueError(f"{repo_id!r} is not ORG/NAME")
    repo = mirrors / "models" / org / name
    repo.mkdir(parents=True)
    _git(repo, "init", "--quiet", f"--initial-branch={BRANCH}")
    for rel, data in files.items():
        target = repo / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(lfs):
            sha = hashlib.sha256(data).hexdigest()
            obj = repo / ".git" / "lfs" / "objects" / sha[:2] / sha[2:4] / sha
            obj.parent.mkdir(parents=True, exist_ok=True)
            obj.write_bytes(data)
            target.write_bytes(lfs_pointer(data))
        else:
            target.write_bytes(data)
    _git(repo, "add", "--all")
    _git(
        repo, "commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", f"{repo_id} for the tests"
    )
    return _git(repo, "rev-parse", "HEAD")


def config_text(mirrors: Path, cache: Path) -> str:
    """olah's configuration: loopback, a port the kernel picks, offline, ``mirrors``."""
    return (
        "[basic]\n"
        'host = "127.0.0.1"\n'
        "port = 0\n"
        f"repos-path = {json.dumps(str(cache))}\n"
        f"mirrors-path = [{json.dumps(str(mirrors))}]\n"
        "\n"
        "[accessibility]\n"
        "offline = true\n"
    )


class Request(NamedTuple):
    method: str
    path: str  # as received, percent-encoded, without the query
    query: str
    status: int


def requests_in(text: str) -> list[Request]:
    """The requests uvicorn's access log lines in ``text`` record, in order."""
    seen = []
    for match in _ACCESS.finditer(text):
        parts = urlsplit(match["target"])
        seen.append(Request(match["method"], parts.path, parts.query, int(match["status"])))
    return seen


@dataclass
class OlahHub:
    """A running olah: its endpoint, its log, the repositories' commits."""

    url: str
    log: Path
    commits: dict[str, str]  # repo id -> commit of main
    child: _proc.Child = field(repr=False)
    started: float = 0.0  # seconds from the start of olah until it listened
    skip: int = 0  # the helper's own requests (the readiness check), left out of ``seen``

    @property
    def seen(self) -> list[Request]:
        """Every request olah answered since it was ready (read from its log now)."""
        return requests_in(self.log.read_text(errors="replace"))[self.skip :]

    def gets(self, suffix: str = "") -> list[str]:
        """The files fetched (GET of resolve/...), in order, as ``fakehub.Hub.gets``."""
        fetched = [r.path for r in self.seen if r.method == "GET" and "/resolve/" in r.path]
        return [unquote(p.split("/resolve/", 1)[1].split("/", 1)[1]) for p in fetched
                if p.endswith(suffix)]  # fmt: skip


def _listening(child: _proc.Child, log: Path) -> str | None:
    """olah's endpoint once uvicorn says it listens; raises if olah ended."""
    text = log.read_text(errors="replace") if log.exists() else ""
    if found := _RUNNING.search(text):
        return found[1]
    if (code := child.poll()) is not None:
        raise RuntimeFailure(f"olah {_proc.ended(code)} before it listened: {_proc.tail(str(log))}")
    return None


@contextlib.contextmanager
def serve(
    repos: Mapping[str, Mapping[str, bytes]], base: Path, *, python: Path | None = None
) -> Iterator[OlahHub]:
    """olah serving ``repos`` (repo id -> files) from git repositories made under
    ``base`` (which must not hold them yet) until the block ends, then stopped with its
    process tree. ``python``: the one with olah (default ``olah_python()``)."""
    python = python or olah_python()
    if python is None:
        raise RuntimeFailure(f"no Python with olah: set {PYTHON_VARIABLE} (pip install {OLAH})")
    mirrors, log, config = base / "mirrors", base / "olah.log", base / "olah.toml"
    commits = {
        repo_id: write_repository(mirrors, repo_id, files) for repo_id, files in repos.items()
    }
    config.write_text(config_text(mirrors, base / "cache"))
    env = health.without_proxies(os.environ)
    env = {k: v for k, v in env.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    argv = [
        str(python),
        "-m",
        "olah.server",
        "--config",
        str(config),
        "--log-path",
        str(base / "logs"),
    ]
    child = _proc.start("olah", argv, env=env, log_path=str(log), cwd=str(base))
    try:
        listening = waits.wait_for(lambda: _listening(child, log), what="olah to listen",
                                   timeout=START_TIMEOUT, log=str(log))  # fmt: skip
        hub = OlahHub(listening.value, log, commits, child, listening.seconds)
        for repo_id in repos:  # a repository olah does not find fails here, not in a test
            answer = health.http_get(f"{hub.url}/api/models/{repo_id}/revision/{BRANCH}")
            if not answer.ok:
                raise RuntimeFailure(f"olah does not serve {repo_id}: {answer.detail[:300]}")
        hub.skip = waits.wait_for(lambda: _answered(hub, len(repos)), what="olah's access log",
                                  timeout=10.0, log=str(log)).value  # fmt: skip
        yield hub
    finally:
        child.stop(grace=10.0)


def _answered(hub: OlahHub, count: int) -> int | None:
    """How many requests the log has once it has at least ``count`` (uvicorn writes the
    line as it answers, so it may come a moment after the client has its answer)."""
    seen = len(requests_in(hub.log.read_text(errors="replace")))
    return seen if seen >= count else None
