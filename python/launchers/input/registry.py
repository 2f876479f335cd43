"""Model registries: the shipped ``models.yaml``, a site file and user files, layered.

A registry file has two optional sections::

    site:                     # cluster defaults (SiteSpec)
      partition: gpu
      gpus_per_node: 4
    models:                   # entries by lowercase id (ModelSpec)
      llama-3.1-8b-instruct:
        model: meta-llama/Llama-3.1-8B-Instruct
        tensor-parallel-size: 2

Layers, earliest first (later ones override earlier ones field by field; ``env`` is
merged key by key): the shipped file, the site file (``$VLLM_HPC_SITE_CONFIG`` or
``/etc/vllm-hpc/site.yaml``), the user file (``$XDG_CONFIG_HOME/vllm-hpc/models.yaml``),
``$VLLM_HPC_REGISTRY`` (``:``-separated) and ``--registry FILE`` options.

The people who write a lab's registry are not the people who submit from it, so a file
is read as untrusted text: at most ``MAX_FILE_BYTES``, at most ``MAX_ALIASES`` YAML
aliases and ``MAX_NODES`` values once aliases are expanded (an alias bomb of a few
hundred bytes would otherwise expand to gigabytes), no recursive alias, and every value
an error message echoes is shortened (``errors.shown``).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from launchers.errors import SHOWN_LIMIT, InputError, RegistryError, clipped, shown
from launchers.spec.config import ModelSpec, SiteSpec

BUILTIN = "builtin"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SECTIONS = ("site", "models")
_MERGED_DICTS = ("env",)
MAX_FILE_BYTES = 256 * 1024
MAX_ALIASES = 100
MAX_NODES = 200_000


def builtin_registry_path() -> Path:
    return Path(__file__).parent.parent / "models.yaml"


def registry_paths(extra: Sequence[str], environ: Mapping[str, str]) -> list[Path]:
    """The files to layer, earliest first. Optional default locations are skipped when
    absent; files the user named explicitly must exist."""
    paths: list[Path] = [builtin_registry_path()]
    site = environ.get("VLLM_HPC_SITE_CONFIG")
    if site:
        paths.append(Path(site))
    elif Path("/etc/vllm-hpc/site.yaml").is_file():
        paths.append(Path("/etc/vllm-hpc/site.yaml"))
    config_home = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")) / ".config")
    user = Path(config_home).expanduser() / "vllm-hpc" / "models.yaml"
    if user.is_file():
        paths.append(user)
    for item in environ.get("VLLM_HPC_REGISTRY", "").split(os.pathsep):
        if item:
            paths.append(Path(item))
    paths.extend(Path(p) for p in extra)
    return paths


def _normalise_keys(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name in out:
            raise RegistryError(
                f"{where}: {shown(spelled[name])} and {shown(key)} are the same key",
                fix="keep one of them",
            )
        out[name], spelled[name] = value, str(key)
    _check_env_values(out, where)
    return out


def _named(key: Any) -> str:
    """A key for a message: as written when short and plain, else ``shown``."""
    text = str(key)
    plain = len(text) <= SHOWN_LIMIT and text.isprintable() and text.strip() == text
    return text if plain else shown(key)


def _check_env_values(fields: Mapping[str, Any], where: str) -> None:
    """``env`` values are exported as text: a list, a mapping or nothing is a mistake."""
    env = fields.get("env")
    if not isinstance(env, dict):
        return
    for key, value in env.items():
        if value is None or isinstance(value, (dict, list)):
            got = "has no value" if value is None else f"is a {type(value).__name__}, not text"
            raise RegistryError(
                f"{where}.env.{_named(key)}: the value {got}",
                fix=f'give one value, quoted, e.g. {_named(key)}: "1"',
            )


def _duplicate_key(root: Any) -> Any:
    """The first key node (in file order) that repeats a key of its mapping in a composed
    YAML tree, or None. PyYAML itself keeps the last value silently."""
    import yaml

    stack, visited, found = [root], set(), []
    while stack:
        node = stack.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in keys:
                        found.append(key)
                    keys.add(key.value)
                stack += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
    return min(found, key=lambda k: k.start_mark.index, default=None)


def _bounded_loader(text: str, source: str) -> Any:
    """A safe YAML loader over ``text`` that refuses more than ``MAX_ALIASES`` aliases
    while it composes: libyaml's parser where PyYAML has it, with PyYAML's own composer
    on top (the one step that sees each alias)."""
    import yaml
    from yaml.composer import Composer
    from yaml.constructor import SafeConstructor
    from yaml.resolver import Resolver

    class AliasLimit(Composer):
        aliases = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):  # type: ignore[attr-defined]
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    line = self.peek_event().start_mark.line + 1  # type: ignore[attr-defined]
                    raise RegistryError(
                        f"{source}:{line}: more than {MAX_ALIASES} YAML aliases",
                        fix="write the values out: a registry needs few anchors",
                    )
            return super().compose_node(parent, index)

    try:
        from yaml._yaml import CParser
    except ImportError:

        class PyLoader(AliasLimit, yaml.SafeLoader):
            pass

        return PyLoader(text)

    class CLoader(AliasLimit, CParser, SafeConstructor, Resolver):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

    return CLoader(text)


def _children(node: Any) -> list[Any]:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: Any, source: str) -> None:
    """Refuse a composed tree that is recursive (``&a [*a]``) or holds more than
    ``MAX_NODES`` values once every alias is expanded, in time linear in the file."""
    sizes: dict[int, int] = {}
    active: set[int] = set()  # the nodes on the path being walked
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            active.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_NODES:
                raise RegistryError(
                    f"{source}:{node.start_mark.line + 1}: more than {MAX_NODES} values once "
                    "its YAML aliases are expanded",
                    fix="write the values out: a registry needs few anchors",
                )
            continue
        if key in sizes:
            continue
        if key in active:
            raise RegistryError(
                f"{source}:{node.start_mark.line + 1}: a YAML alias that contains itself",
                fix="remove the recursive alias",
            )
        active.add(key)
        stack.append((node, True))
        stack += [(child, False) for child in _children(node) if id(child) not in sizes]


def _load_yaml(text: str, source: str) -> Any:
    loader = _bounded_loader(text, source)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source)
        dup = _duplicate_key(node)
        if dup is not None:
            raise RegistryError(
                f"{source}:{dup.start_mark.line + 1}: duplicate key {shown(dup.value)}",
                fix="keep one: YAML would silently use the last",
            )
        try:
            return loader.construct_document(node)
        except (ValueError, OverflowError) as exc:  # a date like 2001-13-01, a huge int
            raise RegistryError(
                f"{source}: a value YAML cannot read: {clipped(str(exc))}",
                fix="quote the value to keep it as text",
            ) from None
    finally:
        loader.dispose()


def parse_registry_text(text: str, source: str) -> dict[str, Any]:
    """YAML text -> ``{"site": {...}, "models": {id: {...}}}`` with normalised keys.

    Raises RegistryError naming the file (and line for YAML syntax errors)."""
    import yaml

    if len(text) > MAX_FILE_BYTES:
        raise _too_big(source)
    try:
        data = _load_yaml(text, source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = clipped(exc.problem or exc.context or "invalid YAML")
        raise RegistryError(
            f"{where}: YAML syntax error: {problem}", fix="fix the YAML at that line"
        ) from None
    except yaml.YAMLError as exc:
        raise RegistryError(f"{source}: YAML error: {clipped(str(exc))}") from None
    if data is None:
        return {"site": {}, "models": {}}
    if not isinstance(data, dict):
        raise RegistryError(
            f"{source}: the top level must be a mapping with 'site' and/or 'models'"
        )
    unknown = [k for k in data if k not in _SECTIONS]
    if unknown:
        raise RegistryError(
            f"{source}: unknown top-level key {shown(unknown[0])}", fix="valid keys: site, models"
        )
    site = data.get("site") or {}
    models = data.get("models") or {}
    if not isinstance(site, dict):
        raise RegistryError(f"{source}: 'site' must be a mapping of settings")
    if not isinstance(models, dict):
        raise RegistryError(f"{source}: 'models' must be a mapping from model id to settings")
    out_models: dict[str, dict[str, Any]] = {}
    for key, entry in models.items():
        name = str(key)
        if not _NAME_RE.match(name):
            raise RegistryError(
                f"{source}: model id {shown(name)} is not valid",
                fix="use lowercase letters, digits, '.', '_' and '-'",
            )
        if not isinstance(entry, dict):
            raise RegistryError(f"{source}: models.{name} must be a mapping of settings")
        fields = _normalise_keys(entry, f"{source}: models.{name}")
        _check_keys(fields, ModelSpec, f"{source}: models.{name}")
        out_models[name] = fields
    site_fields = _normalise_keys(site, f"{source}: site")
    _check_keys(site_fields, SiteSpec, f"{source}: site")
    return {"site": site_fields, "models": out_models}


def _check_keys(fields: Mapping[str, Any], model: type[BaseModel], where: str) -> None:
    valid = list(model.model_fields)
    for key in fields:
        if key not in valid:
            import difflib  # an error's hint only

            close = difflib.get_close_matches(key, valid, n=1) if len(key) < 100 else []
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise RegistryError(
                f"{where}: unknown key {shown(key)}", fix=f"{hint}valid keys: {', '.join(valid)}"
            )


@dataclass(frozen=True)
class Registry:
    """The merged registry, with where each field of each entry came from."""

    models: Mapping[str, ModelSpec]
    site: SiteSpec
    sources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    site_sources: Mapping[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()

    def get(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            import difflib  # an error's hint only

            close = (
                difflib.get_close_matches(name, list(self.models), n=3) if len(name) < 200 else []
            )
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise InputError(
                f"model: unknown model {shown(name)}",
                fix=f"{hint}see `vllm-hpc models list`, or pass a path or Hugging Face id "
                "containing '/'",
            ) from None


def _merge(
    target: dict[str, Any], origin: dict[str, str], layer: Mapping[str, Any], source: str
) -> None:
    for key, value in layer.items():
        if key in _MERGED_DICTS and isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = {**target[key], **{str(k): str(v) for k, v in value.items()}}
        elif key in _MERGED_DICTS and isinstance(value, dict):
            target[key] = {str(k): str(v) for k, v in value.items()}
        else:
            target[key] = value
        origin[key] = source


def _validate(
    model: type[BaseModel],
    fields: dict[str, Any],
    origin: dict[str, str],
    where: str,
    files: Sequence[str] = (),
) -> Any:
    """``files``: where the entry appears, named when no field of it says (an empty one)."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else ""
        named = origin.get(key) or ", ".join(sorted(set(origin.values())))
        source = named or ", ".join(dict.fromkeys(files)) or "?"
        msg = clipped(err["msg"].removeprefix("Value error, "))
        if err["type"] == "missing":
            raise RegistryError(
                f"{source}: {where}: required key {key!r} is missing",
                fix="add it (the model path or Hugging Face id)" if key == "model" else None,
            ) from None
        value = err.get("input")
        fix = None
        if err["type"] == "string_type" and isinstance(value, (int, float)):
            fix = f"quote the value: YAML read it as the number {shown(value)}"
        raise RegistryError(
            f"{source}: {where}.{key}: {msg} (got {shown(value)})", fix=fix
        ) from None


