"""Which environment variables hold secrets: the one rule every reader and renderer uses.

A secret's value never goes on a command line, into a rendered file (sbatch text,
``plan.json``, compose, Kubernetes manifests) or into a log: only its name does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Names vllm-hpc itself sets to a secret (or to where one is).
SECRET_NAMES = frozenset({"VLLM_API_KEY", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN"})
# Names that look like a credential: HF_TOKEN, WANDB_API_KEY, AWS_SECRET_ACCESS_KEY...
_SECRET_RE = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)


def is_secret(name: str) -> bool:
    """True for variables whose value must never be on a command line or in a file."""
    return name in SECRET_NAMES or bool(_SECRET_RE.search(name))


def split(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(plain, secret)``: ``env`` divided by ``is_secret``, each sorted by name."""
    plain = {k: v for k, v in sorted(env.items()) if not is_secret(k)}
    secret = {k: v for k, v in sorted(env.items()) if is_secret(k)}
    return plain, secret
