"""``stage(request)``: what ``vllm-hpc stage`` and ``Client.stage`` do, in order.

1. Refuse where it cannot work: ``HF_HUB_OFFLINE`` set (stage is the one step that
   must reach the hub), a local path (nothing to stage), a bad endpoint.
2. Decide: the hub id (a registry id resolves to its entry's model), the store, the
   endpoint, the token (a 0600 file, read here, handed to huggingface_hub as an
   argument and nowhere else: never argv, a child's environment, a plan or the manifest).
3. List the repository at the revision (its commit, each file's size and sha256) and
   choose the files by vLLM's rules (``plan.staging``). ``dry_run`` stops here.
4. Download into ``<store>/<org>--<name>/<commit>/``: the index first, to keep only the
   shards it names, then the rest; files already whole are kept (a second run resumes).
5. Verify: every chosen file, and every shard the index names, is there with the hub's
   size (and sha256 where the hub gives one). A bad file is named and removed, so the
   same command fetches it again.
6. Load the config and the tokenizer from the copy, offline (``HF_HUB_OFFLINE=1``), in
   the nodes' Python (``$VLLM_HPC_PYTHON``, else this one; this one when that one cannot
   be asked): one that does not load fails here, naming the file, and the copy is not
   recorded. Without Transformers anywhere it is said and not checked; the repository's
   own code is never run.
7. Kernels: the nodes' vLLM's ``vllm download-kernels`` where it has one (a GPU build,
   vLLM 0.32+), else one line saying why nothing is fetched (``stage.kernels``).
8. Record: the manifest (``tokenizer_checked``, ``kernels``), then (last)
   ``refs/<revision>``: only now does the copy count.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from launchers.defaults import DEFAULT_HF_ENDPOINT, STAGE_WORKERS
from launchers.errors import InputError
from launchers.input import probe
from launchers.jobdir.modelstore import StagedCopy, record, staged_copy, store_root
from launchers.jobdir.paths import ModelStore
from launchers.jobdir.safe import private_dir, read_private_text
from launchers.offline_load import LoadCheck, load_offline
from launchers.plan import staging
from launchers.spec.config import SiteSpec
from launchers.spec.fields import check_endpoint
from launchers.spec.staged import (
    StagedFile,
    StagedKernels,
    StagedManifest,
    StageRequest,
    check_hub_id,
)
from launchers.stage import hub, kernels
from launchers.stage.hub import StageError
from launchers.stage.kernels import KernelsStep

_TRUE = ("1", "ON", "YES", "TRUE")
_HASH_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class StagePlan:
    """What a stage of ``repo_id`` at ``revision`` does: the commit, where, from where,
    the files chosen (and left out, and why), which of them are already whole there, and
    what is done for the kernels (``stage.kernels``)."""

    repo_id: str
    revision: str
    commit: str
    endpoint: str
    store: str
    dest: str
    selection: staging.Selection
    present: tuple[str, ...]
    kernels: KernelsStep

    @property
    def to_fetch(self) -> tuple[staging.RemoteFile, ...]:
        return tuple(f for f in self.selection.files if f.path not in self.present)


@dataclass(frozen=True)
class StageResult:
    """``plan``: what was (or, for a dry run, would be) staged; ``copy``: the staged,
    verified copy (None for a dry run); ``tokenizer``: what loading its config and
    tokenizer offline said (None for a dry run); ``kernels``: what ``vllm download-kernels``
    did, or why it did not run (None for a dry run)."""

    plan: StagePlan
    copy: StagedCopy | None
    tokenizer: LoadCheck | None = None
    kernels: StagedKernels | None = None


def hub_id(model: str, registry_model: Callable[[str], str]) -> str:
    """The hub id to stage: ``model`` itself when it names one (``org/name``), else the
    registry entry's model; a local path has nothing to stage."""
    if model.startswith(("/", "./", "../", "~")) or model in (".", ".."):
        raise InputError(
            f"model: {model} is a path on this machine, already local",
            fix="stage a Hugging Face id (org/name) or a registry id",
        )
    name = model if "/" in model else registry_model(model)
    if name.startswith(("/", "./", "../", "~")):
        raise InputError(
            f"model: the registry entry {model} is the local path {name}, already local",
            fix="give --model that path when you submit; nothing to stage",
        )
    try:
        return check_hub_id(name)
    except ValueError as exc:
        raise InputError(f"model: {exc}", fix="give org/name, as on the model's page") from None


