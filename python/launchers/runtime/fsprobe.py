"""Which file system holds the model, asked on the node that starts ``vllm serve``; the
decision (``plan.loading.decide_loading``) is pure, this module only looks.

The type comes from statfs(2)'s ``f_type``, called through ctypes: Python's
``os.statvfs`` wraps POSIX statvfs(3), which has no type field, and ``stat -f -c %t``
would be a process per start and a coreutils the image may not have. ``f_type`` is the
first member of ``struct statfs`` on Linux (``__fsword_t``: a long, an unsigned int on
s390x). The mount's type name (/proc/self/mounts, longest matching mount point, as vLLM
does) tells what the magic number cannot: WekaFS, and FUSE mounts such as ceph-fuse.
Nothing here raises: what cannot be read is None, and the decision says "no change".

``check_offline_source`` is the one refusal: a hub id that is neither staged nor in this
node's Hugging Face cache, on a node whose environment says offline (``HF_HUB_OFFLINE``
or ``TRANSFORMERS_OFFLINE``), stops the node before ``vllm serve`` starts, where vLLM
would only retry the hub it may not reach.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from launchers.errors import RuntimeFailure
from launchers.plan.commands import ServeStart
from launchers.plan.loading import FsFacts, decide_loading
from launchers.spec.staged import HUB_ID_RE

STATFS_BUFFER = 256  # larger than struct statfs on every Linux architecture (120 bytes)
OFFLINE_SWITCHES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = ("1", "ON", "YES", "TRUE")  # huggingface_hub's own reading of a switch


def statfs_type(path: str) -> int | None:
    """statfs(2)'s f_type for ``path`` (None where it cannot be called)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        buf = ctypes.create_string_buffer(STATFS_BUFFER)
        if libc.statfs(os.fsencode(path), buf) != 0:
            return None
    except (OSError, AttributeError):
        return None
    width = 4 if platform.machine() == "s390x" else ctypes.sizeof(ctypes.c_long)
    return int.from_bytes(buf.raw[:width], sys.byteorder) & 0xFFFFFFFF


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def mount_type(path: str, mounts: str = "/proc/self/mounts") -> str | None:
    """The type name of the mount holding ``path`` (the longest matching mount point)."""
    try:
        text = Path(mounts).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    best, found = "", None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = _unescape(parts[1])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, found = point, parts[2]
    return found


def available_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    try:
        for line in Path(meminfo).read_text(encoding="utf-8").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def checkpoint_bytes(directory: str) -> int | None:
    """The size of the directory's safetensors shards (None when it has none)."""
    try:
        sizes = [p.stat().st_size for p in Path(directory).glob("*.safetensors")]
    except OSError:
        return None
    return sum(sizes) or None


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name.startswith("--") and "--" + name[2:].replace("_", "-") == flag:
            return value if eq else (args[i + 1] if i + 1 < len(args) else None)
    return None


def hub_cache(env: Mapping[str, str], args: Sequence[str]) -> str:
    """Where vLLM puts a Hugging Face download: ``--download-dir``, else huggingface_hub's
    rule (HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
    ~/.cache/huggingface/hub)."""
    given = _flag_value(args, "--download-dir") or env.get("HF_HUB_CACHE")
    if given:
        return os.path.expanduser(given)
    home = env.get("HF_HOME")
    if not home:
        xdg = env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME", "~"), ".cache")
        home = os.path.join(xdg, "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def _existing(path: str) -> str:
    """``path`` or its nearest existing parent (a cache not made yet is made there)."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def facts(model: str, args: Sequence[str], env: Mapping[str, str]) -> FsFacts:
    """Where this node reads ``model`` from, and what holds it."""
    label = ""
    if os.path.isdir(model):
        where = os.path.realpath(model)
        size = checkpoint_bytes(where)
    elif model.startswith(("/", "./", "../", "~")):
        return FsFacts(where=None, why=f"{model} is not a directory on this node")
    elif model.count("/") > 1:
        return FsFacts(where=None, why=f"{model} is not a local path")
    else:
        cache = hub_cache(env, args)
        where, size = _existing(os.path.join(cache, "models--" + model.replace("/", "--"))), None
        label = f"model {model} (Hugging Face cache {cache}, checked at {where})"
    return FsFacts(
        label=label,
        where=where,
        magic=statfs_type(where),
        mount_type=mount_type(where),
        checkpoint_bytes=size,
        available_bytes=available_bytes(),
    )


def tuned(
    serve: ServeStart, version: str, env: Mapping[str, str], log: Callable[[str], None]
) -> ServeStart:
    """``serve`` with the load strategy the model's file system calls for (logged)."""
    decision = decide_loading(facts(serve.model, serve.args, env), version, serve.args)
    log(decision.reason)
    return serve if decision.strategy is None else serve.loading(decision.strategy)


def offline_switch(env: Mapping[str, str]) -> str | None:
    """The offline variable ``env`` sets (``HF_HUB_OFFLINE=1``), or None."""
    for key in OFFLINE_SWITCHES:
        if env.get(key, "").upper() in _TRUE:
            return f"{key}={env[key]}"
    return None


def revision_of(args: Sequence[str]) -> str:
    """The revision ``vllm serve`` is given (``--revision``), else ``main``."""
    return _flag_value(args, "--revision") or "main"


def in_hub_cache(model: str, revision: str, cache: str) -> bool:
    """Whether the Hugging Face cache ``cache`` holds ``model``'s config.json at
    ``revision`` (a branch the cache has a ref for, or a commit): huggingface_hub's own
    lookup, no network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model, "config.json", cache_dir=cache, revision=revision)
    except (OSError, ValueError):
        return False
    return isinstance(found, str)


def unstaged_hub_id(model: str) -> bool:
    """``model`` is a hub id (``org/name``), not a directory on this node."""
    return not os.path.isdir(model) and HUB_ID_RE.fullmatch(model) is not None


def check_offline_source(model: str, args: Sequence[str], env: Mapping[str, str]) -> None:
    """Refuse a hub id that is neither staged (the plan would have given its directory)
    nor in this node's Hugging Face cache when ``env`` says offline: vLLM could only
    retry the hub. RuntimeFailure, naming the model and how to stage it."""
    switch = offline_switch(env)
    if switch is None or not unstaged_hub_id(model):
        return
    revision, cache = revision_of(args), hub_cache(env, args)
    if in_hub_cache(model, revision, cache):
        return
    stage = model if revision == "main" else f"{model} --revision {revision}"
    raise RuntimeFailure(
        f"model {model}: not staged and not in this node's Hugging Face cache ({cache}), "
        f"and the node runs offline ({switch}): vLLM would only retry the hub",
        fix=f"run: vllm-hpc stage {stage} on the login node",
    )
