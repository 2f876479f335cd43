"""A staged copy in a model store, as ``vllm-hpc stage`` leaves one (the files, the
manifest, then the ref), without a hub: for the tests of jobs and of the doctor."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from launchers.jobdir.modelstore import record
from launchers.spec.staged import StagedFile, StagedManifest

COMMIT = "c" * 40
CONFIG = {
    "model_type": "llama", "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_hidden_layers": 2, "hidden_size": 128, "intermediate_size": 256,
    "vocab_size": 2048, "torch_dtype": "bfloat16",
}  # fmt: skip
WEIGHTS = b"\0" * 2048


def stage_copy(
    store: Path,
    repo_id: str = "org/tiny",
    revision: str = "main",
    extra: Mapping[str, bytes] | None = None,
) -> Path:
    """A whole staged copy of ``repo_id``: config.json, model.safetensors and ``extra``
    files, each in the manifest with its size (the weights with their sha256)."""
    copy = store / repo_id.replace("/", "--") / COMMIT
    copy.mkdir(parents=True, exist_ok=True)
    contents = {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": WEIGHTS,
                **(extra or {})}  # fmt: skip
    files = []
    for name, data in sorted(contents.items()):
        (copy / name).write_bytes(data)
        sha = hashlib.sha256(data).hexdigest() if name.endswith(".safetensors") else None
        files.append(StagedFile(path=name, size=len(data), sha256=sha))
    manifest = StagedManifest(
        repo_id=repo_id, revision=revision, commit=COMMIT, endpoint="https://hf.example.org",
        weights="safetensors", files=tuple(files), verified="size+sha256", staged_at=1.0,
    )  # fmt: skip
    assert record(str(store), manifest) == copy
    return copy
