"""The compile cache: where vLLM keeps what it compiles (torch.compile graphs, Inductor's
and Triton's kernels) across jobs, so the second job of a model reuses the first one's
compile instead of spending minutes on it again.

The root is the site file's ``compile_cache``, else ``<job root>/compile-cache``. A
site value is shared by every user of the site, so it ends in a directory of the user's
own, as the job root does: ``{user}`` is replaced by the user's name, and a value
without it gets ``/<user>`` appended. Compiled kernels are code vLLM loads and runs: the
cache is the user's alone (0700, checked whenever a node opens it: ``prepare``).

Under the root, one directory per vLLM version and model (``paths.CompileCacheDir``):
``<root>/<vllm version>/<model key>``. The version is the nodes' vLLM's
(``unknown`` when it cannot be learnt on the login node); the model key is the hub id
spelled as the hub spells its folders (``org--name``), or a local directory's name with
a hash of its path (two directories of one name never share a tree). vLLM keys its own
artefacts inside by a hash of the configuration, so one tree serves every layout.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

from launchers.jobdir.jobroot import USER_FIELD, expand_home, user_name
from launchers.jobdir.paths import CompileCacheDir, JobRoot
from launchers.jobdir.safe import private_dir

HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*", re.ASCII)
VERSION_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", re.ASCII)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def cache_root(
    site_value: str | None, job_root: str, environ: Mapping[str, str], user: str | None = None
) -> str:
    """The compile cache's root: the site's ``compile_cache`` (``{user}`` filled in,
    ``/<user>`` appended without it, ``~`` expanded), else ``<job root>/compile-cache``
    (the job root is the user's own already)."""
    if not site_value:
        return JobRoot(job_root).compile_cache.root
    value = site_value if USER_FIELD in site_value else f"{site_value.rstrip('/')}/{USER_FIELD}"
    return expand_home(value, environ).replace(USER_FIELD, user or user_name(environ))


def model_key(model: str) -> str:
    """The model's directory name in the cache: ``org--name`` for a hub id; for a local
    directory its name (letters, digits, ``. _ -``) and 12 hex digits of its absolute
    path's sha256."""
    if HUB_ID.fullmatch(model):
        return model.replace("/", "--")
    path = os.path.abspath(os.path.expanduser(model))
    name = _UNSAFE.sub("_", Path(path).name).strip("._-")[:64] or "model"
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"{name}-{digest}"


def version_key(version: str | None) -> str:
    """The version's directory name; ``unknown`` for none or one that is no plain name."""
    if version and VERSION_KEY.fullmatch(version):
        return version
    return CompileCacheDir.UNKNOWN_VERSION


def prepare(path: str) -> Path:
    """Make ``path`` (``<root>/<version>/<model key>``) on this node, every level that is
    missing 0700, and check each level is the user's and closed to others (a directory
    someone else can write could hand vLLM kernels to load). Raises ``UnsafePathError``."""
    target = Path(path)
    for level in (target.parent.parent, target.parent, target):
        private_dir(level, "compile cache")
    return target


__all__ = ["cache_root", "model_key", "prepare", "version_key"]
