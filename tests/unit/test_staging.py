"""Which files a staged copy holds (vLLM's own rules) and what a finished copy must
pass: ``plan.staging``, pure, a table of repositories as the hub lists them."""

from __future__ import annotations

import pytest

from launchers.plan.staging import RemoteFile, check_copy, choose, index_shards

SHA = "a" * 64


def listing(*paths: str) -> list[RemoteFile]:
    return [RemoteFile(p, 10, SHA if p.endswith((".safetensors", ".bin", ".pt")) else None)
            for p in paths]  # fmt: skip


TOKENIZER = ("config.json", "generation_config.json", "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")  # fmt: skip


def test_safetensors_are_preferred_and_only_what_vllm_reads_is_kept() -> None:
    chosen = choose(listing(
        *TOKENIZER, "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "pytorch_model.bin", "pytorch_model.bin.index.json", "original/consolidated.00.pth",
        "original/params.json", "README.md", ".gitattributes", "training_args.bin",
        "onnx/model.onnx", "chat_template.jinja",
    ))  # fmt: skip
    assert chosen.weights == "safetensors"
    assert chosen.paths == tuple(sorted([
        *TOKENIZER, "chat_template.jinja",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
    ]))  # fmt: skip
    skipped = dict(chosen.skipped)
    assert skipped["pytorch_model.bin"] == "bin weights; the copy has safetensors"
    assert skipped["pytorch_model.bin.index.json"] == "the index of weights not staged"
    assert "original/consolidated.00.pth" in skipped and "original/params.json" in skipped
    assert skipped["training_args.bin"] == "a training file, not weights"
    assert chosen.index is None


def test_the_index_names_the_shards_consolidated_duplicates_and_strays_are_left_out() -> None:
    files = listing("config.json", "model.safetensors.index.json", "consolidated.safetensors",
                    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                    "model-extra.safetensors")  # fmt: skip
    before = choose(files)
    assert before.index == "model.safetensors.index.json"
    assert "consolidated.safetensors" not in before.paths  # without the index: by name
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    after = choose(files, weight_map)
    assert after.paths == (
        "config.json", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "model.safetensors.index.json",
    )  # fmt: skip
    assert dict(after.skipped)["model-extra.safetensors"] == (
        "not named by model.safetensors.index.json"
    )
    assert after.weight_paths == {"model-00001-of-00002.safetensors",
                                  "model-00002-of-00002.safetensors"}  # fmt: skip


@pytest.mark.parametrize(
    ("paths", "weights", "kept"),
    [
        (("consolidated.safetensors", "params.json"), "safetensors", "consolidated.safetensors"),
        (("pytorch_model.bin", "config.json", "optimizer.pt"), "bin", "pytorch_model.bin"),
        (("model.pt", "config.json", "scheduler.pt"), "pt", "model.pt"),
        (("config.json", "README.md"), "none", None),
    ],
)
def test_the_fallbacks(paths: tuple[str, ...], weights: str, kept: str | None) -> None:
    chosen = choose(listing(*paths))
    assert chosen.weights == weights
    assert list(chosen.weight_paths) == ([kept] if kept else [])
    assert "optimizer.pt" not in chosen.paths and "scheduler.pt" not in chosen.paths


def test_a_whole_copy_passes_and_each_fault_is_named() -> None:
    files = [RemoteFile("config.json", 5), RemoteFile("a.safetensors", 100, SHA),
             RemoteFile("b.safetensors", 100, SHA)]  # fmt: skip
    whole = {"config.json": 5, "a.safetensors": 100, "b.safetensors": 100}
    assert check_copy(files, whole, {"a.safetensors": SHA, "b.safetensors": SHA},
                      ["a.safetensors", "b.safetensors"]) == []  # fmt: skip
    problems = check_copy(
        files,
        {"config.json": 5, "a.safetensors": 60, "b.safetensors": 100},
        {"b.safetensors": "b" * 64},
        ["a.safetensors", "b.safetensors", "c.safetensors"],
    )
    assert problems == [
        "a.safetensors: 60 bytes, the hub says 100 (truncated)",
        "b.safetensors: sha256 bbbbbbbbbbbb..., the hub says aaaaaaaaaaaa...",
        "c.safetensors: named by the index, not in the repository's listing",
    ]
    assert check_copy(files, {"config.json": 5}) == [
        "a.safetensors: missing", "b.safetensors: missing",
    ]  # fmt: skip


def test_index_shards() -> None:
    assert index_shards({"weight_map": {"x": "b", "y": "a", "z": "a"}}) == ["a", "b"]
    with pytest.raises(ValueError, match="no weight_map"):
        index_shards({"metadata": {}})
