"""Jobs of a staged model (``input.resolve``'s step 1b, ``plan.staging.offline_env``,
the dry run's weights line): a hub id with a whole copy in the model store is served
from that directory, its config.json checks the layout, the nodes run offline, a
container sees the copy; a site whose nodes are offline refuses a hub model that is
not staged, with one line that says how to stage it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from launchers.errors import InputError, LayoutError
from launchers.input.planner import plan_for
from launchers.input.registry import Registry
from launchers.input.resolve import resolve
from launchers.plan.launch import LaunchPlan
from launchers.render.nodes import planned_nodes
from launchers.render.text import render_plan_json, render_plan_text, render_sbatch
from launchers.spec.config import ServeConfig, SiteSpec
from launchers.spec.request import SubmitRequest

from .conftest import PYTHON, assert_one_clear_line
from .helpers.cli import run
from .helpers.fakehub import Hub, Repo, serve
from .helpers.staged import COMMIT, CONFIG, stage_copy

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def env_with_store(environ: dict[str, str], store: Path) -> dict[str, str]:
    return {**environ, "VLLM_HPC_MODEL_STORE": str(store)}


@pytest.fixture
def configured(registry: Registry, env_with_store: dict[str, str]) -> Callable[..., ServeConfig]:
    """The request resolved as ``submit`` does; ``site``: site settings (else none)."""

    def make(site: dict[str, Any] | None = None, **kwargs: Any) -> ServeConfig:
        reg = dataclasses.replace(registry, site=SiteSpec(**(site or {})))
        return resolve(SubmitRequest(**kwargs), reg, env_with_store, PYTHON)

    return make


@pytest.fixture
def planned(configured: Callable[..., ServeConfig]) -> Callable[..., LaunchPlan]:
    def make(site: dict[str, Any] | None = None, **kwargs: Any) -> LaunchPlan:
        return plan_for(configured(site, **kwargs))

    return make


def serve_argv(plan: LaunchPlan) -> list[str]:
    serve = plan.leader.serve
    assert serve is not None
    return serve.argv()


def test_a_staged_hub_model_is_served_from_its_copy(
    planned: Callable[..., LaunchPlan], store: Path
) -> None:
    before = planned(model="org/tiny")
    assert before.model == "org/tiny" and before.staged is None
    assert serve_argv(before)[:3] == ["vllm", "serve", "org/tiny"]
    copy = stage_copy(store)
    after = planned(model="org/tiny")
    assert after.model == str(copy) and after.name == "org/tiny"
    argv = serve_argv(after)
    assert argv[:3] == ["vllm", "serve", str(copy)]
    assert argv[argv.index("--served-model-name") + 1] == "tiny"  # the user's name, as before
    assert "--revision" not in argv
    assert after.staged is not None
    assert (after.staged.repo_id, after.staged.commit) == ("org/tiny", COMMIT)
    assert (after.staged.files, after.staged.bytes) == (2, 2048 + len(json.dumps(CONFIG)))


def test_a_registry_entry_of_a_hub_id_finds_the_copy_too(
    planned: Callable[..., LaunchPlan], store: Path
) -> None:
    copy = stage_copy(store, "meta-llama/Llama-3.2-3B-Instruct")
    plan = planned(model="llama-3.2-3b-instruct")
    assert plan.model == str(copy) and plan.name == "llama-3.2-3b-instruct"
    assert plan.served_model_name == "Llama-3.2-3B-Instruct"  # the entry's, as before


def test_the_staged_config_json_checks_the_layout(
    configured: Callable[..., ServeConfig], store: Path
) -> None:
    assert configured(model="org/tiny", tp=3).arch is None  # a hub id: nothing to read
    stage_copy(store)
    config = configured(model="org/tiny")
    assert config.arch is not None and config.arch.num_attention_heads == 4
    with pytest.raises(LayoutError, match="attention heads"):
        configured(model="org/tiny", tp=3)  # 4 heads: TP 3 does not divide them


def test_the_store_is_the_flag_else_the_environment_else_the_site(
    registry: Registry, environ: dict[str, str], tmp_path: Path
) -> None:
    site_store, env_store, flag_store = (tmp_path / n for n in ("site", "env", "flag"))
    copies = {name: stage_copy(path) for name, path in
              (("site", site_store), ("env", env_store), ("flag", flag_store))}  # fmt: skip
    reg = dataclasses.replace(registry, site=SiteSpec(model_store=str(site_store)))

    def served(env: dict[str, str], **kwargs: Any) -> str:
        return resolve(SubmitRequest(model="org/tiny", **kwargs), reg, env, PYTHON).spec.model

    assert served(environ) == str(copies["site"])
    with_env = {**environ, "VLLM_HPC_MODEL_STORE": str(env_store)}
    assert served(with_env) == str(copies["env"])
    assert served(with_env, model_store=str(flag_store)) == str(copies["flag"])
    assert served(with_env, model_store=str(tmp_path / "empty")) == "org/tiny"


def test_a_relative_store_gives_an_absolute_directory(
    registry: Registry, environ: dict[str, str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    copy = stage_copy(tmp_path / "store")
    monkeypatch.chdir(tmp_path)
    config = resolve(SubmitRequest(model="org/tiny", model_store="store"), registry, environ,
                     PYTHON)  # fmt: skip
    assert config.spec.model == str(copy) and Path(config.spec.model).is_absolute()


def test_the_revision_picks_the_copy_and_else_goes_to_vllm(
    planned: Callable[..., LaunchPlan], store: Path, configured: Callable[..., ServeConfig],
    tiny_model: Callable[..., Path],
) -> None:  # fmt: skip
    stage_copy(store)  # main
    other = planned(model="org/tiny", revision="v2")
    assert other.staged is None and other.model == "org/tiny"
    argv = serve_argv(other)
    assert argv[argv.index("--revision") + 1] == "v2"
    assert "--revision" not in serve_argv(planned(model="org/tiny"))  # none asked: none given
    copy_v2 = stage_copy(store, revision="v2")
    staged = planned(model="org/tiny", revision="v2")
    assert staged.model == str(copy_v2) and "--revision" not in serve_argv(staged)
    # vLLM's own --revision after `--` would contradict the copy: it is refused.
    with pytest.raises(InputError, match="use --revision before `--`"):
        configured(model="org/tiny", extra_args=("--revision", "v2"))
    with pytest.raises(InputError, match="--revision: the model .* is a local directory"):
        configured(model=str(tiny_model()), revision="v2")


def test_an_offline_site_refuses_a_hub_model_that_is_not_staged(
    configured: Callable[..., ServeConfig], store: Path, tiny_model: Callable[..., Path]
) -> None:
    offline = {"nodes_offline": True}
    with pytest.raises(InputError) as refused:
        configured(offline, model="meta-llama/Llama-3.2-3B-Instruct")
    assert refused.value.one_line() == (
        "model meta-llama/Llama-3.2-3B-Instruct: not staged and the nodes are offline "
        "(run: vllm-hpc stage meta-llama/Llama-3.2-3B-Instruct on the login node)"
    )
    with pytest.raises(InputError, match=r"run: vllm-hpc stage org/tiny --revision v2 --dest /s"):
        configured(offline, model="org/tiny", revision="v2", model_store="/s")
    assert configured(offline, model=str(tiny_model())).staged is None  # a local path is fine
    assert configured(model="org/tiny").staged is None  # a site online: the hub, as before
    stage_copy(store)
    assert configured(offline, model="org/tiny").staged is not None


def test_the_refusal_is_one_line_and_exit_2(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("site:\n  nodes_offline: true\n")
    code, out, err = run(
        ["submit", "-m", "org/tiny", "--dry-run"],
        {"VLLM_HPC_SITE_CONFIG": str(site), "VLLM_HPC_MODEL_STORE": str(tmp_path / "store")},
    )
    assert_one_clear_line(code, out, err, "Error: model org/tiny: not staged and the nodes are")
    assert "(run: vllm-hpc stage org/tiny on the login node)" in err


def test_a_staged_job_runs_offline_last_over_the_users_env(
    planned: Callable[..., LaunchPlan], store: Path
) -> None:
    assert not set(OFFLINE) & set(planned(model="org/tiny").env)  # the hub: as before
    copy = stage_copy(store)
    plan = planned(model="org/tiny")
    assert {k: plan.env[k] for k in OFFLINE} == OFFLINE
    assert not any("HF_HUB_OFFLINE" in w for w in plan.warnings)
    turned_off = planned({"env": {"TRANSFORMERS_OFFLINE": "0"}}, model="org/tiny",
                         env={"HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"})  # fmt: skip
    assert {k: turned_off.env[k] for k in OFFLINE} == OFFLINE
    assert [w for w in turned_off.warnings if "replaced" in w] == [
        f"env: HF_HUB_OFFLINE=0 is replaced by HF_HUB_OFFLINE=1: the model is served from its "
        f"staged copy {copy}, offline",
        f"env: TRANSFORMERS_OFFLINE=0 is replaced by TRANSFORMERS_OFFLINE=1: the model is "
        f"served from its staged copy {copy}, offline",
    ]


def test_a_container_sees_the_copy_and_the_offline_env(
    planned: Callable[..., LaunchPlan], store: Path
) -> None:
    copy = stage_copy(store)
    plan = planned(model="org/tiny", container="apptainer:/img/vllm.sif")
    assert str(copy) in plan.container_binds
    (leader,) = planned_nodes(plan)
    assert leader.serve is not None and "--bind" in leader.serve
    assert f"{copy}:{copy}" in leader.serve  # bound at the same path inside
    assert leader.serve[leader.serve.index("/img/vllm.sif") + 3] == str(copy)  # vllm serve DIR
    text = render_plan_text(plan)
    assert "HF_HUB_OFFLINE=1" in text and "TRANSFORMERS_OFFLINE=1" in text
    pyxis = planned(model="org/tiny", container="enroot:vllm/vllm-openai:v0.11.1")
    assert "--container-mounts=" in render_sbatch(pyxis) and str(copy) in render_sbatch(pyxis)


def weights_line(plan: LaunchPlan) -> str:
    (line,) = [ln for ln in render_plan_text(plan).splitlines() if ln.startswith("  weights ")]
    return line.removeprefix("  weights").strip()


def test_the_dry_run_says_where_the_weights_come_from(
    planned: Callable[..., LaunchPlan], store: Path, tiny_model: Callable[..., Path]
) -> None:
    assert weights_line(planned(model="org/tiny")) == (
        "downloaded from the hub by every node at start (HF_HUB_OFFLINE not set; "
        "vllm-hpc stage copies it once)"
    )
    cached = planned(model="org/tiny", env={"HF_HUB_OFFLINE": "1"})
    assert weights_line(cached).startswith("each node's Hugging Face cache")
    local = tiny_model()
    assert weights_line(planned(model=str(local))) == f"the local directory {local}"
    copy = stage_copy(store)
    size = 2048 + len(json.dumps(CONFIG))
    assert weights_line(planned(model="org/tiny")) == (
        f"staged copy of org/tiny at {copy} (commit {COMMIT[:12]}, 2 files, "
        f"{size / 1024:.1f} KiB); offline: nothing is fetched"
    )


def test_the_plan_json_has_the_copy_only_when_there_is_one(
    planned: Callable[..., LaunchPlan], store: Path
) -> None:
    assert "staged" not in json.loads(render_plan_json(planned(model="org/tiny")))["plan"]
    stage_copy(store)
    plan = planned(model="org/tiny")
    data = json.loads(render_plan_json(plan))["plan"]
    assert data["staged"]["commit"] == COMMIT
    assert LaunchPlan.model_validate(data) == plan


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY", "HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    files = {"config.json": json.dumps(CONFIG).encode(), "tokenizer.json": b"{}",
             "model.safetensors": b"\x01" * 4096}  # fmt: skip
    with serve({"org/tiny": Repo(files, commit=COMMIT)}) as served:
        yield served


def test_stage_then_submit_serves_the_copy(hub: Hub, tmp_path: Path) -> None:
    env = {"VLLM_HPC_MODEL_STORE": str(tmp_path / "store")}
    code, out, err = run(["stage", "org/tiny", "--endpoint", hub.url], env)
    assert code == 0, err
    assert out.endswith("jobs serve it from there, offline: vllm-hpc submit -m org/tiny ...\n")
    other = tmp_path / "other store"
    code, out, err = run(["stage", "org/tiny", "--endpoint", hub.url, "--dest", str(other)], {})
    assert code == 0, err
    assert out.endswith(f"vllm-hpc submit -m org/tiny --model-store '{other}' ...\n")
    asked = len(hub.seen)
    copy = tmp_path / "store" / "org--tiny" / COMMIT
    code, out, err = run(["submit", "-m", "org/tiny", "--dry-run"], env)
    assert code == 0, err
    assert f"  weights   staged copy of org/tiny at {copy} (commit {COMMIT[:12]}, 3 files" in out
    assert f"vllm serve {copy} " in out and "HF_HUB_OFFLINE=1" in out
    assert len(hub.seen) == asked  # planning asked the hub nothing
