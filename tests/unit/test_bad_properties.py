"""Property tests: the layout and registry validators either accept their input or
raise the project's one-line ``InputError``, never another exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launchers.errors import InputError
from launchers.input.registry import merge_layers, parse_registry_text
from launchers.input.resolve import validated
from launchers.plan.layout import LayoutRequest, check_layout, resolve_layout
from launchers.spec.config import ModelArch, ModelSpec, SiteSpec

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------
# Properties: the validators accept or refuse with the project's one-line error.

_sizes = st.one_of(st.none(), st.integers(min_value=1, max_value=64))
_archs = st.one_of(
    st.none(),
    st.builds(
        lambda heads, kv_div, layers, experts: ModelArch(
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // kv_div),
            num_hidden_layers=layers,
            hidden_size=heads * 64,
            num_experts=experts,
        ),
        st.sampled_from([1, 2, 3, 4, 6, 8, 12, 16, 32, 64]),
        st.sampled_from([1, 2, 4, 8]),
        st.integers(min_value=1, max_value=96),
        st.sampled_from([0, 8, 64]),
    ),
)
_PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_one_line_input_error(exc: InputError, starts: tuple[str, ...]) -> None:
    text = str(exc)
    assert exc.exit_code == 2
    assert text and "\n" not in text and text == exc.one_line(), text
    assert text.startswith(starts), text


@_PROPERTY
@given(
    tp=_sizes,
    pp=_sizes,
    dp=_sizes,
    ep=st.booleans(),
    nodes=_sizes,
    gpus_per_node=_sizes,
    site_gpus=_sizes,
    cross_node=st.booleans(),
    arch=_archs,
)
def test_layout_is_valid_or_one_clear_error(
    tp: int | None,
    pp: int | None,
    dp: int | None,
    ep: bool,
    nodes: int | None,
    gpus_per_node: int | None,
    site_gpus: int | None,
    cross_node: bool,
    arch: ModelArch | None,
) -> None:
    req = LayoutRequest(
        tp=tp,
        pp=pp,
        dp=dp,
        ep=ep,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        site_gpus_per_node=site_gpus,
        allow_cross_node_tp=cross_node,
    )
    try:
        layout, reason = resolve_layout(req, arch)
        check_layout(layout, arch)
    except InputError as exc:
        assert_one_line_input_error(exc, ("layout: ", "TP=", "PP=", "DP=", "EP: "))
        return
    assert reason
    assert layout.world_size == layout.total_gpus == layout.nodes * layout.gpus_per_node
    if nodes is not None:
        assert layout.nodes == nodes
    for asked, got in ((tp, layout.tp), (pp, layout.pp), (dp, layout.dp)):
        assert asked is None or asked == got
    if arch is not None:
        assert arch.num_attention_heads % layout.tp == 0
        assert layout.pp <= arch.num_hidden_layers


_values: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-2, max_value=70000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
    st.sampled_from(["a/b", "auto", "ray", "bfloat16", "04:00:00", "0.11.1", "gpu", "x.sif"]),
    st.lists(st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=4), st.one_of(st.text(max_size=4), st.none()), max_size=2),
)


def _keys(model: type[ModelSpec] | type[SiteSpec]) -> st.SearchStrategy[str]:
    names = list(model.model_fields)
    return st.one_of(
        st.sampled_from(names),
        st.sampled_from([n.replace("_", "-") for n in names]),
        st.text(min_size=1, max_size=12),
    )


_entries = st.dictionaries(_keys(ModelSpec), _values, max_size=6)
_ids = st.one_of(st.sampled_from(["x", "llama-3.2-3b-instruct", "m.1"]), st.text(max_size=8))
_documents = st.fixed_dictionaries(
    {},
    optional={
        "models": st.one_of(st.dictionaries(_ids, st.one_of(_entries, _values), max_size=3)),
        "site": st.one_of(st.dictionaries(_keys(SiteSpec), _values, max_size=5), _values),
    },
)


@_PROPERTY
@given(document=_documents)
def test_registry_file_is_valid_or_one_clear_error(document: dict[str, Any]) -> None:
    text = yaml.safe_dump(document)
    try:
        registry = merge_layers([("F.yaml", parse_registry_text(text, "F.yaml"))])
    except InputError as exc:
        assert_one_line_input_error(exc, ("F.yaml: ", "F.yaml:"))
        return
    assert set(registry.models) == set(document.get("models") or {})
    assert all(isinstance(spec, ModelSpec) for spec in registry.models.values())


@_PROPERTY
@given(entry=_entries)
def test_model_entry_is_valid_or_one_clear_error(entry: dict[str, Any]) -> None:
    fields = {k.replace("-", "_"): v for k, v in entry.items()}
    try:
        spec = validated(ModelSpec, fields)
    except InputError as exc:
        quoted = (*map(repr, fields), *(f"'{name}." for name in ModelSpec.model_fields))
        assert_one_line_input_error(exc, (*ModelSpec.model_fields, *fields, *quoted))
        return
    assert spec.model == fields["model"]
