"""Checking and choosing the parallel layout (TP / PP / DP / EP) for an allocation.

``parse_model_arch`` and everything below it are pure; ``read_model_arch`` reads a
local model directory's ``config.json`` (the only I/O here, done at the input edge).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from launchers.errors import InputError, LayoutError
from launchers.spec import fields
from launchers.spec.config import ModelArch, ModelShape, ParallelLayout

_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4}


def parse_model_arch(config: Mapping[str, Any], source: str = "model config.json") -> ModelArch:
    """A Hugging Face ``config.json`` (as a dict) -> ModelArch. Multimodal configs keep
    the language model under ``text_config``. ``source`` names the file in errors."""
    text = config.get("text_config")
    cfg: Mapping[str, Any] = text if isinstance(text, Mapping) else config
    heads = cfg.get("num_attention_heads")
    experts = 0
    for key in _EXPERT_KEYS:
        value = cfg.get(key)
        if isinstance(value, int) and value > 0:
            experts = value
            break
    fields = {
        "model_type": str(config.get("model_type", "unknown")),
        "num_attention_heads": heads,
        "num_key_value_heads": cfg.get("num_key_value_heads") or heads,
        "num_hidden_layers": cfg.get("num_hidden_layers"),
        "hidden_size": cfg.get("hidden_size"),
        "intermediate_size": cfg.get("moe_intermediate_size") or cfg.get("intermediate_size"),
        "vocab_size": cfg.get("vocab_size"),
        "num_experts": experts,
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        "dtype": cfg.get("torch_dtype") or cfg.get("dtype"),
        "head_dim": cfg.get("head_dim"),
    }
    try:
        return ModelArch.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(
            f"{source}: {err['loc'][0]}: {err['msg']}",
            fix="is this a causal LM config.json?",
        ) from None


def read_model_arch(model: str) -> ModelArch | None:
    """Read ``<model>/config.json`` when ``model`` is a local directory, else None."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return None
    config = path / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"model: {path} has no config.json", fix="point --model at a Hugging Face model dir"
        ) from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"model: {config}:{exc.lineno}: not valid JSON: {exc.msg}",
            fix="fix or re-download the model's config.json",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"model: cannot read {config}: {exc}", fix="check the file and its permissions"
        ) from None
    if not isinstance(data, dict):
        raise InputError(
            f"model: {config} is not a JSON object",
            fix="fix or re-download the model's config.json",
        )
    return parse_model_arch(data, f"model: {config}")


@dataclass(frozen=True)
class LayoutRequest:
    """What the user (flags over registry over site) asked for; None = not said."""

    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    ep: bool = False
    token_parallel_size: int | None = None
    nodes: int | None = None
    gpus_per_node: int | None = None
    site_gpus_per_node: int | None = None
    allow_cross_node_tp: bool = False


