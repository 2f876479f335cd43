"""``vllm-hpc tunnel``: the ssh port forward that reaches an endpoint on the cluster's
internal network from a laptop, through the login node. Pure but for ``login_host``."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Mapping
from urllib.parse import urlsplit

from launchers.errors import InputError


def target(url: str) -> tuple[str, int]:
    """(host, port) of an endpoint URL such as ``http://10.0.0.5:8100/v1``."""
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        raise InputError(f"endpoint: {url!r} has no host and port", fix="check the job's status")
    return parts.hostname, parts.port


def login_host(environ: Mapping[str, str], given: str | None) -> str:
    """The host a laptop ssh-es to: ``--login``, ``$VLLM_HPC_LOGIN_HOST``, else this
    machine's name (run ``tunnel`` on the login node)."""
    return given or environ.get("VLLM_HPC_LOGIN_HOST") or socket.getfqdn()


def ssh_argv(url: str, login: str, local_port: int | None, user: str | None = None) -> list[str]:
    """``ssh -N -L LOCAL:HOST:PORT USER@LOGIN``: run it on the laptop, then use
    ``http://localhost:LOCAL/v1``."""
    host, port = target(url)
    local = local_port or port
    who = user or getpass.getuser()
    return ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{local}:{host}:{port}",
            f"{who}@{login}"]  # fmt: skip


def local_url(url: str, local_port: int | None) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://localhost:{local_port or parts.port}{parts.path}"
