"""Which files of a hub repository a staged copy holds, and whether a copy is whole.

vLLM's own rules for a model directory (its default load format, ``auto``): the weights
are the top-level ``*.safetensors`` files when there is one, else the top-level
``*.bin`` files (``*.pt`` as a last resort); with a safetensors index, only the shards
its ``weight_map`` names (a ``consolidated*.safetensors`` beside them is the same weights
again, in Mistral's format); never ``original/**`` (Meta's own checkpoint) nor the
training leftovers (optimizer, scheduler). Beside them: ``config.json``,
``generation_config.json``, the tokenizer's and processor's files and the other small
top-level files vLLM or Transformers read (``*.json``, ``*.jinja``, ``*.model``,
``*.tiktoken``, ``*.txt``, custom code ``*.py``).

Pure: the listing comes from the hub, the sizes and hashes of the copy from the disk;
``stage`` reads both and asks here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from launchers.spec.staged import WeightFormat

WEIGHT_FORMATS: tuple[WeightFormat, ...] = ("safetensors", "bin", "pt")
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
# Top-level files vLLM never loads as weights (vLLM's filter_files_not_needed_for_inference).
NOT_WEIGHTS = frozenset({
    "training_args.bin", "optimizer.bin", "optimizer.pt", "scheduler.pt", "scaler.pt",
})  # fmt: skip
# The small top-level files a model directory needs beside its weights: config,
# generation config, tokenizer and processor files, chat templates, custom code.
METADATA_SUFFIXES = (".json", ".jinja", ".model", ".tiktoken", ".txt", ".py")
CONSOLIDATED = "consolidated"


@dataclass(frozen=True)
class RemoteFile:
    """A file of the repository as the hub lists it: its size, and its sha256 when it
    is an LFS file (the hub gives no sha256 for small git files)."""

    path: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class Selection:
    """What to stage: ``files`` (weights and metadata, sorted), the weight format, the
    index that names the shards (None: none), and what was left out and why."""

    weights: WeightFormat
    files: tuple[RemoteFile, ...]
    index: str | None
    skipped: tuple[tuple[str, str], ...]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.files)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def weight_paths(self) -> frozenset[str]:
        """The weight files among ``files``."""
        return frozenset(f.path for f in self.files if _format_of(f.path) == self.weights)


def _top_level(path: str) -> bool:
    return "/" not in path


def _format_of(path: str) -> WeightFormat | None:
    for fmt in WEIGHT_FORMATS:
        if path.endswith(f".{fmt}") and path not in NOT_WEIGHTS:
            return fmt
    return None


def choose(listing: Iterable[RemoteFile], weight_map: Mapping[str, str] | None = None) -> Selection:
    """The files to stage from ``listing``. ``weight_map``: the safetensors (or bin)
    index's ``weight_map`` once it is read; with it, only the shards it names are kept
    (the index itself is always among the files, so it can be fetched first)."""
    files = sorted(listing, key=lambda f: f.path)
    skipped: list[tuple[str, str]] = []
    by_format: dict[WeightFormat, list[RemoteFile]] = {fmt: [] for fmt in WEIGHT_FORMATS}
    metadata: list[RemoteFile] = []
    for item in files:
        if not _top_level(item.path):
            skipped.append((item.path, "not at the top level (vLLM reads only those)"))
            continue
        fmt = _format_of(item.path)
        if fmt is not None:
            by_format[fmt].append(item)
        elif item.path in NOT_WEIGHTS:
            skipped.append((item.path, "a training file, not weights"))
        elif item.path.endswith(METADATA_SUFFIXES):
            metadata.append(item)
        else:
            skipped.append((item.path, "not a file vLLM reads"))
    weights: WeightFormat = next((fmt for fmt in WEIGHT_FORMATS if by_format[fmt]), "none")
    chosen = by_format.get(weights, [])
    for fmt in WEIGHT_FORMATS:
        if fmt != weights:
            skipped += [(f.path, f"{fmt} weights; the copy has {weights}") for f in by_format[fmt]]
    index = {"safetensors": SAFETENSORS_INDEX, "bin": BIN_INDEX}.get(weights)
    if index not in {f.path for f in metadata}:
        index = None
    if weight_map is not None and index is not None:
        named = set(weight_map.values())
        skipped += [(f.path, f"not named by {index}") for f in chosen if f.path not in named]
        chosen = [f for f in chosen if f.path in named]
    elif weights == "safetensors" and any(not _consolidated(f.path) for f in chosen):
        skipped += [
            (f.path, "consolidated copy of the same weights")
            for f in chosen
            if _consolidated(f.path)
        ]
        chosen = [f for f in chosen if not _consolidated(f.path)]
    # Other indexes describe weights the copy does not have: vLLM would follow them.
    other = {SAFETENSORS_INDEX, BIN_INDEX} - {index}
    skipped += [(f.path, "the index of weights not staged") for f in metadata if f.path in other]
    metadata = [f for f in metadata if f.path not in other]
    kept = tuple(sorted([*chosen, *metadata], key=lambda f: f.path))
    return Selection(weights=weights, files=kept, index=index, skipped=tuple(sorted(skipped)))


def _consolidated(path: str) -> bool:
    return path.startswith(CONSOLIDATED)


def check_copy(
    expected: Sequence[RemoteFile],
    sizes: Mapping[str, int],
    hashes: Mapping[str, str] | None = None,
    shards: Iterable[str] = (),
) -> list[str]:
    """What is wrong with a finished copy, one line per file (empty: whole). ``sizes``:
    the size of each file found on disk (absent: missing); ``hashes``: the sha256 of
    each file that was hashed; ``shards``: the files the index names (each must be among
    the expected files and present)."""
    problems: list[str] = []
    wanted = {f.path for f in expected}
    for item in expected:
        size = sizes.get(item.path)
        if size is None:
            problems.append(f"{item.path}: missing")
        elif size != item.size:
            what = "truncated" if size < item.size else "too long"
            problems.append(f"{item.path}: {size} bytes, the hub says {item.size} ({what})")
        elif hashes is not None and item.sha256 is not None:
            found = hashes.get(item.path)
            if found is not None and found != item.sha256:
                problems.append(
                    f"{item.path}: sha256 {found[:12]}..., the hub says {item.sha256[:12]}..."
                )
    for shard in sorted(set(shards)):
        if shard not in wanted:
            problems.append(f"{shard}: named by the index, not in the repository's listing")
    return problems


def index_shards(index: Mapping[str, object]) -> list[str]:
    """The shard files a safetensors/bin index names (its ``weight_map``'s values);
    ValueError when it has none."""
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError("has no weight_map")
    shards = {str(v) for v in weight_map.values()}
    return sorted(shards)


# What a job of a staged model exports on every node, after every other variable (the
# user's env included): the copy holds all vLLM loads, and nothing may be fetched instead.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def offline_env(env: Mapping[str, str], copy: str) -> tuple[dict[str, str], list[str]]:
    """``env`` with ``OFFLINE_ENV`` on top, and a warning for each of its variables
    ``env`` had set otherwise (a user's ``HF_HUB_OFFLINE=0`` is not obeyed silently)."""
    warnings = [
        f"env: {key}={env[key]} is replaced by {key}={value}: the model is served from "
        f"its staged copy {copy}, offline"
        for key, value in OFFLINE_ENV.items()
        if key in env and env[key] != value
    ]
    return {**env, **OFFLINE_ENV}, warnings