def choose_layout(
    nodes: int, gpus_per_node: int, *, ep: bool, arch: ModelShape | None
) -> tuple[ParallelLayout, str]:
    """The layout the deployment guides recommend for an allocation: TP inside a node,
    PP across nodes; for MoE models with EP, data parallel over every GPU."""
    if ep:
        layout = ParallelLayout(
            tp=1, pp=1, dp=nodes * gpus_per_node, ep=True, nodes=nodes, gpus_per_node=gpus_per_node
        )
        return layout, (
            f"expert parallel asked: one DP rank per GPU ({nodes} x {gpus_per_node}), "
            "experts spread over all of them"
        )
    tp = gpus_per_node
    reason = f"TP = GPUs per node ({gpus_per_node}) keeps tensor traffic on the node's links"
    pp = nodes
    if arch is not None and arch.num_attention_heads % tp != 0:
        tp = max(
            d
            for d in range(1, gpus_per_node + 1)
            if arch.num_attention_heads % d == 0 and gpus_per_node % d == 0
        )
        pp = nodes * (gpus_per_node // tp)
        reason = (
            f"{arch.num_attention_heads} attention heads do not split {gpus_per_node} ways: "
            f"TP={tp}, and {pp} pipeline stages fill the {nodes * gpus_per_node} GPUs"
        )
    elif nodes > 1:
        reason += f"; PP = nodes ({nodes}) sends only activations between nodes"
    layout = ParallelLayout(tp=tp, pp=pp, nodes=nodes, gpus_per_node=gpus_per_node)
    return layout, reason


def resolve_layout(
    req: LayoutRequest, arch: ModelShape | None, origin: str = "as requested"
) -> tuple[ParallelLayout, str]:
    """Turn a request into a concrete layout and say why (``origin`` says where an
    explicit layout came from)."""
    explicit = any(v is not None for v in (req.tp, req.pp, req.dp, req.token_parallel_size))
    if not explicit:
        nodes = req.nodes or 1
        gpn = req.gpus_per_node or (req.site_gpus_per_node if req.nodes else None) or 1
        layout, reason = choose_layout(nodes, gpn, ep=req.ep, arch=arch)
        return layout.model_copy(update={"allow_cross_node_tp": req.allow_cross_node_tp}), reason
    tp, pp, dp = req.tp or 1, req.pp or 1, req.dp or 1
    world = tp * pp * dp * (req.token_parallel_size or 1)
    nodes, gpn = _allocation(world, req.nodes, req.gpus_per_node, req.site_gpus_per_node)
    if gpn > fields.MAX_GPUS_PER_NODE or nodes > fields.MAX_NODES:
        raise LayoutError(
            f"layout: TP x PP x DP = {world} GPUs would need {nodes} node(s) x {gpn} GPU(s); "
            f"vllm-hpc plans at most {fields.MAX_NODES} nodes of {fields.MAX_GPUS_PER_NODE} GPUs",
            fix="give --nodes and --gpus-per-node, or a smaller layout",
        )
    layout = ParallelLayout(
        tp=tp,
        pp=pp,
        dp=dp,
        ep=req.ep,
        token_parallel_size=req.token_parallel_size,
        nodes=nodes,
        gpus_per_node=gpn,
        allow_cross_node_tp=req.allow_cross_node_tp,
    )
    return layout, f"{origin}: TP={tp} x PP={pp} x DP={dp}"


def assumed_allocation(req: LayoutRequest, layout: ParallelLayout) -> list[str]:
    """A warning when a multi-node plan took its GPUs per node from no one: neither
    --gpus-per-node (nor a registry entry) nor the site file said, and no layout flag
    implies it."""
    explicit = any(v is not None for v in (req.tp, req.pp, req.dp, req.token_parallel_size))
    if explicit or layout.nodes < 2 or req.gpus_per_node or req.site_gpus_per_node:
        return []
    gpn = layout.gpus_per_node
    return [
        f"--gpus-per-node not given: planning {gpn} GPU{'s' if gpn > 1 else ''} per node "
        f"({layout.total_gpus} GPUs in all); give -G N or set site gpus_per_node"
    ]


def _allocation(
    world: int, nodes: int | None, gpn: int | None, site: int | None
) -> tuple[int, int]:
    """Nodes x GPUs per node for a layout of ``world`` GPUs when the user left some out."""
    if nodes is not None and gpn is not None:
        return nodes, gpn
    if nodes is not None:
        return nodes, max(1, world // nodes)
    if gpn is not None:
        return (world // gpn, gpn) if world >= gpn else (1, world)
    if site is None or world <= site:
        return 1, world
    return math.ceil(world / site), site


@dataclass(frozen=True)
class LayoutNames:
    """How a layout error names each size: as it was set (the option a user typed,
    ``--tp 16``; a registry entry's field), else by its value (``TP=16``: vllm-hpc
    chose it, or the caller does not say where it came from)."""

    tp: str
    pp: str
    dp: str
    ep: str

    @classmethod
    def of(cls, layout: ParallelLayout) -> LayoutNames:
        """Each size by its value alone."""
        return cls(tp=f"TP={layout.tp}", pp=f"PP={layout.pp}", dp=f"DP={layout.dp}", ep="EP")


def check_layout(
    layout: ParallelLayout, arch: ModelShape | None, names: LayoutNames | None = None
) -> list[str]:
    """Raise LayoutError for a layout that cannot run; return warnings for risky ones.
    ``arch``: the model's shape (a local config.json's, else its registry entry's);
    ``names``: how the errors name the sizes (default: by their values)."""
    names = names or LayoutNames.of(layout)
    _check_world(layout)
    warnings = _check_tp_placement(layout, names)
    _check_dp_ep(layout, names)
    if arch is None:
        if layout.ep:
            warnings.append(
                "cannot check that the model is MoE: its config.json is not local "
                "(a registry entry with num_experts would say)"
            )
        return warnings
    return warnings + _check_against_model(layout, arch, names)


def _check_world(layout: ParallelLayout) -> None:
    """The layout's GPUs are exactly the allocation's."""
    world, total = layout.world_size, layout.total_gpus
    if world != total:
        parts = f"TP={layout.tp} x PP={layout.pp} x DP={layout.dp}"
        if layout.token_parallel_size:
            parts += f" x TKP={layout.token_parallel_size}"
        fix = (
            f"make the product {total} (e.g. --pp {max(1, total // (layout.tp * layout.dp))}) "
            f"or request {world} GPUs in all"
            if total % (layout.tp * layout.dp) == 0
            else f"request {world} GPUs in all (nodes x gpus-per-node)"
        )
        raise LayoutError(
            f"layout: {parts} = {world} GPUs, but the allocation is {layout.nodes} node(s) x "
            f"{layout.gpus_per_node} GPU(s) = {total}",
            fix=fix,
        )


def _check_tp_placement(layout: ParallelLayout, names: LayoutNames) -> list[str]:
    """TP inside a node (it divides the node's GPUs), or across nodes when allowed."""
    warnings: list[str] = []
    if layout.tp > layout.gpus_per_node:
        if not layout.allow_cross_node_tp:
            raise LayoutError(
                f"{names.tp}: larger than the {layout.gpus_per_node} GPUs of one node",
                fix=f"use --tp {layout.gpus_per_node} --pp {layout.nodes}, or "
                "--allow-cross-node-tp if the nodes share InfiniBand/RoCE",
            )
        if layout.tp % layout.gpus_per_node != 0:
            raise LayoutError(
                f"{names.tp}: tensor parallel across nodes must be a multiple of the "
                f"{layout.gpus_per_node} GPUs per node",
                fix=f"use a TP that is a multiple of {layout.gpus_per_node}, or "
                f"--tp {layout.gpus_per_node} with PP across the nodes",
            )
        warnings.append(
            "tensor parallel crosses nodes: every layer all-reduces over the network; "
            "only fast with InfiniBand/RoCE"
        )
    elif layout.gpus_per_node % layout.tp != 0:
        raise LayoutError(
            f"{names.tp}: does not divide the {layout.gpus_per_node} GPUs of a node",
            fix="choose a TP that divides GPUs per node",
        )
    return warnings


def _check_dp_ep(layout: ParallelLayout, names: LayoutNames) -> None:
    if layout.dp > 1 and layout.nodes > 1 and layout.dp % layout.nodes != 0:
        raise LayoutError(
            f"{names.dp}: cannot be spread evenly over {layout.nodes} nodes",
            fix=f"use a DP that is a multiple of {layout.nodes}",
        )
    if layout.ep and layout.dp * layout.tp < 2:
        raise LayoutError(
            f"{names.ep}: expert parallel needs DP or TP > 1 to have something to spread "
            "experts over",
            fix="add --dp N (usually one rank per GPU)",
        )


def _check_against_model(layout: ParallelLayout, arch: ModelShape, names: LayoutNames) -> list[str]:
    """The split fits the model: heads, KV heads, layers, experts."""
    warnings: list[str] = []
    if arch.num_attention_heads % layout.tp != 0:
        fits = [
            d
            for d in range(1, layout.tp + 1)
            if arch.num_attention_heads % d == 0 and layout.gpus_per_node % d == 0
        ]
        raise LayoutError(
            f"{names.tp}: the model's {arch.num_attention_heads} attention heads cannot be "
            f"split {layout.tp} ways",
            fix=f"use --tp {fits[-1]} (divides both the heads and the GPUs per node)",
        )
    kv = arch.num_key_value_heads
    if kv >= layout.tp and kv % layout.tp != 0:
        raise LayoutError(
            f"{names.tp}: the model's {kv} KV heads cannot be split {layout.tp} ways",
            fix="use a TP that divides the KV heads",
        )
    if kv < layout.tp:
        if layout.tp % kv != 0:
            raise LayoutError(
                f"{names.tp}: not a multiple of the model's {kv} KV heads",
                fix=f"use --tp {kv} or a multiple of it",
            )
        warnings.append(f"{kv} KV heads are replicated {layout.tp // kv}x at TP={layout.tp}")
    if layout.pp > arch.num_hidden_layers:
        raise LayoutError(
            f"{names.pp}: more than the model's {arch.num_hidden_layers} layers",
            fix=f"use --pp {arch.num_hidden_layers} or fewer",
        )
    if layout.ep and not arch.is_moe:
        raise LayoutError(
            f"{names.ep}: expert parallel needs an MoE model; {arch.model_type} has no experts",
            fix="drop --ep",
        )
    return warnings


@dataclass(frozen=True)
class MemoryEstimate:
    weights_gib_per_gpu: float
    kv_gib_per_gpu: float
    available_gib_per_gpu: float

    @property
    def needed_gib_per_gpu(self) -> float:
        return self.weights_gib_per_gpu + self.kv_gib_per_gpu

    @property
    def shortfall_gib(self) -> float:
        return self.needed_gib_per_gpu - self.available_gib_per_gpu


def estimate_params(arch: ModelArch) -> int:
    """Rough parameter count of a decoder-only transformer (gated MLP)."""
    head_dim = arch.head_dim or arch.hidden_size // arch.num_attention_heads
    attn = (
        arch.hidden_size * head_dim * (2 * arch.num_attention_heads + 2 * arch.num_key_value_heads)
    )
    inter = arch.intermediate_size or 4 * arch.hidden_size
    mlp = 3 * arch.hidden_size * inter * max(1, arch.num_experts)
    embed = (arch.vocab_size or 0) * arch.hidden_size * (1 if arch.tie_word_embeddings else 2)
    return arch.num_hidden_layers * (attn + mlp) + embed


def estimate_memory(
    arch: ModelArch,
    layout: ParallelLayout,
    *,
    dtype: str,
    max_model_len: int,
    gpu_memory_gib: float,
    utilization: float,
) -> MemoryEstimate:
    """Weights plus one full-length sequence of KV cache per GPU, against what vLLM may use."""
    width = _DTYPE_BYTES.get(dtype) or _DTYPE_BYTES.get(str(arch.dtype), 2)
    gib = 1024**3
    shards = layout.tp * layout.pp
    if layout.ep:
        shards = layout.tp * layout.dp * layout.pp
    weights = estimate_params(arch) * width / shards / gib
    head_dim = arch.head_dim or arch.hidden_size // arch.num_attention_heads
    kv_heads_per_gpu = max(1, arch.num_key_value_heads // layout.tp)
    layers_per_gpu = math.ceil(arch.num_hidden_layers / layout.pp)
    kv = 2 * layers_per_gpu * kv_heads_per_gpu * head_dim * width * max_model_len / gib
    return MemoryEstimate(weights, kv, gpu_memory_gib * utilization)


def check_memory(estimate: MemoryEstimate, layout: ParallelLayout) -> None:
    if estimate.shortfall_gib <= 0:
        return
    raise LayoutError(
        f"memory: needs ~{estimate.needed_gib_per_gpu:.1f} GiB per GPU "
        f"(weights {estimate.weights_gib_per_gpu:.1f} + KV for one full sequence "
        f"{estimate.kv_gib_per_gpu:.1f}) but {layout.describe()} leaves "
        f"{estimate.available_gib_per_gpu:.1f} GiB; short by {estimate.shortfall_gib:.1f} GiB",
        fix="use more GPUs (--pp/--nodes), a lower --max-model-len, or a higher "
        "gpu_memory_utilization",
    )
