from __future__ import annotations

from pathlib import Path

import pytest

from launchers.errors import InputError, RegistryError
from launchers.input.registry import (
    BUILTIN,
    Registry,
    load_registry,
    parse_registry_text,
    registry_paths,
    schema,
)

REQUIRED = (
    "llama-3.2-3b-instruct",
    "llama-3.1-8b-instruct",
    "llama-3.1-70b-instruct",
    "gpt-oss-20b",
    "deepseek-v3",
    "mixtral-8x7b-instruct",
)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_builtin_has_day_one_models(registry: Registry) -> None:
    for name in REQUIRED:
        spec = registry.get(name)
        assert spec.description, name
        assert spec.model, name
        assert spec.served_model_name, name
        assert spec.max_model_len and spec.gpu_memory_utilization, name
    seventy = registry.get("llama-3.1-70b-instruct")
    assert (seventy.tensor_parallel_size, seventy.pipeline_parallel_size) == (4, 2)
    assert (seventy.nodes, seventy.gpus_per_node) == (2, 4)
    ds = registry.get("deepseek-v3")
    assert ds.enable_expert_parallel and ds.data_parallel_size == 16


def test_layers_override_per_field_and_merge_env(tmp_path: Path) -> None:
    site = write(
        tmp_path,
        "site.yaml",
        "site:\n  partition: gpu\n  gpus_per_node: 8\n"
        "models:\n  deepseek-v3:\n    env:\n      NCCL_DEBUG: WARN\n",
    )
    user = write(
        tmp_path,
        "user.yaml",
        "site:\n  account: proj42\n"
        "models:\n  llama-3.2-3b-instruct:\n    max-model-len: 4096\n"
        "  my-model:\n    model: /shared/models/mine\n    tensor-parallel-size: 2\n",
    )
    reg = load_registry([user], {"HOME": "/x", "VLLM_HPC_SITE_CONFIG": site})
    assert reg.site.partition == "gpu" and reg.site.account == "proj42"
    assert reg.site_sources == {"partition": site, "gpus_per_node": site, "account": user}
    small = reg.get("llama-3.2-3b-instruct")
    assert small.max_model_len == 4096
    assert small.model == "meta-llama/Llama-3.2-3B-Instruct"
    assert reg.sources["llama-3.2-3b-instruct"]["max_model_len"] == user
    assert reg.sources["llama-3.2-3b-instruct"]["model"] == BUILTIN
    assert reg.get("deepseek-v3").env == {"VLLM_USE_DEEP_GEMM": "1", "NCCL_DEBUG": "WARN"}
    assert reg.get("my-model").tensor_parallel_size == 2


def test_registry_env_var_and_user_file(tmp_path: Path) -> None:
    (tmp_path / "cfg" / "vllm-hpc").mkdir(parents=True)
    (tmp_path / "cfg" / "vllm-hpc" / "models.yaml").write_text("site:\n  qos: high\n")
    extra = write(tmp_path, "a.yaml", "site:\n  qos: low\n")
    env = {"HOME": "/x", "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "VLLM_HPC_REGISTRY": extra}
    paths = registry_paths([], env)
    assert [p.name for p in paths[1:]] == ["models.yaml", "a.yaml"]
    assert load_registry([], env).site.qos == "low"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "models:\n  x:\n    model: a/b\n    tensor_paralel_size: 2\n",
            "F: models.x: unknown key 'tensor_paralel_size' (did you mean "
            "'tensor_parallel_size'? valid keys: model, description,",
        ),
        ("models:\n  x:\n    model: [a\n", "F:4: YAML syntax error:"),
        ("sites:\n  partition: a\n", "F: unknown top-level key 'sites' (valid keys: site, models)"),
        ("models:\n  X_Big:\n    model: a/b\n", "F: model id 'X_Big' is not valid"),
        ("models:\n  x: 3\n", "F: models.x must be a mapping of settings"),
        ("site:\n  partitio: a\n", "F: site: unknown key 'partitio' (did you mean 'partition'?"),
        ("- a\n- b\n", "F: the top level must be a mapping"),
    ],
)
def test_parse_errors_name_file_entry_and_key(text: str, message: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse_registry_text(text, "F")
    assert str(info.value).startswith(message)


def test_merged_validation_names_the_file_of_the_bad_field(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "models:\n  llama-3.2-3b-instruct:\n    max_num_seqs: lots\n")
    with pytest.raises(RegistryError) as info:
        load_registry([bad], {"HOME": "/x"})
    assert str(info.value).startswith(f"{bad}: models.llama-3.2-3b-instruct.max_num_seqs:")
    assert "'lots'" in str(info.value)


def test_new_entry_without_model(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "models:\n  mine:\n    tensor_parallel_size: 2\n")
    with pytest.raises(RegistryError, match=r"models.mine: required key 'model' is missing"):
        load_registry([bad], {"HOME": "/x"})


def test_missing_registry_file() -> None:
    with pytest.raises(RegistryError, match="registry: /nope.yaml does not exist"):
        load_registry(["/nope.yaml"], {"HOME": "/x"})


def test_unknown_model_suggests(registry: Registry) -> None:
    with pytest.raises(InputError) as info:
        registry.get("llama-3.1-70b")
    assert "did you mean llama-3.1-70b-instruct" in str(info.value)


def test_empty_file_is_fine() -> None:
    assert parse_registry_text("", "F") == {"site": {}, "models": {}}


def test_schema_lists_fields() -> None:
    data = schema()
    entry = data["properties"]["models"]["additionalProperties"]
    assert "tensor_parallel_size" in entry["properties"]
    assert entry["additionalProperties"] is False
    assert "partition" in data["properties"]["site"]["properties"]


def test_every_shipped_entry_carries_the_models_shape(registry: Registry) -> None:
    """Hub models have no local config.json: the entry's shape is what TP, PP and EP are
    checked against (values from each model's published config.json)."""
    for name, entry in registry.models.items():
        shape = entry.shape()
        assert shape is not None, name
        assert shape.is_moe == (name in {"deepseek-v3", "gpt-oss-20b", "mixtral-8x7b-instruct"})


def test_a_shape_needs_its_heads_and_layers(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "models:\n  x:\n    model: a/b\n    num_experts: 8\n")
    with pytest.raises(RegistryError, match="num_attention_heads: give it with num_experts"):
        load_registry([bad], {"HOME": "/x"})
