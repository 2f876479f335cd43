from __future__ import annotations

from collections.abc import Callable

import pytest

from launchers.errors import InputError, UnsupportedFeatureError
from launchers.plan.commands import (
    ALL2ALL_BACKENDS,
    REMOVED_ALL2ALL,
    all2all_env,
    build_ray_head_argv,
    build_ray_worker_argv,
    build_vllm_serve_argv,
    check_all2all,
    parse_version,
    supports,
)
from launchers.spec.config import ServeConfig


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("0.11.1", (0, 11, 1)),
        ("0.32.0+cpu", (0, 32, 0)),
        ("v0.9", (0, 9, 0)),
        ("0.11.1rc2", (0, 11, 1)),
    ],
)
def test_parse_version(text: str, want: tuple[int, int, int]) -> None:
    assert parse_version(text) == want


@pytest.mark.parametrize("text", ["banana", "0.11.1 and more", "0.32.0;rm -rf", ""])
def test_parse_version_rejects_what_is_not_a_version(text: str) -> None:
    with pytest.raises(InputError, match="vllm_version: .* is not a version"):
        parse_version(text)


def test_parse_version_reads_short_and_local_versions() -> None:
    assert parse_version("0.33") == (0, 33, 0)
    assert parse_version("1") == (1, 0, 0)
    assert parse_version("0.32.0.post1+cpu") == (0, 32, 0)


def test_feature_table() -> None:
    assert not supports("nnodes", "0.11.0")
    assert supports("nnodes", "0.11.1")
    assert supports("all2all_flag", "0.32.0")


def test_all2all_choices() -> None:
    assert check_all2all("deepep_low_latency") == "deepep_low_latency"
    with pytest.raises(
        InputError, match="'pplx' was removed from vLLM \\(use 'allgather_reducescatter'\\)"
    ):
        check_all2all("pplx")
    with pytest.raises(InputError, match="unknown backend 'fast'"):
        check_all2all("fast")


def test_ray_argv() -> None:
    assert build_ray_head_argv(port=6379, num_gpus=4) == [
        "ray",
        "start",
        "--head",
        "--node-ip-address=@NODE_IP@",
        "--port=6379",
        "--num-gpus=4",
        "--temp-dir=/tmp/ray-@JOB_ID@-@NODE_RANK@",
        "--disable-usage-stats",
        "--include-dashboard=false",
        "--block",
    ]
    head = build_ray_head_argv(port=6379, num_gpus=4, dashboard=True, block=False)
    assert "--dashboard-host=127.0.0.1" in head and "--block" not in head
    assert build_ray_worker_argv(port=6380, num_gpus=8) == [
        "ray",
        "start",
        "--address=@LEADER_IP@:6380",
        "--node-ip-address=@NODE_IP@",
        "--num-gpus=8",
        "--temp-dir=/tmp/ray-@JOB_ID@-@NODE_RANK@",
        "--disable-usage-stats",
        "--block",
    ]


def test_single_gpu_serve(make_config: Callable[..., ServeConfig]) -> None:
    argv = build_vllm_serve_argv(make_config(model="llama-3.2-3b-instruct"))
    assert argv == [
        "vllm",
        "serve",
        "meta-llama/Llama-3.2-3B-Instruct",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--served-model-name",
        "Llama-3.2-3B-Instruct",
        "--dtype",
        "bfloat16",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.9",
        "--max-num-seqs",
        "64",
        "--shutdown-timeout",
        "60",
        "--tensor-parallel-size",
        "1",
        "--middleware",  # every route needs the key (vllm_hpc_auth), not only /v1
        "vllm_hpc_auth.KeyMiddleware",
    ]


def test_ray_serve_is_explicit_and_extra_args_last(make_config: Callable[..., ServeConfig]) -> None:
    config = make_config(model="llama-3.1-70b-instruct", extra_args=("--enable-prefix-caching",))
    argv = build_vllm_serve_argv(config)
    i = argv.index("--distributed-executor-backend")
    assert argv[i + 1] == "ray"
    assert argv[-1] == "--enable-prefix-caching"
    assert argv[argv.index("--pipeline-parallel-size") + 1] == "2"


def test_native_needs_0_11_1(make_config: Callable[..., ServeConfig]) -> None:
    config = make_config(model="llama-3.1-70b-instruct", runtime="native")
    argv = build_vllm_serve_argv(config)
    assert argv[argv.index("--nnodes") + 1] == "2"
    assert argv[argv.index("--node-rank") + 1] == "@NODE_RANK@"
    assert argv[argv.index("--master-addr") + 1] == "@LEADER_IP@"
    headless = build_vllm_serve_argv(config, headless=True)
    assert headless[-1] == "--headless" and "--port" not in headless
    old = make_config(model="llama-3.1-70b-instruct", runtime="native", vllm_version="0.11.0")
    with pytest.raises(UnsupportedFeatureError, match="needs vLLM >= 0.11.1, the target is 0.11.0"):
        build_vllm_serve_argv(old)