def token_path(flag: str | None, environ: Mapping[str, str]) -> str | None:
    """The token file: ``--token-file``, else huggingface_hub's own (``$HF_TOKEN_PATH``,
    else ``$HF_HOME/token``, else ``~/.cache/huggingface/token``) when it exists."""
    if flag:
        return flag
    home = environ.get("HOME") or "/nonexistent"
    hf_home = (
        environ.get("HF_HOME") or f"{environ.get('XDG_CACHE_HOME') or home + '/.cache'}/huggingface"
    )
    default = environ.get("HF_TOKEN_PATH") or f"{hf_home}/token"
    return default if os.path.isfile(default) else None


def read_token(path: str | None) -> str | None:
    """The token in ``path`` (None: no file, no token). The file must be the user's own
    and readable by nobody else (0600); its text is one token, never echoed."""
    if path is None:
        return None
    try:
        text = read_private_text(path, "--token-file")
    except FileNotFoundError:
        raise InputError(
            f"--token-file: {path} does not exist", fix="give the file that holds your token"
        ) from None
    token = text.strip()
    if not token or any(c.isspace() or not c.isprintable() for c in token) or len(token) > 512:
        raise InputError(
            f"--token-file: {path} does not hold one token (one line, no spaces)",
            fix="write only the token into it",
        )
    return token


def _endpoint(request: StageRequest, site: SiteSpec, environ: Mapping[str, str]) -> str:
    if request.endpoint or site.hf_endpoint:
        return str(request.endpoint or site.hf_endpoint)
    try:
        return check_endpoint(environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT) or ""
    except ValueError as exc:
        raise InputError(f"HF_ENDPOINT: {exc}", fix="set it to the mirror's URL") from None


def _refuse_offline(environ: Mapping[str, str]) -> None:
    if environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE or hub.offline_mode():
        raise InputError(
            "HF_HUB_OFFLINE is set: stage downloads from the hub and cannot run offline",
            fix="run it where the hub (or the site's mirror) is reachable, without "
            "HF_HUB_OFFLINE: env -u HF_HUB_OFFLINE vllm-hpc stage ...",
        )


def _whole(dest: Path, files: Sequence[staging.RemoteFile]) -> tuple[str, ...]:
    """The files already in ``dest`` with the hub's size."""
    return tuple(f.path for f in files if _size(dest / f.path) == f.size)


def _size(path: Path) -> int | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    return info.st_size if path.is_file() and not path.is_symlink() else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _remove_bad(dest: Path, paths: Sequence[str]) -> None:
    """Remove files found bad, and huggingface_hub's record of them, so that the next
    run fetches them again (its record alone would let it keep them)."""
    for rel in paths:
        (dest / rel).unlink(missing_ok=True)
        (dest / ".cache" / "huggingface" / "download" / f"{rel}.metadata").unlink(missing_ok=True)


def verify(dest: Path, selection: staging.Selection, *, hashes: bool) -> list[str]:
    """What is wrong with the copy in ``dest`` (``plan.staging.check_copy``)."""
    files = selection.files
    sizes = {f.path: s for f in files if (s := _size(dest / f.path)) is not None}
    sums = None
    if hashes:
        sums = {
            f.path: _sha256(dest / f.path)
            for f in files
            if f.sha256 is not None and sizes.get(f.path) == f.size
        }
    shards: list[str] = []
    if selection.index is not None and selection.index in sizes:
        try:
            shards = staging.index_shards(json.loads((dest / selection.index).read_text()))
        except ValueError as exc:
            return [f"{selection.index}: {exc}"]
    return staging.check_copy(files, sizes, sums, shards)


