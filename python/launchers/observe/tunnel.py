"""``vllm-hpc tunnel``: the ssh port forward that reaches an endpoint on the cluster's
internal network from a laptop, through the login node. Pure but for ``login_host``."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from launchers.errors import InputError, shown
from launchers.spec.fields import control_character


def target(url: str) -> tuple[str, int]:
    """(host, port) of an endpoint URL such as ``http://10.0.0.5:8100/v1``."""
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        raise InputError(f"endpoint: {url!r} has no host and port", fix="check the job's status")
    return parts.hostname, parts.port


def ssh_word(value: str, field: str) -> str:
    """A user or host name for ssh's destination: one word that ssh cannot read as an
    option (``-oProxyCommand=...`` runs a command on the laptop). Refused: a leading
    ``-``, whitespace, a control character."""
    found = control_character(value)
    if found is not None:
        raise InputError(f"{field}: {shown(value)} contains a control character ({found})",
                         fix="give the name alone")  # fmt: skip
    if any(char.isspace() for char in value):
        raise InputError(f"{field}: {shown(value)} contains whitespace", fix="give one name")
    if value.startswith("-"):
        raise InputError(
            f"{field}: {shown(value)} starts with '-', so ssh would read it as an option",
            fix="give the name alone",
        )
    return value


LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def login_host(
    environ: Mapping[str, str],
    given: str | None,
    site: Callable[[], str | None] | None = None,
) -> str:
    """The host a laptop ssh-es to: ``--login``, ``$VLLM_HPC_LOGIN_HOST``, the site
    file's ``login_host`` (``site()``, asked only then), else this machine's name (run
    ``tunnel`` on the login node); checked by ``ssh_word``. A name that means the laptop
    itself (``localhost``) is never guessed."""
    if given:
        return ssh_word(given, "--login")
    from_env = environ.get("VLLM_HPC_LOGIN_HOST")
    if from_env:
        return ssh_word(from_env, "VLLM_HPC_LOGIN_HOST")
    from_site = site() if site is not None else None
    if from_site:
        return ssh_word(from_site, "login_host")
    guessed = socket.getfqdn()
    if guessed.lower() in LOCAL_NAMES or guessed.startswith(("127.", "::1")):
        raise InputError(
            f"--login: this machine calls itself {shown(guessed)}, which a laptop would "
            "take for itself",
            fix="pass --login LOGIN_HOST (or set VLLM_HPC_LOGIN_HOST, or the site file's "
            "login_host)",
        )
    return ssh_word(guessed, "--login")


def ssh_argv(url: str, login: str, local_port: int | None, user: str | None = None) -> list[str]:
    """``ssh -N -L LOCAL:HOST:PORT -- USER@LOGIN``: run it on the laptop, then use
    ``http://localhost:LOCAL/v1``. The user and the login host are checked (``ssh_word``),
    and ``--`` ends ssh's options before the destination all the same."""
    host, port = target(url)
    local = local_port or port
    who = ssh_word(user or getpass.getuser(), "--user")
    return ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{local}:{host}:{port}",
            "--", f"{who}@{ssh_word(login, '--login')}"]  # fmt: skip


def local_url(url: str, local_port: int | None) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://localhost:{local_port or parts.port}{parts.path}"
