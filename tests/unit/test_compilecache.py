"""vLLM's compile caches on persistent storage (``jobdir.compilecache``, ``input.resolve``'s
step 6b, ``plan()``'s env, the node runtime): every job of a model gets
``VLLM_CACHE_ROOT=<root>/<vllm version>/<model key>`` (and Inductor's cache beside it)
on every node, through every door; the root is the site's ``compile_cache`` (per user)
or the job root's ``compile-cache``; the version is the nodes' vLLM's, else the declared
one, else ``unknown``; a user's own ``VLLM_CACHE_ROOT`` is kept; an image sees it
bound; the node makes it 0700 before vLLM starts and refuses one others can write."""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launchers import _proc
from launchers.errors import InputError
from launchers.input import probe, wrapper
from launchers.input.planner import plan_for
from launchers.input.probe import InstalledVllm
from launchers.input.registry import Registry
from launchers.input.resolve import resolve
from launchers.jobdir import compilecache, jobroot
from launchers.jobdir.safe import UnsafePathError
from launchers.plan.launch import LaunchPlan
from launchers.render.containers import image_env
from launchers.render.text import render_plan_text
from launchers.runtime import context as context_module
from launchers.runtime.run import run_plan
from launchers.spec.config import SiteSpec
from launchers.spec.request import SubmitRequest

from .conftest import PYTHON, service_spec
from .helpers.cli import run
from .helpers.staged import stage_copy

ENV = {"HOME": "/home/alice", "XDG_CONFIG_HOME": "/nonexistent-config"}
TOKEN_FILE = "/shared/ray_token"  # noqa: S105 - a path: plans only name the token file


@pytest.fixture
def planned(registry: Registry, tmp_path: Path) -> Callable[..., LaunchPlan]:
    """A plan as ``submit`` makes it; ``site``: site settings, ``environ``: the login
    node's environment (``ENV`` by default); the job root under ``tmp_path``."""

    def make(
        site: dict[str, Any] | None = None, environ: dict[str, str] | None = None, **kw: Any
    ) -> LaunchPlan:
        reg = dataclasses.replace(registry, site=SiteSpec(**(site or {})))
        kw.setdefault("job_root", str(tmp_path / "jobs"))
        return plan_for(resolve(SubmitRequest(**kw), reg, environ or ENV, PYTHON))

    return make


def cache_of(plan: LaunchPlan) -> str:
    assert plan.compile_cache is not None
    return plan.compile_cache.path


# --- where: the root, the version, the model key ---


def test_the_root_is_the_job_roots_unless_the_site_names_one_per_user() -> None:
    root = "/home/alice/.vllm-hpc/jobs"
    assert compilecache.cache_root(None, root, ENV, "alice") == f"{root}/compile-cache"
    assert compilecache.cache_root("/scratch/cc", root, ENV, "alice") == "/scratch/cc/alice"
    assert compilecache.cache_root("/scratch/{user}/cc", root, ENV, "bob") == "/scratch/bob/cc"
    assert compilecache.cache_root("~/cc", root, ENV, "alice") == "/home/alice/cc/alice"


def test_the_model_key_is_the_hub_folder_or_a_directory_and_its_path() -> None:
    assert compilecache.model_key("meta-llama/Llama-3.1-8B") == "meta-llama--Llama-3.1-8B"
    one = compilecache.model_key("/shared/a/my model!")
    two = compilecache.model_key("/shared/b/my model!")
    assert one.startswith("my_model-") and two.startswith("my_model-") and one != two
    assert compilecache.model_key("/shared/a/my model!/") == one  # the same directory
    assert compilecache.version_key("0.32.0+cpu") == "0.32.0+cpu"
    for bad in (None, "", "../0.1", "0.1/x", "a b"):
        assert compilecache.version_key(bad) == "unknown"


def test_every_job_of_a_model_gets_the_cache_on_every_node(
    planned: Callable[..., LaunchPlan], tmp_path: Path
) -> None:
    plan = planned(model="org/tiny")
    path = f"{tmp_path}/jobs/compile-cache/unknown/org--tiny"
    assert cache_of(plan) == path
    assert plan.env["VLLM_CACHE_ROOT"] == path
    assert plan.env["TORCHINDUCTOR_CACHE_DIR"] == f"{path}/torchinductor"
    assert "TRITON_CACHE_DIR" not in plan.env  # vLLM derives it from its own cache
    again = planned(model="org/tiny", nodes=2, gpus_per_node=4, tp=4, pp=2)
    assert cache_of(again) == path  # another layout, the same tree (vLLM hashes inside)
    assert cache_of(planned(model="org/other")) != path