def check_tokenizer(dest: Path, environ: Mapping[str, str], this_python: str) -> LoadCheck:
    """Load the config and the tokenizer of the copy in ``dest`` offline, in the nodes'
    Python (``$VLLM_HPC_PYTHON``, else ``this_python``); when that one cannot be run here
    or has no Transformers, in ``this_python``. The child's environment is ``environ``
    without ``HF_TOKEN`` (nothing is fetched; the token goes nowhere but the hub)."""
    env = {k: v for k, v in environ.items() if k != "HF_TOKEN"}
    nodes = environ.get("VLLM_HPC_PYTHON") or this_python
    first = load_offline([nodes], str(dest), env)
    if first.status != "unavailable" or os.path.abspath(nodes) == os.path.abspath(this_python):
        return first
    here = load_offline([this_python], str(dest), env)
    if here.status == "unavailable":
        detail = f"the nodes' Python: {first.detail}; this Python: {here.detail}"
        return LoadCheck("unavailable", nodes, detail)
    detail = f"{here.detail} (the nodes' Python: {first.detail})"
    return replace(here, detail=detail)


@dataclass(frozen=True)
class NodeStage:
    """``stage`` as a job's node runs it (``--via sbatch``): everything decided here (the
    hub id, the store, the hub, the token's file), so the node's own environment only
    gives it its Python. ``argv`` names the token's file, never the token."""

    repo_id: str
    revision: str
    store: str
    endpoint: str
    token_file: str | None
    argv: tuple[str, ...]


def node_stage(
    request: StageRequest,
    environ: Mapping[str, str],
    site: SiteSpec,
    registry_model: Callable[[str], str],
    *,
    python: str = sys.executable,
    as_json: bool = False,
) -> NodeStage:
    """The ``stage`` command a node runs for ``request``: the nodes' Python
    (``$VLLM_HPC_PYTHON``, else ``python``) with the resolved hub id, revision, store
    (absolute), hub and token file (checked here: the user's, 0600, one token, before
    anything is queued). The same refusals as here come first (``HF_HUB_OFFLINE``: the
    job inherits this environment)."""
    _refuse_offline(environ)
    repo_id = hub_id(request.model, registry_model)
    endpoint = _endpoint(request, site, environ)
    store = os.path.abspath(store_root(request.dest, environ, site.model_store))
    token_file = token_path(request.token_file, environ)
    if token_file is not None:
        token_file = os.path.abspath(os.path.expanduser(token_file))
        read_token(token_file)  # refused here, not after the queue; the text goes nowhere
    nodes = environ.get("VLLM_HPC_PYTHON") or python
    argv = [nodes, "-m", "launchers", "stage", repo_id, "--revision", request.revision,
            "--dest", store, "--endpoint", endpoint]  # fmt: skip
    if token_file is not None:
        argv += ["--token-file", token_file]
    if not request.verify_hashes:
        argv.append("--no-hash")
    if not request.kernels:
        argv.append("--no-kernels")
    if as_json:
        argv.append("--json")
    return NodeStage(repo_id, request.revision, store, endpoint, token_file, tuple(argv))


def kernels_step(request: StageRequest, environ: Mapping[str, str], this_python: str
                 ) -> KernelsStep:  # fmt: skip
    """What to do for the kernels of the nodes' vLLM (``$VLLM_HPC_PYTHON``, else
    ``this_python``): its package metadata is read (in this process when it is this
    Python), vLLM is not imported."""
    nodes = environ.get("VLLM_HPC_PYTHON") or this_python
    if not request.kernels:
        return kernels.decide(nodes, probe.InstalledVllm(), asked=False)
    same = os.path.abspath(nodes) == os.path.abspath(this_python)
    found = probe.installed_here() if same else probe.installed_vllm(nodes)
    return kernels.decide(nodes, found)


