"""Whether a model's config and tokenizer load offline, asked of a Python (the nodes')
in a child process with ``HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1`` in its environment:
Transformers' own ``AutoConfig`` and ``AutoTokenizer`` (what vLLM calls when it starts),
never imported by this process. Below ``vllm-hpc stage`` (after the download, on the
login node) and the node runtime (``doctor --offline``, on a node), which both ask it.

The repository's own code is never run (``trust_remote_code=False``, so Transformers
never asks on the terminal whether to run it) and the child's stdin is empty. The answer
is one marked JSON line (Transformers may log around it); which file is missing or wrong
is named here (``culprit``, pure) from what the child saw.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from launchers import _proc
from launchers.errors import clipped
from launchers.plan.staging import OFFLINE_ENV

MARK = "VLLM_HPC_LOAD "
TIMEOUT = 300.0  # importing Transformers on a cold shared file system is slow
# The files whose text is JSON that Transformers reads for the config and the tokenizer:
# one that does not parse is named before Transformers says something vaguer.
JSON_FILES = ("config.json", "tokenizer_config.json", "tokenizer.json",
              "special_tokens_map.json", "added_tokens.json", "vocab.json")  # fmt: skip
# A tokenizer needs one of these (its vocabulary), beside tokenizer_config.json.
VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
               "sentencepiece.bpe.model", "tekken.json")  # fmt: skip
VOCAB_SUFFIXES = (".tiktoken",)
NAMED_FILES = (*JSON_FILES, *VOCAB_FILES, "merges.txt")
_NO_VOCAB = "no tokenizer file (tokenizer.json, tokenizer.model, vocab.json, vocab.txt, *.tiktoken)"

# Run by the asked Python, never imported here. argv: the model (a directory, or a hub
# id read from that Python's Hugging Face cache) and the revision ('' for a directory).
SCRIPT = f"""
import json, os, sys
target, revision = sys.argv[1], sys.argv[2] or None
local = os.path.isdir(target)
files = sorted(os.listdir(target)) if local else []

def say(**answer):
    answer["files"] = files
    print({MARK!r} + json.dumps(answer), flush=True)
    sys.exit(0)

def short(exc):
    return (type(exc).__name__ + ": " + str(exc))[:600]

def failed(what, exc):
    # Custom code (auto_map) runs only with --trust-remote-code: never here.
    if "trust_remote_code" in str(exc):
        say(skipped=f"its {{what}} needs the repository's own code (--trust-remote-code): "
                    "not run here")
    say(failed=what, transformers=version, error=short(exc))

if local:
    for name in {JSON_FILES!r}:
        if name in files:
            try:
                with open(os.path.join(target, name), encoding="utf-8") as fh:
                    data = json.load(fh)
            except (OSError, ValueError) as exc:
                say(failed="config" if name == "config.json" else "tokenizer", file=name,
                    error=short(exc))
    if "tekken.json" in files and "tokenizer_config.json" not in files:
        say(skipped="a Mistral tokenizer (tekken.json): vLLM loads it with mistral_common")
# trust_remote_code=False: never the repository's own code, and never Transformers'
# prompt asking whether to run it.
kwargs = {{"trust_remote_code": False}}
if not local and revision is not None:
    kwargs["revision"] = revision
try:
    import transformers
    from transformers import AutoConfig, AutoTokenizer
except Exception as exc:
    say(missing=short(exc))
version = str(getattr(transformers, "__version__", "?"))
try:
    config = AutoConfig.from_pretrained(target, **kwargs)
except Exception as exc:
    failed("config", exc)
try:
    tokenizer = AutoTokenizer.from_pretrained(target, **kwargs)
    tokenizer.encode("Hello, world")
    size = len(tokenizer)
except Exception as exc:
    failed("tokenizer", exc)
say(transformers=version, config=type(config).__name__, tokenizer=type(tokenizer).__name__,
    vocab=size)
