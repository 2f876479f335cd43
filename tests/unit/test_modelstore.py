"""The model store's one question, ``staged_copy``: a copy counts only once its ref
names a commit whose manifest is there and is of the same model; and the store's rule
(--dest, $VLLM_HPC_MODEL_STORE, the site's model_store, the default)."""

from __future__ import annotations

from pathlib import Path

from launchers.jobdir.modelstore import record, staged_copy, staged_dir, store_root
from launchers.jobdir.paths import ModelStore
from launchers.spec.staged import StagedFile, StagedManifest

COMMIT = "c" * 40


def manifest(repo_id: str = "org/tiny", revision: str = "main") -> StagedManifest:
    return StagedManifest(
        repo_id=repo_id, revision=revision, commit=COMMIT, endpoint="https://hf.example.org",
        weights="safetensors", files=(StagedFile(path="model.safetensors", size=3),),
        verified="size", staged_at=1.0,
    )  # fmt: skip


def test_a_recorded_copy_is_found_by_revision_and_by_commit(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    copy = record(store, manifest())
    assert copy == Path(store) / "org--tiny" / COMMIT
    assert staged_dir(store, "org/tiny", "main") == copy
    assert staged_dir(store, "org/tiny", COMMIT) == copy
    found = staged_copy(store, "org/tiny", "main")
    assert found is not None and found.manifest == manifest()
    assert staged_dir(store, "org/tiny", "v2") is None
    assert staged_dir(store, "org/other", "main") is None


def test_no_ref_no_copy_and_a_bad_ref_or_manifest_is_none(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    paths = ModelStore(store)
    record(store, manifest())
    Path(paths.ref("org/tiny", "main")).unlink()  # a copy whose ref was never written
    assert staged_dir(store, "org/tiny", "main") is None
    Path(paths.ref("org/tiny", "main")).write_text("../../etc\n")
    assert staged_dir(store, "org/tiny", "main") is None
    Path(paths.ref("org/tiny", "main")).write_text(COMMIT + "\n")
    assert staged_dir(store, "org/tiny", "main") is not None
    Path(paths.manifest("org/tiny", COMMIT)).write_text(
        manifest(repo_id="org/else").model_dump_json()
    )
    assert staged_dir(store, "org/tiny", "main") is None
    Path(paths.manifest("org/tiny", COMMIT)).write_text("{not json")
    assert staged_dir(store, "org/tiny", "main") is None


def test_a_revision_with_slashes_is_one_ref_file(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    record(store, manifest(revision="refs/pr/1"))
    assert sorted(p.name for p in (tmp_path / "store" / "org--tiny" / "refs").iterdir()) == [
        "refs%2Fpr%2F1"
    ]
    assert staged_dir(store, "org/tiny", "refs/pr/1") is not None


def test_the_store_rule() -> None:
    env = {"HOME": "/home/alice"}
    assert store_root(None, env) == "/home/alice/.vllm-hpc/models"
    assert store_root(None, env, "/lab/models") == "/lab/models"
    assert store_root(None, {**env, "VLLM_HPC_MODEL_STORE": "~/m"}, "/lab/models") == (
        "/home/alice/m"
    )
    assert store_root("/x", {**env, "VLLM_HPC_MODEL_STORE": "/y"}, "/z") == "/x"