def test_the_site_names_the_root_and_the_version(
    planned: Callable[..., LaunchPlan], tmp_path: Path
) -> None:
    site = {"compile_cache": str(tmp_path / "cc" / "{user}"), "vllm_version": "0.32.0"}
    plan = planned(site, model="org/tiny")
    user = jobroot.user_name(ENV)
    assert cache_of(plan) == f"{tmp_path}/cc/{user}/0.32.0/org--tiny"
    assert plan.compile_cache is not None and plan.compile_cache.version_from == "declared"
    flag = planned(site, model="org/tiny", vllm_version="0.33.0")
    assert cache_of(flag).endswith("/0.33.0/org--tiny")


def test_the_version_is_the_nodes_vllms_when_their_python_says(
    planned: Callable[..., LaunchPlan], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def nodes(python: str, **_: object) -> InstalledVllm:
        asked.append(python)
        return InstalledVllm(version="0.32.0+cpu", dist="vllm")

    monkeypatch.setattr(probe, "installed_vllm", nodes)
    # This Python is the nodes' (PYTHON): its own metadata answers, nothing is started.
    monkeypatch.setattr(probe, "installed_here", lambda: InstalledVllm(version="0.31.1"))
    plan = planned({"vllm_version": "0.33.0"}, model="org/tiny")
    assert cache_of(plan).endswith("/0.31.1/org--tiny") and asked == []
    # Another interpreter: the declared version first (no child process) ...
    other = {**ENV, "VLLM_HPC_PYTHON": "/shared/venv/bin/python"}
    declared = planned({"vllm_version": "0.33.0"}, other, model="org/tiny")
    assert cache_of(declared).endswith("/0.33.0/org--tiny") and asked == []
    # ... else it is asked.
    plan = planned(None, other, model="org/tiny")
    assert cache_of(plan).endswith("/0.32.0+cpu/org--tiny")
    assert asked == ["/shared/venv/bin/python"]
    assert plan.compile_cache is not None
    assert plan.compile_cache.version_note == "vLLM 0.32.0+cpu of /shared/venv/bin/python"


def test_an_unknown_version_is_keyed_unknown_and_said(
    planned: Callable[..., LaunchPlan], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        probe, "installed_vllm", lambda python, **_: InstalledVllm(error="cannot run /x/python")
    )
    plan = planned(None, {**ENV, "VLLM_HPC_PYTHON": "/x/python"}, model="org/tiny")
    assert "/unknown/org--tiny" in cache_of(plan)
    line = next(x for x in render_plan_text(plan).splitlines() if x.startswith("  compile "))
    assert line == (
        f"  compile   {cache_of(plan)}  (VLLM_CACHE_ROOT, TORCHINDUCTOR_CACHE_DIR; kept across "
        "jobs of this model; vLLM version unknown here (cannot run /x/python): keyed "
        "'unknown'; set the site's vllm_version)"
    )


def test_a_staged_copy_and_a_local_directory_are_keyed_by_what_they_are(
    planned: Callable[..., LaunchPlan], tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    store = tmp_path / "store"
    stage_copy(store)
    plan = planned(None, {**ENV, "VLLM_HPC_MODEL_STORE": str(store)}, model="org/tiny")
    assert plan.staged is not None and cache_of(plan).endswith("/unknown/org--tiny")
    model = tiny_model()
    local = planned(model=str(model))
    assert cache_of(local).endswith(f"/unknown/{compilecache.model_key(str(model))}")


# --- the user's own cache is kept ---


@pytest.mark.parametrize("where", ["env", "site", "login"])
def test_a_users_vllm_cache_root_is_kept_and_no_cache_is_planned(
    planned: Callable[..., LaunchPlan], where: str
) -> None:
    mine = "/scratch/alice/vllm-cache"
    if where == "env":
        plan = planned(model="org/tiny", env={"VLLM_CACHE_ROOT": mine})
    elif where == "site":
        plan = planned({"env": {"VLLM_CACHE_ROOT": mine}}, model="org/tiny")
    else:  # exported where submit runs: sbatch hands it to the job
        plan = planned(None, {**ENV, "VLLM_CACHE_ROOT": mine}, model="org/tiny")
    assert plan.compile_cache is None
    assert plan.env.get("VLLM_CACHE_ROOT") == (None if where == "login" else mine)
    assert "TORCHINDUCTOR_CACHE_DIR" not in plan.env
    line = next(x for x in render_plan_text(plan).splitlines() if x.startswith("  compile "))
    assert line.endswith("as you set it (vllm-hpc leaves vLLM's caches to it)")


def test_a_users_inductor_cache_is_kept_beside_the_planned_root(
    planned: Callable[..., LaunchPlan],
) -> None:
    plan = planned(model="org/tiny", env={"TORCHINDUCTOR_CACHE_DIR": "/fast/inductor"})
    assert plan.env["TORCHINDUCTOR_CACHE_DIR"] == "/fast/inductor"
    assert plan.env["VLLM_CACHE_ROOT"] == cache_of(plan)
    assert plan.compile_cache is not None and list(plan.compile_cache.env) == ["VLLM_CACHE_ROOT"]


def test_a_site_cache_path_a_bind_would_split_is_refused_in_one_line(
    planned: Callable[..., LaunchPlan],
) -> None:
    with pytest.raises(InputError) as caught:
        planned({"compile_cache": "/scratch/a:b"}, model="org/tiny")
    assert caught.value.one_line().startswith("compile cache: '/scratch/a:b/")


# --- containers and other launchers ---


def test_an_image_gets_the_cache_bound_when_the_job_root_does_not_hold_it(
    planned: Callable[..., LaunchPlan], tmp_path: Path
) -> None:
    image = "apptainer:/images/vllm.sif"
    inside = planned(model="org/tiny", container=image)
    assert not any(b.startswith(cache_of(inside)) for b in inside.container_binds)
    assert f"{tmp_path}/jobs" in inside.container_binds  # the job root holds it
    site = {"compile_cache": str(tmp_path / "cc")}
    apart = planned(site, model="org/tiny", container=image)
    assert cache_of(apart) in apart.container_binds
    enroot = planned(site, model="org/tiny", container="enroot:vllm/vllm-openai:v0.33.0")
    assert cache_of(enroot) in enroot.container_binds


def test_an_image_deployment_does_not_get_the_nodes_paths(
    planned: Callable[..., LaunchPlan],
) -> None:
    plan = planned(model="org/tiny", env={"VLLM_LOGGING_LEVEL": "INFO"})
    plain, _ = image_env(plan)
    assert plain == {"VLLM_LOGGING_LEVEL": "INFO"}


# --- every door goes through plan() ---


def test_every_door_plans_the_same_cache(
    planned: Callable[..., LaunchPlan], tmp_path: Path
) -> None:
    root = tmp_path / "jobs"
    single = planned(model="org/tiny")
    runtimes = {
        "ray": planned(model="org/tiny", nodes=2, gpus_per_node=1, tp=1, pp=2),
        "native": planned(model="org/tiny", nodes=2, gpus_per_node=1, pp=2, runtime="native"),
        "dp": planned(model="org/tiny", nodes=2, gpus_per_node=1, dp=2),
    }
    for name, plan in runtimes.items():
        assert plan.runtime == name and cache_of(plan) == cache_of(single)
        assert plan.env["VLLM_CACHE_ROOT"] == cache_of(single)
    # the wrapper door (bin/multi-node-serving.sh): its leader plans as submit does
    args = wrapper.parse(["leader", "--ray_cluster_size=2", "--num-gpus=1", "--model=org/tiny"])
    env = {**ENV, "VLLM_HPC_JOB_ROOT": str(root)}
    lead = wrapper.wrapper_plan(args, job_id="7", environ=env, python=PYTHON, ray_token=TOKEN_FILE)
    assert lead.env["VLLM_CACHE_ROOT"] == cache_of(single)


def test_a_service_replica_is_planned_with_it(tmp_path: Path) -> None:
    from launchers.client import Client
    from launchers.service.controller import replica_request

    key = tmp_path / "key"
    key.write_text("k")
    key.chmod(0o600)
    request = {"model": "org/tiny", "job_root": str(tmp_path / "jobs")}
    spec = service_spec(request=request, key_file=str(key))
    plan = Client(environ=ENV).plan(replica_request(spec, slot=1, generation=0))
    path = f"{tmp_path}/jobs/compile-cache/unknown/org--tiny"
    assert plan.compile_cache is not None and plan.env["VLLM_CACHE_ROOT"] == path


def test_the_plan_command_of_the_sbatch_templates_and_dp_door_has_it(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    code, _, err = run(["plan", "-m", "org/tiny", "--job-root", str(tmp_path / "jobs"),
                        "--out", str(out)])  # fmt: skip
    assert code == 0, err
    plan = LaunchPlan.model_validate_json(out.read_text())
    assert plan.env["VLLM_CACHE_ROOT"] == f"{tmp_path}/jobs/compile-cache/unknown/org--tiny"


# --- on the node ---


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str], int]]:
    """Each process the runtime starts: its argv, its environment and the compile
    cache's mode at that moment (-1: not there); the start then fails."""
    seen: list[tuple[list[str], dict[str, str], int]] = []

    def start(name: str, argv: list[str], *, env: dict[str, str], **_: Any) -> Any:
        cache = env.get("VLLM_CACHE_ROOT", "")
        mode = stat.S_IMODE(os.stat(cache).st_mode) if os.path.isdir(cache) else -1
        seen.append((list(argv), dict(env), mode))
        raise OSError("recorded, not started")

    monkeypatch.setattr(_proc, "start", start)
    monkeypatch.setattr(
        context_module, "_network", lambda iface, environ: ({"VLLM_HOST_IP": "10.0.0.1"}, "test")
    )
    return seen


