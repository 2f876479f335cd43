"""What a text field may hold, checked once at the edge: every value that reaches a
rendered file (sbatch text, YAML, ``.env``) or an argv passes through these.

Each check ``fullmatch``es (a trailing newline never slips through ``$``), refuses
control characters, and bounds the length. Messages name what is wrong and the fix;
pydantic prefixes the field (``validated`` turns it into one line).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Annotated

from pydantic import Field

# Sizes: generous for any real cluster, small enough that a typo (or 1e20) is refused.
MAX_NODES = 4096
MAX_GPUS_PER_NODE = 64
MAX_PARALLEL = 65536  # tp, pp, dp, token parallel: at most the GPUs of MAX_NODES nodes
MAX_API_SERVERS = 512
MAX_SHAPE = 1 << 20  # a model's heads, KV heads, layers or experts (registry entries)
MAX_TOKENS = 1 << 26  # max_model_len, max_num_batched_tokens
MAX_SEQS = 1 << 20
MAX_CPUS = 4096
MAX_GPU_MEMORY_GIB = 4096.0
MAX_TIMEOUT_SECONDS = 7 * 86400.0
MAX_TIME_MINUTES = 366 * 1440  # a SLURM --time
MAX_TEXT = 4096  # a path (PATH_MAX), a model id, an image
MAX_NAME = 256  # SLURM names, served model names
MAX_ENV_VALUE = 32768

Nodes = Annotated[int, Field(ge=1, le=MAX_NODES)]
GpusPerNode = Annotated[int, Field(ge=1, le=MAX_GPUS_PER_NODE)]
Parallel = Annotated[int, Field(ge=1, le=MAX_PARALLEL)]
ApiServers = Annotated[int, Field(ge=1, le=MAX_API_SERVERS)]
Tokens = Annotated[int, Field(ge=1, le=MAX_TOKENS)]
Seqs = Annotated[int, Field(ge=1, le=MAX_SEQS)]
Cpus = Annotated[int, Field(ge=1, le=MAX_CPUS)]
GpuMemoryGib = Annotated[float, Field(gt=0, le=MAX_GPU_MEMORY_GIB, allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, le=MAX_TIMEOUT_SECONDS, allow_inf_nan=False)]

# SLURM partition/account/qos: a name, or a comma-separated list of names.
_SLURM_NAME = r"[A-Za-z0-9][A-Za-z0-9_.+-]*"
SLURM_NAMES_RE = re.compile(rf"{_SLURM_NAME}(?:,{_SLURM_NAME})*", re.ASCII)
# SLURM --mem: a number with an optional unit (0 = all of the node's memory).
MEM_RE = re.compile(r"[0-9]+[KMGT]?", re.ASCII)
# A job root or an interpreter: it lands in #SBATCH --output and on srun's line unquoted.
PATH_RE = re.compile(r"[A-Za-z0-9._/+@:=,~-]+", re.ASCII)
# A staged model's directory: also a container bind, which ',' and ':' would split.
STORE_PATH_RE = re.compile(r"[A-Za-z0-9._/+@=~-]+", re.ASCII)
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
JOB_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*", re.ASCII)
# A host name or IPv4 address a laptop ssh-es to (the site's login_host): DNS labels.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.ASCII)
# A hub endpoint (a site's Hugging Face mirror): http(s), a host, an optional port and
# path; no user or password (they would land in manifests and logs), no query.
ENDPOINT_RE = re.compile(
    r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/-]*)?", re.ASCII
)

# A hub id with its organisation: the hub's own rule (letters, digits, '-', '_', '.';
# neither '--' nor '..' in a name; at most 96 characters each side). Its revision and
# the commit a copy was staged at (spec.staged, jobdir.modelstore).
_HUB_NAME = r"(?!.*(?:--|\.\.))[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
HUB_ID_RE = re.compile(rf"{_HUB_NAME}/{_HUB_NAME}", re.ASCII)
# A branch, a tag, a commit or refs/pr/N: no '..', no leading '-', no empty part.
REVISION_RE = re.compile(r"(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9._-]*(?:/[A-Za-z0-9._-]+)*", re.ASCII)
COMMIT_RE = re.compile(r"[0-9a-f]{40}", re.ASCII)


def control_character(text: str) -> str | None:
    """A description of the first control character in ``text`` (newline, tab, escape,
    a Unicode line separator...), or None."""
    for index, char in enumerate(text):
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return f"{char!r} at position {index}"
    return None


def plain_text(value: str, *, limit: int = MAX_TEXT) -> str:
    """One line of text: no control characters, at most ``limit`` characters."""
    found = control_character(value)
    if found is not None:
        raise ValueError(f"contains a control character ({found}); remove it")
    if len(value) > limit:
        raise ValueError(f"is {len(value)} characters long (at most {limit})")
    return value


def one_line(value: str) -> str:
    """No control character, whatever the length (``plain_text`` without its bound): what
    every text of a ``spec.config.Frozen`` model is held to, and what its own checks
    test first where they would otherwise name another fault of such a value."""
    return plain_text(value, limit=max(len(value), 1))


def not_a_flag(value: str) -> str:
    """A value placed where a command reads options must not look like one."""
    if value.startswith("-"):
        raise ValueError("starts with '-', so a command would read it as an option")
    return value


def matching(value: str, pattern: re.Pattern[str], what: str, limit: int = MAX_NAME) -> str:
    plain_text(value, limit=limit)
    if not pattern.fullmatch(value):
        raise ValueError(f"is not {what}")
    return value


def no_whitespace(value: str, what: str) -> str:
    if any(char.isspace() for char in value):
        raise ValueError(f"contains whitespace, which {what} cannot hold")
    return value


def check_env(env: Mapping[str, str]) -> Mapping[str, str]:
    """Names a shell can export; values of one line each."""
    for key, value in env.items():
        if len(key) > MAX_NAME or not ENV_NAME_RE.fullmatch(key):
            raise ValueError(f"{key[:MAX_NAME]!r} is not a valid environment variable name")
        try:
            plain_text(value, limit=MAX_ENV_VALUE)
        except ValueError as exc:
            raise ValueError(f"the value of {key} {exc}") from None
    return env


def check_endpoint(value: str | None) -> str | None:
    """A hub endpoint, without a trailing ``/``."""
    if value is None:
        return None
    plain_text(value, limit=MAX_NAME)
    if not ENDPOINT_RE.fullmatch(value):
        raise ValueError(
            f"{value[:80]!r} is not a hub endpoint (http(s)://host[:port][/path], no user, "
            "password or query: a token goes in a 0600 file, --token-file)"
        )
    return value.rstrip("/")


def check_hub_id(value: str) -> str:
    """``org/name``: a registry id (no '/') is resolved before it gets here."""
    plain_text(value, limit=MAX_NAME)
    if not HUB_ID_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a Hugging Face id (org/name: letters, digits, '-', '_', '.')"
        )
    return value


def check_revision(value: str) -> str:
    plain_text(value, limit=MAX_NAME)
    if not REVISION_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a revision (a branch, a tag or a commit: main, v1.0, 0123abc...)"
        )
    return value
