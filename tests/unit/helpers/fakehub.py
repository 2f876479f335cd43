"""A Hugging Face hub in a thread on 127.0.0.1, standard library only: the few routes
``huggingface_hub.snapshot_download`` uses (a model's info at a revision, its file tree,
HEAD and GET of ``resolve/<commit>/<file>``, ranges included), the hub's error codes
(``X-Error-Code: GatedRepo``, ``RepoNotFound``, ``RevisionNotFound``), and a record of
every request (method, path, Authorization header) for the tests to read. A repository
is files in memory, or a model directory read once (``Repo.from_directory``: the
cluster tests serve the bed's tiny model this way)."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit


def files_of(root: Path) -> dict[str, bytes]:
    """The regular files under ``root`` by their relative POSIX paths (subdirectories
    included, as the hub lists them), read now; hidden files and directories
    (``.cache``, ``.complete``) are not part of a repository."""
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and not path.is_symlink():
            files[rel.as_posix()] = path.read_bytes()
    if not files:
        raise ValueError(f"{root} holds no file to serve")
    return files


@dataclass
class Repo:
    """A model repository: its files (path -> bytes) at one commit. ``gated``: the
    files need ``Authorization: Bearer <token>``; ``serve_short``: files whose bytes
    are served cut short (HEAD and GET agree; the tree listing has the real size);
    ``refuse``: files whose GET is refused (403), as a download cut off."""

    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    gated: bool = False
    token: str | None = None
    lfs: tuple[str, ...] = (".safetensors", ".bin", ".pt")
    serve_short: dict[str, int] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)

    @classmethod
    def from_directory(cls, root: Path, **options: Any) -> Repo:
        """The regular files under ``root`` (subdirectories included, by their relative
        POSIX paths, as the hub lists them), read now; hidden files and directories
        (``.complete``, ``.cache``) are not part of a repository. ``options``: the other
        fields (``commit``, ``gated``, ...)."""
        return cls(files_of(root), **options)

    def is_lfs(self, path: str) -> bool:
        return path.endswith(self.lfs)

    def entry(self, path: str) -> dict[str, object]:
        data = self.files[path]
        out: dict[str, object] = {
            "type": "file",
            "path": path,
            "oid": hashlib.sha1(data).hexdigest(),  # noqa: S324 - git's blob id, as the hub
            "size": len(data),
        }
        if self.is_lfs(path):
            out["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                          "pointerSize": 134}  # fmt: skip
        return out


@dataclass
class Hub:
    repos: dict[str, Repo]
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""

    def gets(self, suffix: str = "") -> list[str]:
        """The files fetched (GET of resolve/...), in order."""
        return [p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p, _ in self.seen
                if m == "GET" and "/resolve/" in p and p.endswith(suffix)]  # fmt: skip

    def authorizations(self) -> set[str | None]:
        return {auth for _, _, auth in self.seen}


_INFO = re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/?]+))?")
_TREE = re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/?]+)")
_RESOLVE = re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)")


def _handler(hub: Hub) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _error(self, status: int, code: str) -> None:
            body = json.dumps({"error": code}).encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, data: object) -> None:
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _repo(self, name: str, rev: str) -> Repo | None:
            repo = hub.repos.get(unquote(name))
            if repo is None:
                self._error(404, "RepoNotFound")
                return None
            if unquote(rev) not in ("main", repo.commit):
                self._error(404, "RevisionNotFound")
                return None
            return repo

        def _allowed(self, repo: Repo) -> bool:
            if repo.gated and self.headers.get("Authorization") != f"Bearer {repo.token}":
                self._error(401, "GatedRepo")
                return False
            return True

        def _route(self) -> None:
            path = urlsplit(self.path).path
            hub.seen.append((self.command, path, self.headers.get("Authorization")))
            if (m := _TREE.fullmatch(path)) and self.command == "GET":
                if (repo := self._repo(m["repo"], m["rev"])) is not None:
                    self._json([repo.entry(p) for p in sorted(repo.files)])
            elif (m := _INFO.fullmatch(path)) and self.command == "GET":
                if (repo := self._repo(m["repo"], m["rev"] or "main")) is not None:
                    siblings = [{"rfilename": p} for p in sorted(repo.files)]
                    self._json({"id": unquote(m["repo"]), "sha": repo.commit, "private": False,
                                "gated": "auto" if repo.gated else False,
                                "siblings": siblings})  # fmt: skip
            elif m := _RESOLVE.fullmatch(path):
                repo = self._repo(m["repo"], m["rev"])
                if repo is not None and self._allowed(repo):
                    self._file(repo, unquote(m["path"]))
            else:
                self._error(404, "EntryNotFound")

        def _file(self, repo: Repo, name: str) -> None:
            if name not in repo.files:
                self._error(404, "EntryNotFound")
                return
            if self.command == "GET" and name in repo.refuse:
                self._error(403, "Forbidden")
                return
            data = repo.files[name][: repo.serve_short.get(name)]
            if repo.is_lfs(name):
                etag = hashlib.sha256(repo.files[name]).hexdigest()
            else:
                etag = hashlib.sha1(repo.files[name]).hexdigest()  # noqa: S324
            start = 0
            ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if ranged and self.command == "GET":
                start = int(ranged[1])
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(data[start:])

        do_GET = do_HEAD = _route

    return Handler


@contextmanager
def serve(repos: dict[str, Repo]) -> Iterator[Hub]:
    """A hub serving ``repos`` until the block ends; ``Hub.url`` is its endpoint."""
    hub = Hub(repos)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
