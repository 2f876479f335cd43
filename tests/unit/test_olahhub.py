"""``helpers.olahhub``: a model's files as the git repository olah serves (LFS pointers and
objects where olah reads them, the same commit id for the same files), olah's
configuration, its access log read as requests; and, where a Python with olah is
installed (``$VLLM_HPC_OLAH_PYTHON``, or the bed's ``/opt/vllm-hpc/olah``), olah itself
on loopback: huggingface_hub's routes and ``vllm-hpc stage`` against it, then stopped."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from .helpers import fakehub, olahhub
from .helpers.cli import run

WEIGHTS = bytes(range(256)) * 4096  # 1 MiB
FILES = {
    "config.json": b'{"model_type": "llama"}',
    "generation_config.json": b"{}",
    "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE"}}',
    "model.safetensors": WEIGHTS,
    "original/params.json": b"{}",  # a file in a directory
    "README.md": b"# tiny\n",
}
STAGED = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"]
# What uvicorn wrote for olah 0.5.4 (through olah's logger, to its stderr).
LOG = """\
2026-12-07 17:30:33 | ERROR | stderr | INFO:     Uvicorn running on http://127.0.0.1:33803 (Press CTRL+C to quit)
2026-12-07 17:30:49 | INFO | stdout | INFO:     127.0.0.1:43352 - "GET /api/models/bed-org/tiny-llama/revision/main HTTP/1.1" 200 OK
2026-12-07 17:30:49 | INFO | stdout | INFO:     127.0.0.1:43352 - "GET /api/models/bed-org/tiny-llama/tree/6b48/?recursive=true&expand=false HTTP/1.1" 200 OK
2026-12-07 17:30:49 | INFO | stdout | INFO:     127.0.0.1:43360 - "HEAD /bed-org/tiny-llama/resolve/6b48/model.safetensors HTTP/1.1" 200 OK
2026-12-07 17:30:50 | INFO | stdout | INFO:     127.0.0.1:43370 - "GET /bed-org/tiny-llama/resolve/6b48/my%20notes.md HTTP/1.1" 200 OK
2026-12-07 17:30:50 | INFO | stdout | INFO:     127.0.0.1:43352 - "GET /api/models/bed-org/nope/revision/main HTTP/1.1" 401 Unauthorized
"""  # noqa: E501


def _git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True).stdout


def test_a_repository_has_lfs_pointers_in_git_and_objects_where_olah_reads_them(
    tmp_path: Path,
) -> None:
    commit = olahhub.write_repository(tmp_path / "mirrors", "org/tiny", FILES)
    repo = tmp_path / "mirrors" / "models" / "org" / "tiny"
    assert _git(repo, "rev-parse", "HEAD").decode().strip() == commit
    assert _git(repo, "rev-parse", "--abbrev-ref", "HEAD").decode().strip() == "main"
    listed = _git(repo, "ls-tree", "-r", "--name-only", "HEAD").decode().split()
    assert sorted(listed) == sorted(FILES)
    sha = hashlib.sha256(WEIGHTS).hexdigest()
    pointer = _git(repo, "show", "HEAD:model.safetensors")
    assert (
        pointer
        == (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(WEIGHTS)}\n"
        ).encode()
    )
    assert 120 < len(pointer) < 150  # the sizes olah takes for a pointer
    assert (repo / ".git/lfs/objects" / sha[:2] / sha[2:4] / sha).read_bytes() == WEIGHTS
    for name in set(FILES) - {"model.safetensors"}:
        assert _git(repo, "show", f"HEAD:{name}") == FILES[name]
    # The same files, the same commit id: the tests can know it before olah runs.
    assert olahhub.write_repository(tmp_path / "again", "org/tiny", FILES) == commit
    assert olahhub.write_repository(tmp_path / "other", "org/tiny", {"a": b"1"}) != commit


def test_a_repository_id_is_org_and_name(tmp_path: Path) -> None:
    for bad in ("tiny", "org/", "/tiny", "org/a/b"):
        with pytest.raises(ValueError, match="is not ORG/NAME"):
            olahhub.write_repository(tmp_path, bad, FILES)


def test_files_of_a_model_directory_leave_hidden_ones_out(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".cache").mkdir()
    (tmp_path / "config.json").write_bytes(b"{}")
    (tmp_path / "sub/vocab.txt").write_bytes(b"a")
    (tmp_path / ".cache/x").write_bytes(b"x")
    (tmp_path / ".complete").write_bytes(b"")
    assert fakehub.files_of(tmp_path) == {"config.json": b"{}", "sub/vocab.txt": b"a"}
    only_hidden = tmp_path / "only-hidden"
    (only_hidden / ".cache").mkdir(parents=True)
    (only_hidden / ".cache/x").write_bytes(b"x")
    with pytest.raises(ValueError, match="holds no file"):
        fakehub.files_of(only_hidden)


def test_the_configuration_is_loopback_offline_and_a_port_the_kernel_picks() -> None:
    text = olahhub.config_text(Path("/base/mirrors"), Path("/base/cache"))
    assert text == (
        '[basic]\nhost = "127.0.0.1"\nport = 0\nrepos-path = "/base/cache"\n'
        'mirrors-path = ["/base/mirrors"]\n\n[accessibility]\noffline = true\n'
    )


def test_the_access_log_is_read_as_requests(tmp_path: Path) -> None:
    seen = olahhub.requests_in(LOG)
    assert [(r.method, r.status) for r in seen] == [
        ("GET", 200), ("GET", 200), ("HEAD", 200), ("GET", 200), ("GET", 401),
    ]  # fmt: skip
    assert seen[1].path == "/api/models/bed-org/tiny-llama/tree/6b48/"
    assert seen[1].query == "recursive=true&expand=false"
    log = tmp_path / "olah.log"
    log.write_text(LOG)
    hub = olahhub.OlahHub("http://127.0.0.1:1", log, {}, child=None)  # type: ignore[arg-type]
    assert hub.gets() == ["my notes.md"]
    hub.skip = 4
    assert hub.gets() == [] and len(hub.seen) == 1


needs_olah = pytest.mark.skipif(
    olahhub.olah_python() is None,
    reason=f"no Python with olah (set {olahhub.PYTHON_VARIABLE}; pip install {olahhub.OLAH})",
)


@needs_olah
def test_olah_serves_a_local_repository_to_huggingface_hub_and_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url, snapshot_download
    from huggingface_hub.hf_api import RepoFile

    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY", "HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    with olahhub.serve({"org/tiny": FILES}, tmp_path / "olah") as hub:
        commit = hub.commits["org/tiny"]
        api = HfApi(endpoint=hub.url, token=False)
        info = api.model_info("org/tiny", revision="main")
        assert info.sha == commit
        assert sorted(s.rfilename for s in info.siblings or []) == sorted(FILES)
        tree = {f.path: f for f in api.list_repo_tree("org/tiny", recursive=True, revision=commit)
                if isinstance(f, RepoFile)}  # fmt: skip
        assert {p: f.size for p, f in tree.items()} == {p: len(d) for p, d in FILES.items()}
        lfs = tree["model.safetensors"].lfs
        assert lfs is not None and lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
        assert [p for p, f in tree.items() if f.lfs is not None] == ["model.safetensors"]
        url = hf_hub_url("org/tiny", "model.safetensors", revision=commit, endpoint=hub.url)
        meta = get_hf_file_metadata(url, token=False)
        assert (meta.commit_hash, meta.etag, meta.size) == (commit, lfs.sha256, len(WEIGHTS))

        before = len(hub.seen)
        out = tmp_path / "snapshot"
        snapshot_download("org/tiny", revision=commit, endpoint=hub.url, local_dir=out,
                          cache_dir=tmp_path / "hf-cache", token=False)  # fmt: skip
        for name, data in FILES.items():
            assert (out / name).read_bytes() == data, name
        assert sorted(hub.gets()) == sorted(FILES)
        assert all(r.status == 200 for r in hub.seen[before:] if "/resolve/" in r.path)

        fetched = len(hub.gets())
        store = tmp_path / "store"
        code, printed, err = run(["stage", "org/tiny", "--dest", str(store),
                                  "--endpoint", hub.url, "--json"])  # fmt: skip
        assert code == 0, err
        staged = json.loads(printed)
        assert (staged["commit"], staged["verified"]) == (commit, "size+sha256")
        assert sorted(hub.gets()[fetched:]) == STAGED  # each file once, what vLLM reads
        copy = store / "org--tiny" / commit
        for name in STAGED:
            assert (copy / name).read_bytes() == FILES[name]
        sums = {f["path"]: f["sha256"] for f in staged["files"] if f["sha256"]}
        assert sums == {"model.safetensors": lfs.sha256}
        print(f"olah at {hub.url} (listening {hub.started:.1f} s after its start): "
              f"{len(hub.seen)} requests, commit {commit}")  # fmt: skip
        child = hub.child
    assert child.popen.returncode is not None, "olah still runs after the block"
