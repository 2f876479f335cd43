from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launchers.errors import InputError, LayoutError, UnsupportedFeatureError
from launchers.input import probe as probe_module
from launchers.input.probe import VllmProbe
from launchers.plan.layout import (
    LayoutRequest,
    check_layout,
    check_memory,
    choose_layout,
    estimate_memory,
    estimate_params,
    parse_model_arch,
    read_model_arch,
    resolve_layout,
)
from launchers.spec.config import ModelArch, ParallelLayout, ServeConfig

from .conftest import assert_one_clear_line
from .helpers.cli import run

LLAMA_8B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_hidden_layers": 32,
    "vocab_size": 128256,
    "torch_dtype": "bfloat16",
}
LLAMA_70B = {
    **LLAMA_8B,
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_attention_heads": 64,
    "num_hidden_layers": 80,
}
MIXTRAL = {**LLAMA_8B, "model_type": "mixtral", "num_local_experts": 8, "intermediate_size": 14336}
DEEPSEEK_V3 = {
    "model_type": "deepseek_v3",
    "hidden_size": 7168,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "num_hidden_layers": 61,
    "moe_intermediate_size": 2048,
    "n_routed_experts": 256,
    "vocab_size": 129280,
}


def arch(config: dict[str, Any]) -> ModelArch:
    return parse_model_arch(config)


def lay(**kw: Any) -> ParallelLayout:
    return ParallelLayout(**kw)


def test_parse_arch_reads_moe_and_text_config() -> None:
    assert arch(MIXTRAL).num_experts == 8 and arch(MIXTRAL).is_moe
    assert arch(DEEPSEEK_V3).num_experts == 256
    nested = parse_model_arch({"model_type": "llava", "text_config": LLAMA_8B})
    assert nested.num_hidden_layers == 32 and nested.model_type == "llava"
    assert not arch(LLAMA_8B).is_moe


def test_parse_arch_rejects_incomplete_config() -> None:
    with pytest.raises(InputError, match="model config.json: num_attention_heads"):
        parse_model_arch({"hidden_size": 8})


def test_probe_reads_local_dirs_only(tiny_model: Callable[..., Path], tmp_path: Path) -> None:
    assert read_model_arch("meta-llama/Llama-3.1-8B-Instruct") is None
    assert read_model_arch(str(tiny_model())) == arch(
        {
            **LLAMA_8B,
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "num_hidden_layers": 2,
            "vocab_size": 2048,
        }
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="has no config.json"):
        read_model_arch(str(empty))


def test_param_estimate_is_close_for_llama_8b() -> None:
    assert estimate_params(arch(LLAMA_8B)) == pytest.approx(8.03e9, rel=0.02)


@pytest.mark.parametrize(
    ("nodes", "gpn", "ep", "config", "want"),
    [
        pytest.param(1, 1, False, None, (1, 1, 1), id="3b-on-one-gpu"),
        pytest.param(2, 4, False, LLAMA_70B, (4, 2, 1), id="70b-tp4-pp2"),
        pytest.param(1, 8, False, LLAMA_8B, (8, 1, 1), id="single-node-tp8"),
        pytest.param(2, 8, True, DEEPSEEK_V3, (1, 1, 16), id="deepseek-dp16-ep"),
        pytest.param(
            1,
            8,
            False,
            {**LLAMA_8B, "num_attention_heads": 12, "num_key_value_heads": 12},
            (4, 2, 1),
            id="12-heads-on-8-gpus",
        ),
    ],
)
def test_choose_layout(
    nodes: int, gpn: int, ep: bool, config: dict[str, Any] | None, want: tuple[int, int, int]
) -> None:
    a = arch(config) if config else None
    layout, reason = choose_layout(nodes, gpn, ep=ep, arch=a)
    assert (layout.tp, layout.pp, layout.dp) == want
    assert layout.world_size == nodes * gpn
    assert reason
    check_layout(layout, a)


