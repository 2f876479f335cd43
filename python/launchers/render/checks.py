"""What the Kubernetes and compose renderers accept, and how they escape what they emit.

Both renderers dump Python data with PyYAML (which quotes what YAML needs quoted), but
the tools that read the files interpret some text again:

- Kubernetes expands ``$(VAR)`` in a container's ``env[].value``, ``command`` and
  ``args``; ``$$`` stands for one ``$`` (``k8s_escape``).
- Compose interpolates ``$VAR`` and ``${VAR}`` in every value of the file; ``$$`` stands
  for one ``$`` (``compose_escape``). Its ``.env`` files are parsed by compose's own
  dotenv rules: a single-quoted value is taken literally (``dotenv_value``).

A value with a control character (a newline adds a ``.env`` variable or a YAML line) is
refused, with one line naming the field; so are names Kubernetes or compose would
refuse or read differently. Each check raises ``InputError``.
"""

from __future__ import annotations

import re
import reprlib
import unicodedata

from launchers.errors import InputError

MAX_TEXT = 4096  # PATH_MAX: no model, path or value we render is longer
_SHOW = reprlib.Repr()
_SHOW.maxstring = 60

# Kubernetes object names (apimachinery validation): a DNS-1123 label (namespaces,
# ``metadata.name`` of Services need DNS-1035: a letter first) or subdomain (Secrets, PVCs).
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# A resource.Quantity in the forms people write (16Gi, 200G, 0.5Ti).
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
# Docker's size syntax (units.RAMInBytes): 16gb, 2g, 512m, 1024.
_DOCKER_SIZE = re.compile(r"[0-9]+(\.[0-9]+)?[kKmMgGtTpP]?[iI]?[bB]?")
# An image reference: registry/repo[:tag][@digest], no spaces, quotes or '$'.
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")
_IMAGE_MAX = 255
# Environment variable names (POSIX; also what Kubernetes and compose .env accept).
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_URL_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")


def show(value: str) -> str:
    """``value`` as a short Python literal: control characters escaped, long ones cut."""
    return _SHOW.repr(value)


def control_char(value: str) -> str | None:
    """The first control or line-separator character of ``value`` as ``U+XXXX``."""
    for char in value:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return f"U+{ord(char):04X}"
    return None


def check_text(field: str, value: str, *, max_len: int = MAX_TEXT) -> str:
    """Refuse a control character (a newline would add a line) or a value over
    ``max_len`` characters; ``value`` otherwise."""
    bad = control_char(value)
    if bad:
        raise InputError(
            f"{field}: {show(value)} has a control character ({bad})",
            fix="remove it: rendered files take one line per value",
        )
    if len(value) > max_len:
        raise InputError(
            f"{field}: {show(value)} is {len(value)} characters long",
            fix=f"use at most {max_len}",
        )
    return value


def check_model_text(field: str, value: str) -> str:
    """A model name or path: printable, and never read as a flag."""
    check_text(field, value)
    if not value:
        raise InputError(
            f"{field}: is empty", fix="name a registry id, a Hugging Face id or a path"
        )
    if value.startswith("-"):
        raise InputError(
            f"{field}: {show(value)} starts with '-' (vLLM would read it as a flag)",
            fix="name a registry id, a Hugging Face id or an absolute path",
        )
    return value


def _name(flag: str, value: str, pattern: re.Pattern[str], max_len: int, what: str) -> str:
    check_text(flag, value, max_len=MAX_TEXT)
    if len(value) > max_len or not pattern.fullmatch(value):
        raise InputError(
            f"{flag}: {show(value)} is not a valid {what}",
            fix=f"use at most {max_len} lowercase letters, digits and '-'"
            + (" or '.'" if pattern is _DNS1123_SUBDOMAIN else "")
            + (", starting with a letter" if pattern is _DNS1035_LABEL else "")
            + ", starting and ending with a letter or digit",
        )
    return value


