"""A nodes' Python with a stand-in for Transformers: ``python_with_transformers(dir)``
writes a ``transformers`` package (``AutoConfig`` and ``AutoTokenizer`` that read a
model directory as Transformers does, and raise what it raises when a file is missing
or a hub id is asked for offline) and an interpreter script that runs this Python with
it importable. Every load is recorded (the model asked for, the offline variables it
saw) in ``calls.jsonl`` beside it, for the tests to read.

The real library is asked in ``test_offline_load`` when the bed's test environment is
installed; these tests need neither it nor its import time."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

_PACKAGE = '''
"""A stand-in for Transformers (vllm-hpc's unit tests)."""
import json, os

__version__ = "0.0.test"
_LOG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "calls.jsonl")


def _record(call, target):
    seen = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    with open(_LOG, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"call": call, "target": target, **seen}) + "\\n")


def _offline():
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _cached(target, kwargs):
    """A hub id's snapshot in the Hugging Face cache ($HF_HUB_CACHE), as Transformers
    finds one offline; None when it is not there."""
    cache = os.environ.get("HF_HUB_CACHE")
    if not cache:
        return None
    folder = os.path.join(cache, "models--" + target.replace("/", "--"))
    revision = kwargs.get("revision") or "main"
    try:
        with open(os.path.join(folder, "refs", revision), encoding="utf-8") as fh:
            revision = fh.read().strip()
    except OSError:
        pass
    snapshot = os.path.join(folder, "snapshots", revision)
    return snapshot if os.path.isdir(snapshot) else None


def _custom_code(target, data, kwargs):
    """Transformers with a repository's own code: asks on stdin whether to run it when
    trust_remote_code is not given (as Transformers does), refuses it when it is False."""
    if not isinstance(data, dict) or "auto_map" not in data:
        return
    if kwargs.get("trust_remote_code") is None:
        answer = input("Do you wish to run the custom code? [y/N] ")
        _record("ran custom code" if answer.lower() == "y" else "refused custom code", target)
    if not kwargs.get("trust_remote_code"):
        raise ValueError(
            f"The repository {target} contains custom code which must be executed to correctly "
            "load the model. You can inspect the repository content at "
            f"https://hf.co/{target} . Please pass the argument `trust_remote_code=True` to "
            "allow custom code to be run."
        )


def _hub(target, name):
    if _offline():
        raise OSError(
            f"We couldn't connect to 'https://huggingface.co' to load the files, and couldn't "
            f"find them in the cached files. Check your internet connection or see how to run "
            f"the library in offline mode at "
            f"'https://huggingface.co/docs/transformers/installation#offline-mode'."
        )
    raise RuntimeError(f"the stand-in would reach the hub for {target}/{name}")


class LlamaConfig:
    def __init__(self, data):
        self.data = data


class AutoConfig:
    @staticmethod
    def from_pretrained(target, **kwargs):
        _record("config", target)
        if not os.path.isdir(target):
            target = _cached(target, kwargs) or _hub(target, "config.json")
        path = os.path.join(target, "config.json")
        if not os.path.isfile(path):
            raise OSError(f"{target} does not appear to have a file named config.json. "
                          "Checkout 'https://huggingface.co/None/tree/None' for available files.")
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if data.get("model_type") != "llama":  # Transformers' own: llama only, here
            _custom_code(target, data, kwargs)
        if "model_type" not in data:
            raise ValueError(f"Unrecognized model in {target}. Should have a `model_type` key "
                             "in its config.json.")
        return LlamaConfig(data)


class PreTrainedTokenizerFast:
    def __init__(self, vocab):
        self.vocab = vocab

    def encode(self, text):
        return [self.vocab.get(word, 0) for word in text.split()]

    def __len__(self):
        return len(self.vocab)


class AutoTokenizer:
    @staticmethod
    def from_pretrained(target, **kwargs):
        _record("tokenizer", target)
        if not os.path.isdir(target):
            target = _cached(target, kwargs) or _hub(target, "tokenizer_config.json")
        config = os.path.join(target, "tokenizer_config.json")
        if os.path.isfile(config):
            with open(config, encoding="utf-8") as fh:
                _custom_code(target, json.load(fh), kwargs)
        path = os.path.join(target, "tokenizer.json")
        if not os.path.isfile(path):
            raise ValueError(
                "Couldn't instantiate the backend tokenizer from one of: (1) a `tokenizers` "
                "library serialization file, (2) a slow tokenizer instance to convert or (3) an "
                "equivalent slow tokenizer class to instantiate and convert. You need to have "
                "sentencepiece or tiktoken installed to convert a slow tokenizer to a fast one."
            )
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        vocab = (data.get("model") or {}).get("vocab")
        if not isinstance(vocab, dict) or not vocab:
            raise Exception("data did not match any variant of untagged enum ModelWrapper "
                            "at line 1 column 20")
        return PreTrainedTokenizerFast(vocab)
'''

# A tokenizer.json the real Tokenizers library loads too (a word-level vocabulary).
TOKENIZER_JSON = json.dumps({
    "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
    "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
    "decoder": None,
    "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "Hello": 1, ",": 2, "world": 3},
              "unk_token": "[UNK]"},
}).encode()  # fmt: skip
TOKENIZER_CONFIG_JSON = json.dumps(
    {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]"}
).encode()


def python_with_transformers(where: Path) -> Path:
    """An interpreter (a script running this Python) that has the stand-in Transformers."""
    package = where / "site" / "transformers"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(_PACKAGE, encoding="utf-8")
    python = where / "python"
    site, real = shlex.quote(str(where / "site")), shlex.quote(sys.executable)
    python.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {real} "$@"\n', encoding="utf-8")
    python.chmod(0o755)
    return python


def calls(where: Path) -> list[dict[str, Any]]:
    """The loads the stand-in saw, in order."""
    log = where / "site" / "calls.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