def test_dp_leader_and_headless(make_config: Callable[..., ServeConfig]) -> None:
    config = make_config(model="deepseek-v3")
    leader = build_vllm_serve_argv(config)
    assert leader[leader.index("--data-parallel-size") + 1] == "16"
    assert leader[leader.index("--data-parallel-size-local") + 1] == "8"
    assert leader[leader.index("--api-server-count") + 1] == "8"
    assert leader[leader.index("--all2all-backend") + 1] == "allgather_reducescatter"
    assert "--enable-expert-parallel" in leader and "--headless" not in leader
    headless = build_vllm_serve_argv(config, headless=True)
    assert headless[headless.index("--data-parallel-start-rank") + 1] == "@DP_START_RANK@"
    assert "--api-server-count" not in headless and headless[-1] == "--headless"
    assert all2all_env(config) == {}


def test_old_vllm_gets_the_all2all_env_var(make_config: Callable[..., ServeConfig]) -> None:
    config = make_config(model="deepseek-v3", vllm_version="0.10.2")
    assert all2all_env(config) == {"VLLM_ALL2ALL_BACKEND": "allgather_reducescatter"}
    assert "--all2all-backend" not in build_vllm_serve_argv(config)


@pytest.mark.parametrize("backend", ALL2ALL_BACKENDS)
def test_each_all2all_backend_reaches_every_dp_rank(
    make_config: Callable[..., ServeConfig], backend: str
) -> None:
    config = make_config(model="deepseek-v3", all2all_backend=backend)
    for headless in (False, True):
        argv = build_vllm_serve_argv(config, headless=headless)
        assert argv[argv.index("--all2all-backend") + 1] == backend
    old = make_config(model="deepseek-v3", all2all_backend=backend, vllm_version="0.10.2")
    assert all2all_env(old) == {"VLLM_ALL2ALL_BACKEND": backend}


@pytest.mark.parametrize(("removed", "replacement"), sorted(REMOVED_ALL2ALL.items()))
def test_removed_all2all_backends_name_the_replacement(
    make_config: Callable[..., ServeConfig], removed: str, replacement: str
) -> None:
    with pytest.raises(InputError, match=f"'{removed}' was removed from vLLM.*'{replacement}'"):
        make_config(model="deepseek-v3", all2all_backend=removed)


def test_the_default_target_is_the_newest_checked_release() -> None:
    from launchers.defaults import DEFAULT_VLLM_VERSION
    from launchers.spec.versions import CHECKED_RELEASES, release

    assert CHECKED_RELEASES[-1] == DEFAULT_VLLM_VERSION
    assert release(CHECKED_RELEASES[-1]) == max(map(release, CHECKED_RELEASES))


def test_the_default_plan_targets_the_default(make_config: Callable[..., ServeConfig]) -> None:
    from launchers.defaults import DEFAULT_VLLM_VERSION

    config = make_config(model="llama-3.2-3b-instruct")
    assert config.vllm_version == DEFAULT_VLLM_VERSION == "0.33.0"


@pytest.mark.parametrize(
    ("version", "warned"),
    [("0.33.0", True), ("0.34.1", True), ("0.32.0", False)],
)
def test_a_variable_the_target_no_longer_reads_is_a_plan_warning(
    make_plan: Callable[..., object], version: str, warned: bool
) -> None:
    plan = make_plan(
        model="llama-3.1-70b-instruct",
        vllm_version=version,
        env={"VLLM_USE_RAY_V2_EXECUTOR_BACKEND": "0"},
    )
    line = (
        "VLLM_USE_RAY_V2_EXECUTOR_BACKEND: vLLM 0.33.0 and newer ignore it (Ray executor V2 "
        "is its only Ray executor): drop it"
    )
    assert (line in plan.warnings) == warned  # type: ignore[attr-defined]


def test_the_node_chosen_load_strategy_is_a_flag_of_its_own_release() -> None:
    from launchers.plan.commands import check_installed

    argv = ["vllm", "serve", "m", "--safetensors-load-strategy", "prefetch"]
    check_installed(argv, "0.32.0+cpu")
    with pytest.raises(UnsupportedFeatureError, match="needs vLLM >= 0.32.0, this node has 0.31"):
        check_installed(argv, "0.31.2")