def k8s_namespace(flag: str, value: str) -> str:
    """A namespace: a DNS-1123 label of at most 63 characters."""
    return _name(flag, value, _DNS1123_LABEL, 63, "Kubernetes namespace (a DNS-1123 label)")


def k8s_object_name(flag: str, value: str, max_len: int) -> str:
    """A base for object names (Services are DNS-1035 labels; suffixes are added)."""
    return _name(flag, value, _DNS1035_LABEL, max_len, "Kubernetes name (a DNS-1035 label)")


def k8s_resource_name(flag: str, value: str) -> str:
    """A Secret or PersistentVolumeClaim name: a DNS-1123 subdomain (at most 253)."""
    return _name(flag, value, _DNS1123_SUBDOMAIN, 253, "Kubernetes name (a DNS-1123 subdomain)")


def compose_name(flag: str, value: str) -> str:
    """A compose project or service name (lowercase letters, digits, '-', '_')."""
    check_text(flag, value)
    if len(value) > 63 or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", value):
        raise InputError(
            f"{flag}: {show(value)} is not a valid compose name",
            fix="use at most 63 lowercase letters, digits, '-' and '_', starting with a "
            "letter or digit",
        )
    return value


def quantity(flag: str, value: str) -> str:
    """A Kubernetes quantity such as 16Gi or 200G."""
    check_text(flag, value)
    if not _QUANTITY.fullmatch(value):
        raise InputError(
            f"{flag}: {show(value)} is not a Kubernetes quantity", fix="write e.g. 16Gi or 200G"
        )
    return value


def docker_size(flag: str, value: str) -> str:
    """A Docker size such as 16gb or 512m."""
    check_text(flag, value)
    if not _DOCKER_SIZE.fullmatch(value):
        raise InputError(f"{flag}: {show(value)} is not a size", fix="write e.g. 16gb or 512m")
    return value


def image(flag: str, value: str) -> str:
    """An image reference (``registry/repo:tag`` or ``...@sha256:...``)."""
    check_text(flag, value)
    if len(value) > _IMAGE_MAX or not _IMAGE.fullmatch(value):
        raise InputError(
            f"{flag}: {show(value)} is not an image reference",
            fix="write REGISTRY/REPO:TAG, e.g. registry.example/vllm-hpc:0.1.0",
        )
    return value


def url_path(field: str, value: str) -> str:
    """An HTTP path such as ``/health`` (it is put into a probe's URL)."""
    check_text(field, value)
    if not _URL_PATH.fullmatch(value):
        raise InputError(f"{field}: {show(value)} is not a URL path", fix="write e.g. /health")
    return value


def env_entries(env: dict[str, str]) -> dict[str, str]:
    """``env`` with every name and value checked (a name must be a variable name)."""
    for key, value in env.items():
        check_text("env", key, max_len=256)
        if not _ENV_NAME.fullmatch(key):
            raise InputError(
                f"env: {show(key)} is not a variable name",
                fix="use letters, digits and '_', not starting with a digit",
            )
        check_text(f"env {key}", value)
    return env


def k8s_escape(value: str) -> str:
    """``value`` as Kubernetes reads it back after expanding ``$(VAR)``: every ``$``
    doubled (``$$`` is one literal ``$``, whatever follows it)."""
    return value.replace("$", "$$")


def compose_escape(value: str) -> str:
    """``value`` as compose reads it back after interpolating ``$VAR``/``${VAR}``."""
    return value.replace("$", "$$")


def dotenv_value(field: str, value: str) -> str:
    """``value`` for a compose ``.env`` line, read back exactly: bare when it is plain,
    else in single quotes (taken literally: no ``$`` interpolation, no ``#`` comment).
    A single quote or a backslash cannot be carried that way and is refused."""
    check_text(field, value)
    if re.fullmatch(r"[A-Za-z0-9_./@:+-]*", value):
        return value
    if "'" in value or "\\" in value:
        raise InputError(
            f"{field}: {show(value)} has a quote or a backslash (a compose .env value "
            "cannot carry it)",
            fix="rename the model or its path without ' and \\",
        )
    return f"'{value}'"
