"""Bad input at the second door, registry and site files.

Every case must give exit status 2, exactly one line on stderr naming the field (or
variable) and the fix, no traceback, and nothing submitted or started.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from .conftest import assert_one_clear_line
from .helpers.cli import run

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------
# Door 2: registry files. (file text, args, env, expected start of the line); "{reg}" is
# the file's path. Without args: `vllm-hpc submit -m x --registry FILE --dry-run`.

BAD_REGISTRIES = [
    pytest.param(
        "models:\n  x:\n    model: a/b\n   bad: [\n",
        None,
        {},
        "Error: {reg}:4: YAML syntax error:",
        id="yaml-syntax",
    ),
    pytest.param(
        "models:\n\tx:\n    model: a/b\n",
        None,
        {},
        "Error: {reg}:2: YAML syntax error: found character that cannot start any token "
        "(fix the YAML at that line)",
        id="yaml-tab",
    ),
    pytest.param(
        'models:\n  x:\n    model: "a/b\n',
        None,
        {},
        "Error: {reg}:4: YAML syntax error: found unexpected end of stream",
        id="yaml-unclosed-quote",
    ),
    pytest.param(
        "models:\n  x: *base\n",
        None,
        {},
        "Error: {reg}:2: YAML syntax error: found undefined alias",
        id="yaml-undefined-alias",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    max_num_seqs: 4\n    max_num_seqs: 8\n",
        None,
        {},
        "Error: {reg}:5: duplicate key 'max_num_seqs' (keep one: YAML would silently use the last)",
        id="duplicate-key",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    tensor-parallel-size: 2\n    tensor_parallel_size: 4\n",
        None,
        {},
        "Error: {reg}: models.x: 'tensor-parallel-size' and 'tensor_parallel_size' are the "
        "same key (keep one of them)",
        id="same-key-two-spellings",
    ),
    pytest.param(
        b"models:\n  x:\n    model: caf\xe9/b\n",
        None,
        {},
        "Error: registry: {reg} is not UTF-8 text (byte 27) (save it as UTF-8)",
        id="not-utf8",
    ),
    pytest.param(
        "- llama\n- mistral\n",
        None,
        {},
        "Error: {reg}: the top level must be a mapping with 'site' and/or 'models'",
        id="top-level-list",
    ),
    pytest.param(
        "model:\n  x:\n    model: a/b\n",
        None,
        {},
        "Error: {reg}: unknown top-level key 'model' (valid keys: site, models)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    tp: 2\n",
        None,
        {},
        "Error: {reg}: models.x: unknown key 'tp' (valid keys: model, description, "
        "served_model_name, dtype, tensor_parallel_size,",
        id="unknown-key",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    max-model-length: 4096\n",
        None,
        {},
        "Error: {reg}: models.x: unknown key 'max_model_length' (did you mean "
        "'max_model_len'? valid keys: model,",
        id="unknown-key-close-match",
    ),
    pytest.param(
        "site:\n  partitions: gpu\n",
        "submit -m a/b --registry {reg} --dry-run",
        {},
        "Error: {reg}: site: unknown key 'partitions' (did you mean 'partition'? valid "
        "keys: partition,",
        id="site-unknown-key",
    ),
    pytest.param(
        "models: [llama, mistral]\n",
        None,
        {},
        "Error: {reg}: 'models' must be a mapping from model id to settings",
        id="models-not-a-mapping",
    ),
    pytest.param(
        "models:\n  x: a/b\n",
        None,
        {},
        "Error: {reg}: models.x must be a mapping of settings",
        id="entry-not-a-mapping",
    ),
    pytest.param(
        "models:\n  Llama3:\n    model: a/b\n",
        None,
        {},
        "Error: {reg}: model id 'Llama3' is not valid (use lowercase letters, digits, '.', "
        "'_' and '-')",
        id="bad-model-id",
    ),
    pytest.param(
        "models:\n  x: {}\n",
        None,
        {},
        "Error: {reg}: models.x: required key 'model' is missing (add it (the model path or "
        "Hugging Face id))",
        id="empty-entry",
    ),
    pytest.param(
        "models:\n  x:\n    max_num_seqs: 4\n",
        None,
        {},
        "Error: {reg}: models.x: required key 'model' is missing (add it (the model path or "
        "Hugging Face id))",
        id="missing-model",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    max_model_len: long\n",
        None,
        {},
        "Error: {reg}: models.x.max_model_len: Input should be a valid integer, "
        "unable to parse string as an integer (got 'long')",
        id="wrong-type-int",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    tensor_parallel_size: 2.5\n",
        None,
        {},
        "Error: {reg}: models.x.tensor_parallel_size: Input should be a valid integer, got "
        "a number with a fractional part (got 2.5)",
        id="wrong-type-fraction",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    trust_remote_code: maybe\n",
        None,
        {},
        "Error: {reg}: models.x.trust_remote_code: Input should be a valid boolean, unable "
        "to interpret input (got 'maybe')",
        id="wrong-type-bool",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    extra_args: --seed 1\n",
        None,
        {},
        "Error: {reg}: models.x.extra_args: give the arguments as a list, e.g. ['--seed', "
        "'1'], not as one string (got '--seed 1')",
        id="extra-args-as-string",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    tensor_parallel_size: 0\n",
        None,
        {},
        "Error: {reg}: models.x.tensor_parallel_size: Input should be greater than or equal "
        "to 1 (got 0)",
        id="zero-tp",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    gpu_memory_utilization: 1.5\n",
        None,
        {},
        "Error: {reg}: models.x.gpu_memory_utilization: Input should be less than or equal "
        "to 1 (got 1.5)",
        id="utilization-above-one",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    dtype: int4\n",
        None,
        {},
        "Error: {reg}: models.x.dtype: Input should be 'auto', 'bfloat16', 'float16', "
        "'half', 'float32' or 'float' (got 'int4')",
        id="bad-dtype",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    runtime: mpi\n",
        None,
        {},
        "Error: {reg}: models.x.runtime: Input should be 'auto', 'ray' or 'native' (got 'mpi')",
        id="bad-runtime",
    ),
    pytest.param(
        'models:\n  x:\n    model: ""\n',
        None,
        {},
        "Error: {reg}: models.x.model: String should have at least 1 character (got '')",
        id="empty-model",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    env:\n      1BAD: x\n",
        None,
        {},
        "Error: {reg}: models.x.env: '1BAD' is not a valid environment variable name",
        id="bad-env-name",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    env:\n      NCCL_DEBUG:\n",
        None,
        {},
        "Error: {reg}: models.x.env.NCCL_DEBUG: the value has no value (give one value, "
        'quoted, e.g. NCCL_DEBUG: "1")',
        id="env-value-missing",
    ),
    pytest.param(
        "site:\n  env:\n    CUDA_VISIBLE_DEVICES: [0, 1]\n",
        "submit -m a/b --registry {reg} --dry-run",
        {},
        "Error: {reg}: site.env.CUDA_VISIBLE_DEVICES: the value is a list, not text (give "
        'one value, quoted, e.g. CUDA_VISIBLE_DEVICES: "1")',
        id="env-value-list",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    container: docker:vllm\n",
        None,
        {},
        "Error: {reg}: models.x.container: 'docker:vllm' is not a container spec (use "
        "apptainer:IMAGE.sif, singularity:IMAGE.sif or enroot:IMAGE)",
        id="bad-container",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    data_parallel_size: 2\n"
        "    enable_expert_parallel: true\n    all2all_backend: pplx\n",
        "submit -m x --registry {reg} --nodes 1 -G 2 --dry-run",
        {},
        "Error: all2all_backend: 'pplx' was removed from vLLM (use 'allgather_reducescatter')",
        id="removed-all2all",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    extra_args: [--tensor-parallel-size, '2']\n",
        None,
        {},
        "Error: vllm serve arguments: --tensor-parallel-size 2 would override the plan's "
        "--tensor-parallel-size 1 (use --tp (registry: tensor_parallel_size)",
        id="extra-args-override-tp",
    ),
    pytest.param(
        "site:\n  time: soon\n",
        "submit -m a/b --dry-run",
        {"VLLM_HPC_SITE_CONFIG": "{reg}"},
        "Error: {reg}: site.time: 'soon' is not a SLURM time",
        id="site-bad-time",
    ),
    pytest.param(
        "site:\n  vllm_version: banana\n",
        "submit -m a/b --dry-run",
        {"VLLM_HPC_SITE_CONFIG": "{reg}"},
        "Error: {reg}: site.vllm_version: 'banana' is not a version (use a version such as 0.11.1)",
        id="site-bad-vllm-version",
    ),
    pytest.param(
        "site:\n  vllm_version: 0.10\n",
        "submit -m a/b --dry-run",
        {"VLLM_HPC_SITE_CONFIG": "{reg}"},
        "Error: {reg}: site.vllm_version: Input should be a valid string (got 0.1) (quote the "
        "value: YAML read it as the number 0.1)",
        id="site-vllm-version-as-number",
    ),
    pytest.param(
        "site:\n  gpus_per_node: four\n",
        "submit -m a/b --dry-run",
        {"VLLM_HPC_REGISTRY": "{reg}"},
        "Error: {reg}: site.gpus_per_node: Input should be a valid integer, unable to parse "
        "string as an integer (got 'four')",
        id="site-gpus-not-int",
    ),
    pytest.param(
        "site:\n  gres_style: gpu\n",
        "submit -m a/b --registry {reg} --dry-run",
        {},
        "Error: {reg}: site.gres_style: Input should be 'gpus-per-node', 'gres' or 'none' "
        "(got 'gpu')",
        id="site-bad-gres-style",
    ),
    pytest.param(
        "site:\n  vllm_features: [magic]\n",
        "submit -m a/b --registry {reg} --dry-run",
        {},
        "Error: {reg}: site.vllm_features: Input should be 'token_parallel' (got 'magic')",
        id="site-unknown-feature",
    ),
    pytest.param(
        "models:\n  x:\n    model: a/b\n    dtype: int4\n",
        "models show x --registry {reg}",
        {},
        "Error: {reg}: models.x.dtype: Input should be",
        id="models-show-bad-entry",
    ),
    pytest.param(
        "models:\n\tx:\n",
        "models list --registry {reg}",
        {},
        "Error: {reg}:2: YAML syntax error:",
        id="models-list-bad-file",
    ),
]


@pytest.mark.parametrize(("text", "args", "env", "expected"), BAD_REGISTRIES)
def test_bad_registry_is_one_clear_line(
    text: str | bytes,
    args: str | None,
    env: dict[str, str],
    expected: str,
    tmp_path: Path,
    submissions: list[str],
) -> None:
    reg = tmp_path / "registry.yaml"
    if isinstance(text, bytes):
        reg.write_bytes(text)
    else:
        reg.write_text(text)
    argv = shlex.split(args or "submit -m x --registry {reg} --dry-run")
    code, out, err = run(
        [a.replace("{reg}", str(reg)) for a in argv],
        {k: v.replace("{reg}", str(reg)) for k, v in env.items()},
    )
    assert_one_clear_line(code, out, err, expected.replace("{reg}", str(reg)))
    assert submissions == []
