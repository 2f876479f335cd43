"""The kernels a GPU build of vLLM would fetch at its first start (FlashInfer's, since
vLLM 0.26), fetched by ``stage`` instead, where the hub and the package index are
reachable: the nodes' vLLM's own ``vllm download-kernels`` (vLLM 0.32 and later), run
by the nodes' Python (``$VLLM_HPC_PYTHON``, else this one). It installs the kernel
packages into that Python's environment, which is what the nodes run from shared
storage; nothing is kept elsewhere.

``decide`` is pure: what to run, or why nothing is (no vLLM there, a CPU build, a
release without the subcommand, a Python that cannot be asked here). ``fetch`` runs it
through ``_proc`` (an argv list, an empty stdin, the environment without the hub token)
and says what happened in one line, which the manifest records.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from launchers import _proc
from launchers.defaults import KERNELS_TIMEOUT
from launchers.errors import clipped
from launchers.input.probe import InstalledVllm
from launchers.spec.staged import StagedKernels

# `vllm download-kernels`, run as a module of the asked Python (the `vllm` script beside
# it may not be there, or on PATH may be another one).
COMMAND = ("-m", "vllm.entrypoints.cli.main", "download-kernels")
FIRST_RELEASE = "0.32"
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


@dataclass(frozen=True)
class KernelsStep:
    """What ``stage`` does for the kernels: ``argv`` to run (None: nothing, ``why``)."""

    python: str
    vllm: InstalledVllm
    argv: tuple[str, ...] | None
    why: str

    def record(self, status: str, detail: str) -> StagedKernels:
        return StagedKernels.model_validate(
            {"status": status, "python": self.python, "vllm_version": self.vllm.version,
             "detail": detail}
        )  # fmt: skip

    def skipped(self) -> StagedKernels:
        return self.record("none", self.why)


def decide(python: str, found: InstalledVllm, *, asked: bool = True) -> KernelsStep:
    """What to do for the kernels of the vLLM ``found`` for ``python`` (``asked``: False
    when ``stage --no-kernels`` said not to)."""

    def nothing(why: str) -> KernelsStep:
        return KernelsStep(python, found, None, f"kernels: {why}")

    if not asked:
        return nothing("not fetched (--no-kernels)")
    if found.error is not None:
        return nothing(f"the nodes' Python cannot be asked here ({found.error}); nothing fetched")
    if found.version is None:
        return nothing(
            f"no vLLM installed for {python} (the nodes' Python: $VLLM_HPC_PYTHON, else "
            "this one); nothing to fetch"
        )
    this = f"this vLLM ({found.version} of {python}"
    if found.cpu_build:
        return nothing(f"{this}, a CPU build) fetches no kernels; nothing to fetch")
    if not found.download_kernels:
        return nothing(
            f"{this}) has no download-kernels (vLLM {FIRST_RELEASE} and later); nothing "
            "fetched: a GPU build fetches FlashInfer's kernels at its first start, which a "
            "node without internet cannot"
        )
    return KernelsStep(python, found, (python, *COMMAND), "")


def fetch(step: KernelsStep, environ: Mapping[str, str]) -> StagedKernels:
    """Run ``step`` (``decide``'s) when it has something to run; what happened, in one
    line. The hub token is not in the child's environment: it fetches from the package
    index, never the hub's gated files."""
    if step.argv is None:
        return step.skipped()
    env = {k: v for k, v in environ.items() if k not in TOKEN_VARIABLES}
    ran = f"vllm download-kernels of vLLM {step.vllm.version} ({step.python})"
    try:
        done = _proc.run(step.argv, env=env, timeout=KERNELS_TIMEOUT, input_text="")
    except OSError as exc:
        return step.record("failed", f"kernels: {ran} could not start: {exc.strerror or exc}")
    except subprocess.TimeoutExpired:
        return step.record("failed", f"kernels: {ran} did not end in {KERNELS_TIMEOUT:.0f} s")
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines() or ["no output"]
        return step.record(
            "failed", f"kernels: {ran} failed (exit {done.returncode}): {clipped(said[-1])}"
        )
    return step.record(
        "fetched", f"kernels: {ran}: installed into that Python's environment, which the nodes run"
    )


__all__ = ["COMMAND", "KernelsStep", "decide", "fetch"]