def stage(
    request: StageRequest,
    environ: Mapping[str, str],
    site: SiteSpec,
    registry_model: Callable[[str], str],
    *,
    now: Callable[[], float] = time.time,
    python: str = sys.executable,
) -> StageResult:
    """Stage ``request`` (see the module docstring). ``site``: the site file's settings;
    ``registry_model``: a registry id's hub id (raises for an unknown one); ``python``:
    this Python (asked when the nodes' Python cannot be)."""
    _refuse_offline(environ)
    repo_id = hub_id(request.model, registry_model)
    endpoint = _endpoint(request, site, environ)
    store = store_root(request.dest, environ, site.model_store)
    token = read_token(token_path(request.token_file, environ))
    commit, files = hub.listing(repo_id, request.revision, endpoint, token)
    selection = staging.choose(files)
    paths = ModelStore(store)
    dest = Path(paths.copy(repo_id, commit))
    step = kernels_step(request, environ, python)

    def plan_of(chosen: staging.Selection) -> StagePlan:
        return StagePlan(repo_id, request.revision, commit, endpoint, store, str(dest), chosen,
                         _whole(dest, chosen.files), step)  # fmt: skip

    if request.dry_run:
        return StageResult(plan_of(selection), None)
    if selection.weights == "none":
        raise InputError(
            f"model {repo_id}: no weights at {request.revision} ({commit[:12]}): "
            "no top-level *.safetensors, *.bin or *.pt",
            fix="check the id and --revision; vllm-hpc stages what vLLM loads",
        )
    private_dir(dest, "model store")

    def fetch(chosen: Sequence[staging.RemoteFile], *, progress: bool) -> None:
        if not chosen:
            return
        # A file of the wrong size (cut short by an earlier run) is fetched again.
        _remove_bad(dest, [f.path for f in chosen if _size(dest / f.path) not in (None, f.size)])
        hub.download(repo_id, commit, [f.path for f in chosen], local_dir=str(dest),
                     cache_dir=paths.hub_cache(repo_id), endpoint=endpoint, token=token,
                     workers=STAGE_WORKERS, progress=progress)  # fmt: skip

    # The small files first, quietly (the index among them: it says which shards to
    # fetch; a gated model says so here, before any progress bar), then the weights.
    fetch([f for f in selection.files if f.path not in selection.weight_paths], progress=False)
    if selection.index is not None:
        try:
            weight_map = json.loads((dest / selection.index).read_text()).get("weight_map")
        except (ValueError, AttributeError):
            weight_map = None
        if isinstance(weight_map, dict) and weight_map:
            selection = staging.choose(files, {str(k): str(v) for k, v in weight_map.items()})
    fetch([f for f in selection.files if f.path in selection.weight_paths], progress=True)
    hashes = request.verify_hashes
    problems = verify(dest, selection, hashes=hashes)
    if problems:
        bad = [p.split(": ", 1)[0] for p in problems]
        _remove_bad(dest, [p for p in bad if p in selection.paths])
        raise StageError(
            f"model {repo_id}: the copy in {dest} is not whole: {'; '.join(problems)}",
            fix="the files named were removed: run the same command again to fetch them",
        )
    loaded = check_tokenizer(dest, environ, python)
    if loaded.status == "failed":
        raise StageError(
            f"model {repo_id}: its {loaded.what} does not load offline from {dest}: "
            f"{loaded.problem}",
            fix="the copy is kept but not recorded, so no job uses it: check that the "
            f"repository has that file (vllm-hpc stage {repo_id} --dry-run lists what is "
            "staged); a library the error names is installed for the nodes' Python",
        )
    fetched = kernels.fetch(step, environ)
    manifest = StagedManifest(
        repo_id=repo_id,
        revision=request.revision,
        commit=commit,
        endpoint=endpoint,
        weights=selection.weights,
        files=tuple(StagedFile(path=f.path, size=f.size, sha256=f.sha256) for f in selection.files),
        verified="size+sha256" if hashes and any(f.sha256 for f in selection.files) else "size",
        staged_at=now(),
        tokenizer_checked=loaded.status == "loaded",
        kernels=fetched,
    )
    record(store, manifest)
    found = staged_copy(store, repo_id, request.revision)
    if found is None:  # the ref and manifest were just written: only a race gets here
        raise StageError(f"model {repo_id}: {dest} was written but cannot be read back")
    return StageResult(plan_of(selection), found, loaded, fetched)