@pytest.mark.parametrize(
    ("req", "want"),
    [
        (LayoutRequest(tp=2), (1, 2)),
        (LayoutRequest(tp=4, pp=2, gpus_per_node=4), (2, 4)),
        (LayoutRequest(tp=8, pp=2, site_gpus_per_node=8), (2, 8)),
        (LayoutRequest(tp=2, gpus_per_node=4), (1, 2)),
        (LayoutRequest(dp=16, nodes=2), (2, 8)),
        (LayoutRequest(nodes=2, site_gpus_per_node=4), (2, 4)),
    ],
)
def test_resolve_fills_the_allocation(req: LayoutRequest, want: tuple[int, int]) -> None:
    layout, _ = resolve_layout(req, None)
    assert (layout.nodes, layout.gpus_per_node) == want


@pytest.mark.parametrize(
    ("layout", "config", "message"),
    [
        (
            lay(tp=4, pp=1, nodes=2, gpus_per_node=4),
            None,
            "layout: TP=4 x PP=1 x DP=1 = 4 GPUs, but the allocation is 2 node(s) x 4 GPU(s) = 8 "
            "(make the product 8 (e.g. --pp 2) or request 4 GPUs in all)",
        ),
        (lay(tp=8, nodes=2, gpus_per_node=4, pp=1, dp=1), None, None),
        (
            lay(tp=8, pp=1, nodes=1, gpus_per_node=8),
            {**LLAMA_8B, "num_attention_heads": 12},
            "TP=8: the model's 12 attention heads cannot be split 8 ways (use --tp 4 (divides "
            "both the heads and the GPUs per node))",
        ),
        (
            lay(tp=4, pp=4, nodes=4, gpus_per_node=4),
            {**LLAMA_8B, "num_hidden_layers": 2},
            "PP=4: more than the model's 2 layers (use --pp 2 or fewer)",
        ),
        (
            lay(tp=1, dp=8, ep=True, nodes=1, gpus_per_node=8),
            LLAMA_8B,
            "EP: expert parallel needs an MoE model; llama has no experts (drop --ep)",
        ),
        (
            lay(tp=1, ep=True, nodes=1, gpus_per_node=1),
            None,
            "EP: expert parallel needs DP or TP > 1",
        ),
        (
            lay(tp=3, nodes=1, gpus_per_node=3, pp=1),
            {**LLAMA_8B, "num_attention_heads": 6, "num_key_value_heads": 2},
            "TP=3: not a multiple of the model's 2 KV heads",
        ),
        (lay(tp=1, dp=3, nodes=3, gpus_per_node=1), None, None),
        (
            lay(tp=2, dp=3, nodes=2, gpus_per_node=3),
            None,
            "TP=2: does not divide the 3 GPUs of a node",
        ),
    ],
)
def test_check_layout_errors(
    layout: ParallelLayout, config: dict[str, Any] | None, message: str | None
) -> None:
    a = arch(config) if config else None
    if message is None:
        if layout.tp > layout.gpus_per_node:
            with pytest.raises(LayoutError, match="larger than the 4 GPUs of one node"):
                check_layout(layout, a)
            assert check_layout(layout.model_copy(update={"allow_cross_node_tp": True}), a)
        else:
            check_layout(layout, a)
        return
    with pytest.raises(LayoutError) as info:
        check_layout(layout, a)
    assert str(info.value).startswith(message)


def test_dp_must_spread_evenly() -> None:
    with pytest.raises(LayoutError, match="DP=3: cannot be spread evenly over 2 nodes"):
        check_layout(lay(tp=1, pp=2, dp=3, nodes=2, gpus_per_node=3), None)


def test_kv_replication_warns() -> None:
    warnings = check_layout(lay(tp=8, nodes=1, gpus_per_node=8), LLAMA_KV2)
    assert warnings == ["2 KV heads are replicated 4x at TP=8"]