def test_the_node_makes_the_cache_0700_before_vllm_starts(
    planned: Callable[..., LaunchPlan],
    tiny_model: Callable[..., Path],
    started: list[tuple[list[str], dict[str, str], int]],
    tmp_path: Path,
) -> None:
    model = tiny_model()
    plan = planned({"compile_cache": str(tmp_path / "cc")}, model=str(model), no_api_key=True)
    cache = Path(cache_of(plan))
    assert not cache.exists()
    assert run_plan(plan, rank=0, job_id="9", environ={"PATH": "/usr/bin"}) == 1
    [(argv, env, mode)] = started
    assert argv[1:3] == ["serve", str(model)]
    assert env["VLLM_CACHE_ROOT"] == str(cache) and mode == 0o700
    for level in (cache, cache.parent, cache.parent.parent):  # the user's dir, version, model
        assert stat.S_IMODE(level.stat().st_mode) == 0o700
    log = Path(plan.paths.for_job("9").node_log.replace("{rank}", "0")).read_text()
    assert f"compile cache: {cache} (0700; " in log


def test_a_cache_others_can_write_stops_the_node_before_anything_starts(
    planned: Callable[..., LaunchPlan],
    tiny_model: Callable[..., Path],
    started: list[tuple[list[str], dict[str, str], int]],
    tmp_path: Path,
) -> None:
    plan = planned({"compile_cache": str(tmp_path / "cc")}, model=str(tiny_model()),
                   no_api_key=True)  # fmt: skip
    cache = Path(cache_of(plan))
    cache.mkdir(parents=True)
    (cache / "planted").write_text("x")
    cache.parent.chmod(0o777)  # the version level: anyone could swap the model's tree
    with pytest.raises(UnsafePathError, match="compile cache: .* can be written by other"):
        run_plan(plan, rank=0, job_id="9", environ={"PATH": "/usr/bin"})
    assert started == []


def test_prepare_refuses_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o700)
    (tmp_path / "cc" / "0.32.0").mkdir(parents=True, mode=0o700)
    (tmp_path / "cc").chmod(0o700)
    (tmp_path / "cc" / "0.32.0" / "org--tiny").symlink_to(real)
    with pytest.raises(UnsafePathError, match="is a symlink"):
        compilecache.prepare(str(tmp_path / "cc" / "0.32.0" / "org--tiny"))
