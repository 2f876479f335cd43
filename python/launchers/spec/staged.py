"""A staged model: what ``vllm-hpc stage`` asks for (``StageRequest``) and what it
records beside the files it staged (``StagedManifest``, versioned, one writer).

A staged copy is ``<store>/<org>--<name>/<commit>/`` (``jobdir.paths.ModelStore``):
plain files, one directory to bind into a container or to give to ``vllm serve``.
The manifest names the hub id, the revision asked for, the commit it resolved to, each
file with its size (and sha256 where the hub gives one: its LFS files), how the copy
was verified and whether its config and tokenizer were loaded offline. No token, no
header, no URL with credentials ever goes into it.

Pure: the checks of a hub id, a revision and an endpoint, once, at the edge (those three
are ``spec.fields``', which a request checks without this module's models).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from launchers.defaults import STAGE_JOB_TIME
from launchers.spec import fields
from launchers.spec.config import Frozen, check_slurm_names, check_slurm_time
from launchers.spec.fields import (
    COMMIT_RE,
    HUB_ID_RE,
    REVISION_RE,
    check_endpoint,
    check_hub_id,
    check_revision,
)

MANIFEST_FORMAT = 1

SHA256_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
# A path inside a repository, as the hub lists it.
_REPO_PATH_RE = re.compile(r"(?!/)(?!.*(?:^|/)\.\.?(?:/|$))[^\\]+", re.ASCII)

Verification = Literal["size", "size+sha256"]
WeightFormat = Literal["safetensors", "bin", "pt", "none"]


def check_repo_path(value: str) -> str:
    """A file's path inside the repository: relative, no '..', no backslash."""
    fields.plain_text(value)
    if not _REPO_PATH_RE.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not a relative path inside the repository")
    return value


class StageRequest(Frozen):
    """What ``vllm-hpc stage`` (and ``Client.stage``) is asked: the model (a registry
    id or a hub id), the revision, where (``dest``: the store; else the site's
    ``model_store``, else the default), the hub (``endpoint``: else the site's
    ``hf_endpoint``, else ``$HF_ENDPOINT``, else the public hub), the token's file, and
    whether LFS files are hashed after the download (their sizes always are checked)."""

    model: str
    revision: str = "main"
    dest: str | None = None
    endpoint: str | None = None
    token_file: str | None = None
    dry_run: bool = False
    verify_hashes: bool = True
    kernels: bool = Field(
        True, description="Run the nodes' vLLM's `vllm download-kernels` (where it has one)"
    )

    _model = field_validator("model")(lambda v: fields.not_a_flag(fields.plain_text(v)))
    _revision = field_validator("revision")(check_revision)
    _endpoint = field_validator("endpoint")(check_endpoint)


class StageVia(Frozen):
    """``vllm-hpc stage --via sbatch``: the same stage, run by a short job on a node that
    reaches the hub (a transfer partition): its partition (else the site's
    ``transfer_partition``, else SLURM's default) and its time limit."""

    partition: str | None = None
    time: str = STAGE_JOB_TIME

    _partition = field_validator("partition")(check_slurm_names)
    _time = field_validator("time")(check_slurm_time)


class StagedFile(Frozen):
    """One file of a staged copy, as the hub listed it."""

    path: str
    size: Annotated[int, Field(ge=0)]
    sha256: str | None = None

    _path = field_validator("path")(check_repo_path)

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        if value is not None and not SHA256_RE.fullmatch(fields.one_line(value)):
            raise ValueError("is not a sha256 (64 lowercase hex digits)")
        return value


KernelsStatus = Literal["fetched", "none", "failed"]


class StagedKernels(Frozen):
    """What ``stage`` did about the kernels a GPU build of vLLM fetches at its first
    start: ``fetched`` (the nodes' vLLM's ``vllm download-kernels`` ran and succeeded),
    ``none`` (nothing to fetch, or not asked: ``detail`` says why), ``failed``."""

    status: KernelsStatus
    python: str = Field(description="The nodes' Python whose vLLM was asked")
    vllm_version: str | None = Field(None, description="That vLLM's version (None: none)")
    detail: str = Field(max_length=fields.MAX_TEXT, description="One line, as stage said it")


class StagedManifest(Frozen):
    """``<store>/<org>--<name>/<commit>/vllm-hpc-staged.json``: what was staged and how
    it was checked. Written after every file is verified; the store's ``refs/<revision>``
    file, written last, is what makes the copy count as staged."""

    format: Literal[1] = 1  # MANIFEST_FORMAT
    repo_id: str
    revision: str
    commit: str
    endpoint: str
    weights: WeightFormat
    files: tuple[StagedFile, ...]
    verified: Verification
    staged_at: float = Field(ge=0, description="Seconds since the epoch")
    tokenizer_checked: bool = Field(
        False, description="The config and the tokenizer were loaded offline from the copy"
    )
    kernels: StagedKernels | None = Field(
        None, description="What `vllm download-kernels` did, or why it did not run"
    )

    _repo = field_validator("repo_id")(check_hub_id)
    _revision = field_validator("revision")(check_revision)
    _endpoint = field_validator("endpoint")(check_endpoint)

    @field_validator("commit")
    @classmethod
    def _commit(cls, value: str) -> str:
        if not COMMIT_RE.fullmatch(fields.one_line(value)):
            raise ValueError("is not a commit (40 lowercase hex digits)")
        return value

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


__all__ = [
    "COMMIT_RE",
    "HUB_ID_RE",
    "REVISION_RE",
    "StageRequest",
    "StageVia",
    "StagedFile",
    "StagedKernels",
    "StagedManifest",
    "WeightFormat",
    "check_endpoint",
    "check_hub_id",
    "check_revision",
]