LLAMA_KV2 = arch({**LLAMA_8B, "num_key_value_heads": 2})


def test_memory_fits_and_shortfall() -> None:
    big = arch(LLAMA_70B)
    ok = estimate_memory(
        big,
        lay(tp=4, pp=2, nodes=2, gpus_per_node=4),
        dtype="bfloat16",
        max_model_len=32768,
        gpu_memory_gib=80,
        utilization=0.9,
    )
    check_memory(ok, lay(tp=4, pp=2, nodes=2, gpus_per_node=4))
    one = lay(tp=1, nodes=1, gpus_per_node=1)
    short = estimate_memory(
        big, one, dtype="bfloat16", max_model_len=8192, gpu_memory_gib=80, utilization=0.9
    )
    assert short.shortfall_gib > 50
    with pytest.raises(LayoutError, match=r"memory: needs ~\d+\.\d GiB per GPU .* short by"):
        check_memory(short, one)


def test_seed_token_parallel_rules(
    make_config: Callable[..., ServeConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The seed plan's rules: TP inside the node, token parallel across nodes.
    seven_b = LayoutRequest(tp=4, token_parallel_size=4, nodes=2, gpus_per_node=8)
    layout, _ = resolve_layout(seven_b, None)
    check_layout(layout, None)
    seventy_b = LayoutRequest(tp=8, token_parallel_size=4, nodes=4, gpus_per_node=8)
    check_layout(resolve_layout(seventy_b, None)[0], None)
    # 175B: TP=8 x TKP=8 x PP=2 = 128 GPUs, but 8 nodes x 8 GPUs = 64: the seed is wrong.
    big = LayoutRequest(tp=8, pp=2, token_parallel_size=8, nodes=8, gpus_per_node=8)
    with pytest.raises(LayoutError, match=r"TP=8 x PP=2 x DP=1 x TKP=8 = 128 GPUs"):
        check_layout(resolve_layout(big, None)[0], None)
    # Upstream vLLM has no token parallelism: refused when the nodes' vLLM says so
    # (test_token_parallel.py has every answer of the capability probe).
    upstream = VllmProbe("0.32.0", frozenset({"--tensor-parallel-size"}))
    monkeypatch.setattr(probe_module, "probe_vllm_flags", lambda python, **_: upstream)
    with pytest.raises(UnsupportedFeatureError, match="upstream vLLM has no token parallelism"):
        make_config(
            model="meta-llama/Llama-2-7b-hf", tp=4, token_parallel_size=4, nodes=2, gpus_per_node=8
        )


def test_seed_examples_through_the_registry(make_config: Callable[..., ServeConfig]) -> None:
    small = make_config(model="llama-3.2-3b-instruct")
    assert (small.layout.world_size, small.runtime) == (1, "single")
    big = make_config(model="llama-3.1-70b-instruct", nodes=2, gpus_per_node=4)
    assert (big.layout.tp, big.layout.pp, big.runtime) == (4, 2, "ray")
    ds = make_config(model="deepseek-v3")
    assert (ds.layout.dp, ds.layout.dp_local, ds.layout.ep, ds.runtime) == (16, 8, True, "dp")


@given(
    nodes=st.integers(1, 16),
    gpn=st.sampled_from([1, 2, 4, 8]),
    heads=st.sampled_from([4, 8, 12, 16, 32, 40, 64]),
    layers=st.integers(16, 96),
)
def test_chosen_layouts_always_pass_their_own_checks(
    nodes: int, gpn: int, heads: int, layers: int
) -> None:
    a = arch(
        {
            **LLAMA_8B,
            "num_attention_heads": heads,
            "num_key_value_heads": heads,
            "num_hidden_layers": layers,
        }
    )
    layout, _ = choose_layout(nodes, gpn, ep=False, arch=a)
    assert layout.world_size == nodes * gpn
    if layout.pp <= layers:
        check_layout(layout, a)


@given(
    tp=st.integers(1, 16),
    pp=st.integers(1, 8),
    dp=st.integers(1, 8),
    nodes=st.integers(1, 8),
    gpn=st.integers(1, 8),
)
def test_check_layout_accepts_only_full_allocations(
    tp: int, pp: int, dp: int, nodes: int, gpn: int
) -> None:
    layout = lay(tp=tp, pp=pp, dp=dp, nodes=nodes, gpus_per_node=gpn)
    try:
        check_layout(layout, None)
    except LayoutError as exc:
        assert str(exc).split(":")[0] in {"layout", f"TP={tp}", f"DP={dp}"}
    else:
        assert tp * pp * dp == nodes * gpn
        assert tp <= gpn and gpn % tp == 0


# -- A hub model has no local config.json: its registry entry carries the shape.
# (argv of `vllm-hpc submit --dry-run`, the exact stderr line)
ENTRY_SHAPE_REFUSED = [
    pytest.param(
        ["-m", "llama-3.2-3b-instruct", "--tp", "16"],
        "Error: --tp 16: the model's 24 attention heads cannot be split 16 ways (use --tp 8 "
        "(divides both the heads and the GPUs per node))",
        id="tp-by-heads",
    ),
    pytest.param(
        ["-m", "llama-3.2-3b-instruct", "--pp", "32", "-N", "32", "-G", "1"],
        "Error: --pp 32: more than the model's 28 layers (use --pp 28 or fewer)",
        id="pp-by-layers",
    ),
    pytest.param(
        ["-m", "llama-3.1-8b-instruct", "--dp", "2", "--ep", "-G", "2"],
        "Error: --ep: expert parallel needs an MoE model; meta-llama/Llama-3.1-8B-Instruct has "
        "no experts (drop --ep)",
        id="ep-by-experts",
    ),
]


@pytest.mark.parametrize(("argv", "expected"), ENTRY_SHAPE_REFUSED)
def test_a_registry_entry_shape_checks_the_layout_of_a_hub_model(
    argv: list[str], expected: str
) -> None:
    assert_one_clear_line(*run(["submit", *argv, "--dry-run"]), expected)


def test_a_registry_entry_kv_heads_are_checked(make_config: Callable[..., ServeConfig]) -> None:
    config = make_config(
        model="llama-3.1-8b-instruct", tp=16, nodes=2, gpus_per_node=8, allow_cross_node_tp=True
    )
    assert "8 KV heads are replicated 2x at TP=16" in config.warnings


@pytest.mark.parametrize("entry", ["deepseek-v3", "gpt-oss-20b", "mixtral-8x7b-instruct"])
def test_a_shipped_moe_entry_is_known_to_be_moe(
    entry: str, make_config: Callable[..., ServeConfig]
) -> None:
    config = make_config(model=entry, ep=True)
    assert config.layout.ep
    assert not [w for w in config.warnings if "MoE" in w], config.warnings


def test_a_hub_id_without_an_entry_still_says_it_cannot_check(
    make_config: Callable[..., ServeConfig],
) -> None:
    config = make_config(model="org/some-moe", dp=2, ep=True, gpus_per_node=2)
    assert any(w.startswith("cannot check that the model is MoE") for w in config.warnings)


def test_a_local_config_json_wins_over_the_entry(
    tiny_model: Callable[..., Path], tmp_path: Path
) -> None:
    model = tiny_model(num_attention_heads=4, num_key_value_heads=4)
    reg = tmp_path / "models.yaml"
    reg.write_text(f"models:\n  x:\n    model: {model}\n    num_attention_heads: 3\n"
                   "    num_hidden_layers: 2\n")  # fmt: skip
    code, _, err = run(["submit", "-m", "x", "--tp", "2", "--dry-run"],
                       {"VLLM_HPC_REGISTRY": str(reg)})  # fmt: skip
    assert code == 0, err


# -- Nodes without GPUs per node: the site file's, else a warning that says the guess.
ASSUMED = "--gpus-per-node not given: planning 1 GPU per node (4 GPUs in all); give -G N or set site gpus_per_node"  # noqa: E501


def test_nodes_without_gpus_per_node_say_what_was_assumed() -> None:
    code, out, err = run(["submit", "-m", "org/model", "-N", "4", "--dry-run"])
    assert code == 0, err
    assert f"  warning   {ASSUMED}\n" in out
    code, out, _ = run(["submit", "-m", "org/model", "-N", "4", "--dry-run", "--json"])
    assert ASSUMED in json.loads(out)["plan"]["warnings"]


@pytest.mark.parametrize(
    ("argv", "site", "layout"),
    [
        (["-N", "4"], "site:\n  gpus_per_node: 8\n", "on 4 node(s) x 8 GPU(s)"),
        (["-N", "4", "-G", "2"], "", "on 4 node(s) x 2 GPU(s)"),
        (["-N", "2", "--tp", "4", "--pp", "2"], "", "on 2 node(s) x 4 GPU(s)"),  # the layout says
        (["-N", "1"], "", "on 1 node(s) x 1 GPU(s)"),
    ],
)
def test_gpus_per_node_said_or_implied_gives_no_warning(
    argv: list[str], site: str, layout: str, tmp_path: Path
) -> None:
    env = {}
    if site:
        (tmp_path / "site.yaml").write_text(site)
        env["VLLM_HPC_SITE_CONFIG"] = str(tmp_path / "site.yaml")
    code, out, err = run(["submit", "-m", "org/model", *argv, "--dry-run"], env)
    assert code == 0, err
    assert layout in out
    assert "--gpus-per-node not given" not in out


# -- A layout error names each size as it was set: the option typed, the registry
# entry's field, else its value (vllm-hpc chose it from the allocation).
WHO_SET_IT = [
    pytest.param(
        ["-m", "x", "--tp", "16", "-N", "2", "-G", "8"],
        "Error: --tp 16: larger than the 8 GPUs of one node (use --tp 8 --pp 2, or "
        "--allow-cross-node-tp if the nodes share InfiniBand/RoCE)",
        id="flag",
    ),
    pytest.param(
        ["-m", "x"],
        "Error: tensor_parallel_size 16 (registry entry 'x'): larger than the 8 GPUs of one "
        "node (use --tp 8 --pp 2, or --allow-cross-node-tp if the nodes share InfiniBand/RoCE)",
        id="registry",
    ),
    pytest.param(
        ["-m", "moe", "-G", "1"],
        "Error: enable_expert_parallel (registry entry 'moe'): expert parallel needs DP or "
        "TP > 1 to have something to spread experts over (add --dp N (usually one rank per "
        "GPU))",
        id="registry-ep",
    ),
    pytest.param(
        ["-m", "{model}", "-N", "4", "-G", "1"],
        "Error: PP=4: more than the model's 2 layers (use --pp 2 or fewer)",
        id="chosen",
    ),
]


@pytest.mark.parametrize(("argv", "expected"), WHO_SET_IT)
def test_a_layout_error_names_the_size_as_it_was_set(
    argv: list[str], expected: str, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    model = str(tiny_model())  # 4 heads, 2 layers, no registry entry: a chosen layout
    argv = [model if word == "{model}" else word for word in argv]
    registry = tmp_path / "models.yaml"
    registry.write_text(
        "models:\n"
        "  x:\n    model: a/b\n    tensor_parallel_size: 16\n    nodes: 2\n    gpus_per_node: 8\n"
        "  moe:\n    model: c/d\n    enable_expert_parallel: true\n"
    )
    argv = [*argv, "--registry", str(registry), "--dry-run"]
    assert_one_clear_line(*run(["submit", *argv]), expected)
