"""Every text of a ``spec.config.Frozen`` model is one line (``Frozen._one_line_text``):
a control character anywhere in a field (a string, a tuple's item, a mapping's key or
value, a nested model's field) is refused naming that field, as pydantic names a field
(its path, a ``value_error``); a field with a check of its own names the control
character too, not the other fault it would find."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from launchers.spec.config import ModelSpec, ServeConfig, SiteSpec, SlurmOptions, StagedModel
from launchers.spec.staged import StagedManifest

CONTROL = "Value error, contains a control character"
SPEC = {"model": "org/name"}
SERVE = {
    "name": "x", "spec": SPEC, "layout": {}, "layout_reason": "r", "runtime": "single",
    "served_model_name": "x", "job_name": "x", "job_root": "/j", "python": "/p",
}  # fmt: skip
MANIFEST = {
    "repo_id": "org/name", "revision": "main", "commit": "0" * 40,
    "endpoint": "https://hf.example.org", "weights": "safetensors", "files": [],
    "verified": "size",
}  # fmt: skip


@pytest.mark.parametrize(
    ("model", "fields", "loc", "msg"),
    [
        (ModelSpec, {"model": "org/x\ny"}, ("model",), f"{CONTROL} ('\\n' at position 5)"),
        (ModelSpec, {**SPEC, "description": "a\x1bb"}, ("description",), CONTROL),
        (ModelSpec, {**SPEC, "extra_args": ["--seed", "1\n"]}, ("extra_args",), CONTROL),
        (ModelSpec, {**SPEC, "env": {"A": "b\rc"}}, ("env",), "Value error, the value of A "),
        # A name that is also no variable name: the control character is what is named.
        (ModelSpec, {**SPEC, "env": {"A\nB": "c"}}, ("env",), CONTROL),
        (SiteSpec, {"setup": ["module load x\u2028rm -rf ~"]}, ("setup",), CONTROL),
        (SiteSpec, {"vllm_version": "0.32\n"}, ("vllm_version",), CONTROL),
        (SiteSpec, {"partition": "gpu\n"}, ("partition",), CONTROL),
        (SlurmOptions, {"time": "01:00:00\n"}, ("time",), CONTROL),
        (ServeConfig, {**SERVE, "spec": {"model": "a/b\n"}}, ("spec", "model"), CONTROL),
        (ServeConfig, {**SERVE, "job_name": "x\n"}, ("job_name",), CONTROL),
        (ServeConfig, {**SERVE, "extra_args": ["--x", "\t"]}, ("extra_args",), CONTROL),
        (
            StagedModel,
            {
                "repo_id": "a/b",
                "revision": "main",
                "commit": "0" * 40,
                "path": "rel\n",
                "files": 1,
                "bytes": 1,
            },
            ("path",),
            CONTROL,
        ),
        (StagedManifest, {**MANIFEST, "commit": "0" * 39 + "\n"}, ("commit",), CONTROL),
        (
            StagedManifest,
            {**MANIFEST, "files": [{"path": "a", "size": 1, "sha256": "f" * 63 + "\n"}]},
            ("files", 0, "sha256"),
            CONTROL,
        ),
    ],
)
def test_a_control_character_is_refused_naming_its_field(
    model: type[BaseModel], fields: dict[str, Any], loc: tuple[Any, ...], msg: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(fields)
    error = caught.value.errors()[0]
    assert (error["loc"], error["type"]) == (loc, "value_error"), error
    assert error["msg"].startswith(msg), error["msg"]


def test_plain_text_passes_and_stays_as_given() -> None:
    spec = ModelSpec.model_validate(
        {**SPEC, "description": "ünïcode — fine", "env": {"A": "b c"}, "extra_args": ["--x"]}
    )
    assert spec.description == "ünïcode — fine" and spec.env == {"A": "b c"}
    assert ServeConfig.model_validate(SERVE).spec.model == "org/name"
