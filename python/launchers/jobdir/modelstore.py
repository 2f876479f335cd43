"""The model store: where ``vllm-hpc stage`` leaves a model, and the one question the
planner asks of it, ``staged_copy(store, repo_id, revision)``: the staged directory and
its manifest, or None.

The store is ``--dest``, else ``$VLLM_HPC_MODEL_STORE``, else the site file's
``model_store``, else ``~/.vllm-hpc/models`` (``defaults.DEFAULT_MODEL_STORE``); it must
be on storage the nodes read. A copy counts as staged only once its
``refs/<revision>`` file names its commit: ``stage`` writes the manifest after every
file is verified and the ref after the manifest, so a copy cut short (an interrupted
download, a failed verification) is never taken for a whole one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from launchers.defaults import DEFAULT_MODEL_STORE
from launchers.jobdir.jobroot import expand_home
from launchers.jobdir.paths import ModelStore
from launchers.jobdir.safe import open_nofollow, private_dir
from launchers.spec.fields import COMMIT_RE

if TYPE_CHECKING:  # read where a copy is found: a plan of an unstaged model needs no model
    from launchers.spec.staged import StagedManifest

STORE_ENV = "VLLM_HPC_MODEL_STORE"
_MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def store_root(
    flag: str | None,
    environ: Mapping[str, str],
    site_store: str | Callable[[], str | None] | None = None,
) -> str:
    """The model store: ``flag``, else ``$VLLM_HPC_MODEL_STORE``, else the site's
    ``model_store`` (a callable is asked only then), else the default; ``~`` expanded
    from ``environ``'s HOME."""
    chosen = flag or environ.get(STORE_ENV) or None
    if chosen is None:
        chosen = (site_store() if callable(site_store) else site_store) or DEFAULT_MODEL_STORE
    return expand_home(chosen, environ)


@dataclass(frozen=True)
class StagedCopy:
    """A whole staged copy: its directory (what ``vllm serve`` is given) and manifest."""

    path: Path
    manifest: StagedManifest


def _read_small(path: str, limit: int) -> str | None:
    try:
        with os.fdopen(open_nofollow(path), "rb") as fh:
            data = fh.read(limit + 1)
    except OSError:
        return None
    if len(data) > limit:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def read_manifest(path: str) -> StagedManifest | None:
    """The manifest at ``path``, or None (missing, a symlink, not a valid manifest)."""
    from launchers.spec.staged import StagedManifest

    text = _read_small(path, _MAX_MANIFEST_BYTES)
    if text is None:
        return None
    try:
        return StagedManifest.model_validate_json(text)
    except ValidationError:
        return None


def staged_commit(store: str, repo_id: str, revision: str) -> str | None:
    """The commit ``revision`` of ``repo_id`` was staged at (its ref file), or None."""
    text = _read_small(ModelStore(store).ref(repo_id, revision), 64)
    commit = text.strip() if text is not None else None
    return commit if commit is not None and COMMIT_RE.fullmatch(commit) else None


def staged_copy(store: str, repo_id: str, revision: str) -> StagedCopy | None:
    """The staged copy of ``repo_id`` at ``revision`` (a branch, a tag or a commit) in
    ``store``, or None when there is none, or it is not whole (no ref, no manifest, a
    manifest of another model or commit). Reads two small files; no network."""
    commit = staged_commit(store, repo_id, revision)
    if commit is None and COMMIT_RE.fullmatch(revision):
        commit = revision  # staged under a branch that resolved to this very commit
    if commit is None:
        return None
    paths = ModelStore(store)
    manifest = read_manifest(paths.manifest(repo_id, commit))
    if manifest is None or manifest.repo_id != repo_id or manifest.commit != commit:
        return None
    copy = Path(paths.copy(repo_id, commit))
    return StagedCopy(copy, manifest) if copy.is_dir() else None


def staged_dir(store: str, repo_id: str, revision: str) -> Path | None:
    """The staged directory of ``repo_id`` at ``revision``, or None (``staged_copy``)."""
    found = staged_copy(store, repo_id, revision)
    return found.path if found is not None else None


def write_text_atomic(path: str, text: str) -> None:
    """``text`` into ``path`` at once (a temp file renamed over it), in a directory of
    ours only we can write (created 0700 when missing)."""
    target = Path(path)
    private_dir(target.parent, "model store")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record(store: str, manifest: StagedManifest) -> Path:
    """Make a verified copy count: its manifest, then (last) its ref. The copy's
    directory."""
    paths = ModelStore(store)
    write_text_atomic(
        paths.manifest(manifest.repo_id, manifest.commit),
        manifest.model_dump_json(indent=2) + "\n",
    )
    write_text_atomic(paths.ref(manifest.repo_id, manifest.revision), manifest.commit + "\n")
    return Path(paths.copy(manifest.repo_id, manifest.commit))