def merge_layers(layers: Sequence[tuple[str, Mapping[str, Any]]]) -> Registry:
    """Merge parsed layers (source name, parsed data), earliest first. Pure."""
    site_fields: dict[str, Any] = {}
    site_origin: dict[str, str] = {}
    entries: dict[str, dict[str, Any]] = {}
    origins: dict[str, dict[str, str]] = {}
    files: dict[str, list[str]] = {}
    for source, data in layers:
        _merge(site_fields, site_origin, data.get("site", {}), source)
        for name, fields in data.get("models", {}).items():
            _merge(entries.setdefault(name, {}), origins.setdefault(name, {}), fields, source)
            files.setdefault(name, []).append(source)
    site = _validate(SiteSpec, site_fields, site_origin, "site")
    models = {
        name: _validate(ModelSpec, fields, origins[name], f"models.{name}", files[name])
        for name, fields in entries.items()
    }
    return Registry(
        models=models,
        site=site,
        sources=origins,
        site_sources=site_origin,
        files=tuple(source for source, _ in layers),
    )


def load_registry(extra: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Registry:
    """Read and merge every registry layer (see the module docstring)."""
    env = os.environ if environ is None else environ
    layers: list[tuple[str, Mapping[str, Any]]] = []
    for path in registry_paths(extra, env):
        source = BUILTIN if path == builtin_registry_path() else str(path)
        try:
            text = _read_bounded(path, source)
        except FileNotFoundError:
            raise RegistryError(
                f"registry: {path} does not exist", fix="check the --registry / env path"
            ) from None
        except UnicodeDecodeError as exc:
            raise RegistryError(
                f"registry: {path} is not UTF-8 text (byte {exc.start})", fix="save it as UTF-8"
            ) from None
        except OSError as exc:
            raise RegistryError(
                f"registry: cannot read {path}: {exc.strerror}",
                fix="check the --registry / env path and its permissions",
            ) from None
        layers.append((source, parse_registry_text(text, source)))
    return merge_layers(layers)


def _too_big(source: str) -> RegistryError:
    return RegistryError(
        f"registry: {source} is larger than {MAX_FILE_BYTES // 1024} KiB",
        fix="a registry file is a few KiB: check that it is the right file",
    )


def _read_bounded(path: Path, source: str) -> str:
    """The file's text, reading no more than ``MAX_FILE_BYTES`` (+1 to tell); a FIFO or
    a device is refused without waiting on it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RegistryError(f"registry: {source} is not a regular file", fix="give a YAML file")
        os.set_blocking(fd, True)
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise _too_big(source)
    return data.decode("utf-8")


def schema() -> dict[str, Any]:
    """JSON schema of a registry file, for editors."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "vllm-hpc registry file",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "site": SiteSpec.model_json_schema(),
            "models": {
                "type": "object",
                "propertyNames": {"pattern": _NAME_RE.pattern},
                "additionalProperties": ModelSpec.model_json_schema(),
            },
        },
    }


def site_login_host(environ: Mapping[str, str]) -> str | None:
    """The site file's ``login_host`` (the registry files layered as for submit), for
    ``tunnel`` when neither ``--login`` nor ``$VLLM_HPC_LOGIN_HOST`` names one."""
    return load_registry((), environ).site.login_host


def site_job_root(environ: Mapping[str, str], registries: Sequence[str] = ()) -> str | None:
    """The site file's ``job_root`` (registry files layered as for submit), for
    ``jobroot.job_root``'s last resort."""
    return load_registry(registries, environ).site.job_root