"""

Status = Literal["loaded", "failed", "skipped", "unavailable"]


@dataclass(frozen=True)
class LoadCheck:
    """What the asked Python made of the model: ``loaded`` (config and tokenizer, with
    what they are), ``failed`` (``what``: config or tokenizer; ``problem``: the file
    missing or wrong, and Transformers' error), ``skipped`` (not to be loaded here: custom
    code, a Mistral tokenizer) or ``unavailable`` (that Python could not be run, or has
    no Transformers). ``python``: the interpreter asked; ``detail``: one line saying it."""

    status: Status
    python: str
    detail: str
    what: str = ""
    problem: str = ""
    transformers: str = ""
    files: tuple[str, ...] = field(default=(), repr=False)


def _has_vocab(files: Sequence[str]) -> bool:
    return any(f in VOCAB_FILES or f.endswith(VOCAB_SUFFIXES) for f in files)


def culprit(what: str, error: str, files: Sequence[str], file: str | None = None) -> str:
    """The file that is missing or wrong, and why, in a few words: the file the child
    found unreadable; else a file Transformers' error names (missing when the copy has
    none); else config.json for the config; else, for the tokenizer, that it has no
    vocabulary file, or the vocabulary file it has."""
    if file:
        return f"{file}: {error}"
    present = set(files)
    named = [n for n in (*sorted(present, key=len, reverse=True), *NAMED_FILES) if n in error]
    if named:
        name = named[0]
        return f"{name}: {error}" if name in present else f"{name} missing ({error})"
    if what == "config":
        there = "config.json" in present
        return f"config.json: {error}" if there else f"config.json missing ({error})"
    if not _has_vocab(files):
        return f"{_NO_VOCAB} ({error})"
    first = next(f for f in (*VOCAB_FILES, *files) if f in present and _has_vocab([f]))
    return f"{first}: {error}"


def parse(stdout: str, python: str, files: Sequence[str] = ()) -> LoadCheck | None:
    """The child's marked line as a ``LoadCheck`` (None: no such line)."""
    for line in reversed(stdout.splitlines()):
        _, mark, rest = line.partition(MARK)  # a prompt without its newline may precede it
        if not mark:
            continue
        try:
            data: Any = json.loads(rest)
        except ValueError:
            return None
        return _answer(data, python) if isinstance(data, dict) else None
    return None


def _answer(data: Mapping[str, Any], python: str) -> LoadCheck:
    files = tuple(str(f) for f in data.get("files") or ())
    version = str(data.get("transformers") or "")
    if data.get("missing"):
        why = str(data["missing"])
        why = "" if "No module named 'transformers'" in why else f" ({clipped(why, 160)})"
        detail = f"Transformers is not importable for {python}{why}"
        return LoadCheck("unavailable", python, detail, files=files)
    if data.get("skipped"):
        return LoadCheck("skipped", python, str(data["skipped"]), files=files)
    if data.get("failed"):
        what = "config" if data["failed"] == "config" else "tokenizer"
        error = clipped(str(data.get("error") or "no error given"), 300)
        problem = culprit(what, error, files, str(data["file"]) if data.get("file") else None)
        return LoadCheck("failed", python, f"the {what} does not load offline: {problem}",
                         what=what, problem=problem, transformers=version, files=files)  # fmt: skip
    shown = f"{data.get('tokenizer')}, {data.get('vocab')} tokens"
    return LoadCheck("loaded", python, f"config ({data.get('config')}) and tokenizer ({shown}) "
                     f"load offline with Transformers {version} in {python}",
                     transformers=version, files=files)  # fmt: skip


def load_offline(
    python_argv: Sequence[str],
    target: str,
    environ: Mapping[str, str],
    *,
    revision: str = "",
    timeout: float = TIMEOUT,
    shown: str | None = None,
) -> LoadCheck:
    """Ask ``python_argv`` (an interpreter, or one inside an image) to load the config
    and the tokenizer of ``target`` (a model directory, or a hub id at ``revision`` from
    its Hugging Face cache) with ``environ`` and the offline variables on top
    (``plan.staging.OFFLINE_ENV``). ``shown``: how that Python is named in the answer."""
    python = shown or python_argv[-1]
    env = {**environ, **OFFLINE_ENV}
    try:
        done = _proc.run(
            [*python_argv, "-c", SCRIPT, target, revision], env=env, timeout=timeout, input_text=""
        )
    except OSError as exc:
        return LoadCheck("unavailable", python, f"cannot run {python} ({exc.strerror or exc})")
    except subprocess.TimeoutExpired:
        return LoadCheck(
            "unavailable", python, f"{python} did not load the tokenizer within {timeout:.0f} s"
        )
    found = parse(done.stdout, python)
    if found is not None:
        return found
    last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    return LoadCheck("unavailable", python, f"{python} gave no answer: {clipped(last, 200)}")


__all__ = ["MARK", "SCRIPT", "LoadCheck", "culprit", "load_offline", "parse"]
