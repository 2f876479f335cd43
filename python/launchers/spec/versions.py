"""Version numbers, read with ``packaging`` (PEP 440): '0.11.1', 'v0.9', '0.11.1rc2',
'0.32.0+cpu'. The one parser for vLLM's and Ray's versions, and the one table of what
each vLLM release brings or drops for the flags and variables vllm-hpc emits."""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

Release = tuple[int, int, int]

# The vLLM releases whose own `vllm serve` parser was asked about every flag the planner
# emits, for every layout (`bench/vllm_flags.py`, output in bench/results/). The newest
# is the default target (defaults.DEFAULT_VLLM_VERSION; a unit test keeps them in step).
CHECKED_RELEASES = ("0.32.0", "0.33.0")

# First vLLM release with each feature (checked against vLLM's source).
FEATURE_SINCE: dict[str, Release] = {
    "nnodes": (0, 11, 1),  # --nnodes/--node-rank/--master-addr/--master-port
    "all2all_flag": (0, 11, 1),  # --all2all-backend replaces VLLM_ALL2ALL_BACKEND
    "headless_dp": (0, 9, 0),  # --headless --data-parallel-start-rank
    "api_server_count": (0, 9, 0),
    "dp_ray_backend": (0, 10, 0),  # --data-parallel-backend ray
    # --shutdown-timeout: SIGTERM drains in-flight requests (checked in 0.32.0's parser;
    # earlier releases are not claimed)
    "shutdown_timeout": (0, 32, 0),
    # --safetensors-load-strategy with 'prefetch' (lazy/eager/prefetch/torchao; checked in
    # 0.32.0's and 0.33.0's parsers; earlier releases are not claimed)
    "safetensors_load_strategy": (0, 32, 0),
}

# vLLM variables a release stopped reading: set in a plan for a target at or after that
# release they do nothing, and the plan says so (checked against vllm/envs.py of 0.32.0
# and 0.33.0). 0.33 keeps only Ray executor V2 (vllm/v1/executor/ray_executor.py is gone;
# V2 was already the default in 0.32).
REMOVED_ENV: dict[str, tuple[Release, str]] = {
    "VLLM_USE_RAY_V2_EXECUTOR_BACKEND": ((0, 33, 0), "Ray executor V2 is its only Ray executor"),
    "VLLM_USE_RAY_COMPILED_DAG_OVERLAP_COMM": ((0, 33, 0), "it went with the V1 Ray executor"),
    "VLLM_USE_RAY_WRAPPED_PP_COMM": ((0, 33, 0), "it went with the V1 Ray executor"),
}


def release(text: str) -> Release:
    """The release triple of ``text``: '0.32.0+cpu' -> (0, 32, 0), 'v0.9' -> (0, 9, 0).
    Raises ValueError for what is not a version."""
    try:
        parts = Version(text.strip()).release
    except InvalidVersion:
        raise ValueError(f"{text!r} is not a version") from None
    major, minor, micro = (*parts, 0, 0)[:3]
    return major, minor, micro


def shown(triple: Release) -> str:
    """(0, 32, 0) -> '0.32.0'."""
    return ".".join(map(str, triple))
