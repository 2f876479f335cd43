"""Loading from parallel file systems: the pure decision as a table of faked file system
types, the probe on this machine's own /proc and a faked mount table, and the node runtime
passing ``--safetensors-load-strategy prefetch`` as a typed update of its vllm serve; a
node told to run offline with a hub id it has no copy of stops before vllm serve starts."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launchers import _proc
from launchers.errors import RuntimeFailure, UnsupportedFeatureError
from launchers.jobdir import jobfiles
from launchers.plan import loading
from launchers.plan.commands import ServeStart, check_installed
from launchers.plan.launch import LaunchPlan
from launchers.plan.loading import FsFacts, decide_loading
from launchers.runtime import context as context_module
from launchers.runtime import fsprobe
from launchers.runtime.run import run_plan

from .helpers.runtime import read_failure

GIB = 2**30
WEKA_UNPUBLISHED = 0x12345678  # WekaFS publishes no magic number: its mount type tells
FUSE = loading.FUSE_MAGIC


def on(magic: int | None, mount: str | None = None, **kw: Any) -> FsFacts:
    return FsFacts(where="/models/m", magic=magic, mount_type=mount, **kw)


@pytest.mark.parametrize(
    ("facts", "version", "args", "strategy", "reason"),
    [
        (on(0x47504653, "gpfs"), "0.33.0", (), "prefetch",
         "model in /models/m on GPFS (statfs 0x47504653): --safetensors-load-strategy prefetch"),
        (on(0x00C36400, "ceph"), "0.32.0", (), "prefetch",
         "model in /models/m on CephFS (statfs 0x00c36400): --safetensors-load-strategy "
         "prefetch"),
        (on(FUSE, "fuse.ceph-fuse"), "0.33.0", (), "prefetch",
         "model in /models/m on CephFS (mount type fuse.ceph-fuse, statfs 0x65735546): "
         "--safetensors-load-strategy prefetch"),
        (on(0x19830326, None), "0.33.0", (), "prefetch",
         "model in /models/m on BeeGFS (statfs 0x19830326): --safetensors-load-strategy "
         "prefetch"),
        (on(WEKA_UNPUBLISHED, "wekafs"), "0.33.0", (), "prefetch",
         "model in /models/m on WekaFS (mount type wekafs, statfs 0x12345678): "
         "--safetensors-load-strategy prefetch"),
        (on(0x6969, "nfs4"), "0.33.0", (), None,
         "model in /models/m on NFS (statfs 0x00006969): vLLM prefetches there by itself: "
         "no change"),
        (on(0x0BD00BD0, "lustre"), "0.33.0", (), None,
         "model in /models/m on Lustre (statfs 0x0bd00bd0): vLLM prefetches there by itself: "
         "no change"),
        (on(0xEF53, "ext4"), "0.33.0", (), None,
         "model in /models/m on ext2/ext3/ext4 (statfs 0x0000ef53): no change"),
        (on(0x794C7630, "overlay"), "0.33.0", (), None,
         "model in /models/m on overlay (statfs 0x794c7630): no change"),
        (on(0x01021994, "tmpfs"), "0.33.0", (), None,
         "model in /models/m on tmpfs (statfs 0x01021994): no change"),
        (on(FUSE, "fuse.sshfs"), "0.33.0", (), None,
         "model in /models/m on FUSE (statfs 0x65735546): no change"),
        (on(None, None), "0.33.0", (), None,
         "model in /models/m on an unknown file system (statfs unknown): no change"),
        (on(0x47504653), "0.33.0", ("--safetensors-load-strategy", "eager"), None,
         "model in /models/m on GPFS (statfs 0x47504653): the arguments choose "
         "--safetensors-load-strategy eager: no change"),
        (on(0x47504653), "0.33.0", ("--safetensors_load_strategy=lazy",), None,
         "model in /models/m on GPFS (statfs 0x47504653): the arguments choose "
         "--safetensors-load-strategy lazy: no change"),
        (on(0x47504653), "0.33.0", ("--load-format", "gguf"), None,
         "model in /models/m on GPFS (statfs 0x47504653): the arguments choose "
         "--load-format gguf: no change"),
        (on(0x47504653), "0.33.0", ("--load-format=safetensors",), "prefetch",
         "model in /models/m on GPFS (statfs 0x47504653): --safetensors-load-strategy prefetch"),
        (on(0x47504653), "0.31.0", (), None,
         "model in /models/m on GPFS (statfs 0x47504653): vLLM 0.31.0 has no "
         "--safetensors-load-strategy (>= 0.32.0): no change"),
        (on(0x47504653, checkpoint_bytes=100 * GIB, available_bytes=64 * GIB), "0.33.0", (),
         None, "model in /models/m on GPFS (statfs 0x47504653): the checkpoint (100.0 GiB) "
         "exceeds 90% of the available RAM (64.0 GiB): no change"),
        (on(0x47504653, checkpoint_bytes=10 * GIB, available_bytes=64 * GIB), "0.33.0", (),
         "prefetch",
         "model in /models/m on GPFS (statfs 0x47504653): --safetensors-load-strategy prefetch"),
        (FsFacts(where=None, why="x/y/z is not a local path"), "0.33.0", (), None,
         "model x/y/z is not a local path: no change"),
    ],
)  # fmt: skip
def test_the_decision(
    facts: FsFacts, version: str, args: tuple[str, ...], strategy: str | None, reason: str
) -> None:
    assert decide_loading(facts, version, args) == loading.LoadDecision(strategy, reason)  # type: ignore[arg-type]


def test_the_typed_update_builds_the_flag_into_the_argv() -> None:
    serve = ServeStart(model="m", host="0.0.0.0", port=8000, args=("--max-model-len", "512"))
    argv = serve.loading("prefetch").argv()
    assert argv[-4:] == ["--max-model-len", "512", "--safetensors-load-strategy", "prefetch"]
    assert serve.argv()[-2:] == ["--max-model-len", "512"]  # the plan's own start is as it was
    with pytest.raises(UnsupportedFeatureError, match="needs vLLM >= 0.32.0, this node has"):
        check_installed(argv, "0.31.0")


def test_the_probe_reads_statfs_of_this_machine() -> None:
    assert fsprobe.statfs_type("/proc") == 0x9FA0  # PROC_SUPER_MAGIC: procfs everywhere
    assert fsprobe.statfs_type("/no/such/path") is None


def test_the_mount_type_is_the_longest_matching_mount_point(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        "gpfs0 /gpfs gpfs rw 0 0\n"
        "/dev/sdb1 /gpfs/local ext4 rw 0 0\n"
        "weka0/fs /mnt/weka\\040fs wekafs rw 0 0\n"
    )
    assert fsprobe.mount_type("/gpfs/models/m", str(mounts)) == "gpfs"
    assert fsprobe.mount_type("/gpfs/local/m", str(mounts)) == "ext4"
    assert fsprobe.mount_type("/gpfsx/m", str(mounts)) == "ext4"
    assert fsprobe.mount_type("/mnt/weka fs/m", str(mounts)) == "wekafs"
    assert fsprobe.mount_type("/x", str(tmp_path / "none")) is None


@pytest.mark.parametrize(
    ("env", "args", "cache"),
    [
        ({"HOME": "/h"}, (), "/h/.cache/huggingface/hub"),
        ({"HOME": "/h", "XDG_CACHE_HOME": "/x"}, (), "/x/huggingface/hub"),
        ({"HOME": "/h", "HF_HOME": "/hf"}, (), "/hf/hub"),
        ({"HF_HOME": "/hf", "HF_HUB_CACHE": "/hub"}, (), "/hub"),
        ({"HF_HUB_CACHE": "/hub"}, ("--download-dir", "/dl"), "/dl"),
        ({"HF_HUB_CACHE": "/hub"}, ("--download_dir=/dl2",), "/dl2"),
    ],
)
def test_the_hugging_face_cache_that_will_hold_a_hub_model(
    env: dict[str, str], args: tuple[str, ...], cache: str
) -> None:
    assert fsprobe.hub_cache(env, args) == cache


def test_the_facts_of_a_model_directory_and_of_a_hub_id(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "a.safetensors").write_bytes(b"x" * 10)
    (model / "b.safetensors").write_bytes(b"y" * 5)
    found = fsprobe.facts(str(model), (), {})
    assert (found.where, found.checkpoint_bytes) == (os.path.realpath(model), 15)
    assert found.magic == fsprobe.statfs_type(str(model)) is not None
    hub = fsprobe.facts("org/name", (), {"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert hub.where == str(tmp_path)  # the cache is not made yet: its nearest parent
    assert hub.label.startswith(f"model org/name (Hugging Face cache {tmp_path / 'hub'}")
    assert fsprobe.facts("/no/such/model", (), {}).where is None


@pytest.fixture
def serve_argv(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The argv of each vllm serve the runtime starts (recorded; the start then fails)."""
    started: list[list[str]] = []

    def start(name: str, argv: list[str], **kwargs: Any) -> Any:
        started.append(list(argv))
        raise OSError("recorded, not started")

    monkeypatch.setattr(_proc, "start", start)
    monkeypatch.setattr(
        context_module, "_network", lambda iface, environ: ({"VLLM_HOST_IP": "10.0.0.1"}, "test")
    )
    return started


@pytest.mark.parametrize(
    ("magic", "flag", "line"),
    [
        (0x47504653, True, "on GPFS (statfs 0x47504653): --safetensors-load-strategy prefetch"),
        (0xEF53, False, "on ext2/ext3/ext4 (statfs 0x0000ef53): no change"),
    ],
)
def test_the_leader_passes_prefetch_for_a_model_on_gpfs_only(
    tmp_path: Path,
    make_plan: Callable[..., LaunchPlan],
    tiny_model: Callable[..., Path],
    serve_argv: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
    magic: int,
    flag: bool,
    line: str,
) -> None:
    monkeypatch.setattr(fsprobe, "statfs_type", lambda path: magic)
    monkeypatch.setattr(fsprobe, "mount_type", lambda path: None)
    model = tiny_model()
    plan = make_plan(model=str(model), job_root=str(tmp_path / "jobs"), no_api_key=True)
    assert run_plan(plan, rank=0, job_id="9", environ={"PATH": "/usr/bin"}) == 1
    (argv,) = serve_argv
    assert (argv[-2:] == ["--safetensors-load-strategy", "prefetch"]) == flag
    log = Path(plan.paths.for_job("9").node_log.replace("{rank}", "0")).read_text()
    assert f"model in {os.path.realpath(model)} {line}" in log


def test_the_doctor_says_what_the_file_system_makes_of_loading(
    tmp_path: Path,
    make_plan: Callable[..., LaunchPlan],
    tiny_model: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from launchers.runtime.doctor import MARK, Report, check_loading

    monkeypatch.setattr(fsprobe, "statfs_type", lambda path: loading.BEEGFS_MAGIC)
    monkeypatch.setattr(fsprobe, "mount_type", lambda path: "beegfs")
    model = tiny_model()
    check_loading(Report(0, "node1"), make_plan(model=str(model)), {})
    row = json.loads(capsys.readouterr().out.removeprefix(MARK))
    assert (row["check"], row["level"]) == ("loading", "ok")
    assert row["detail"] == (
        f"model in {os.path.realpath(model)} on BeeGFS (statfs 0x19830326): "
        "--safetensors-load-strategy prefetch"
    )


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hf_cache_with(cache: Path, repo_id: str, revision: str = "main") -> None:
    """``repo_id`` in a Hugging Face cache as huggingface_hub leaves it (a ref, a snapshot)."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / revision).write_text(COMMIT)
    (folder / "snapshots" / COMMIT).mkdir(parents=True)
    (folder / "snapshots" / COMMIT / "config.json").write_text("{}")


NOT_HERE = (
    "model org/tiny: not staged and not in this node's Hugging Face cache ({cache}), and the "
    "node runs offline ({switch}): vLLM would only retry the hub (run: vllm-hpc stage "
    "org/tiny{revision} on the login node)"
)


@pytest.mark.parametrize(
    ("env", "args", "cached", "switch", "revision"),
    [
        ({"HF_HUB_OFFLINE": "1"}, (), None, "HF_HUB_OFFLINE=1", ""),
        ({"TRANSFORMERS_OFFLINE": "yes"}, (), None, "TRANSFORMERS_OFFLINE=yes", ""),
        ({"HF_HUB_OFFLINE": "1"}, ("--revision", "v2"), "main", "HF_HUB_OFFLINE=1",
         " --revision v2"),
        ({"HF_HUB_OFFLINE": "1"}, (), "main", None, ""),
        ({"HF_HUB_OFFLINE": "1"}, ("--revision", COMMIT), "main", None, ""),
        ({"HF_HUB_OFFLINE": "0"}, (), None, None, ""),
        ({}, (), None, None, ""),
    ],
)  # fmt: skip
def test_a_hub_id_offline_without_a_copy_is_refused_on_the_node(
    tmp_path: Path,
    env: dict[str, str],
    args: tuple[str, ...],
    cached: str | None,
    switch: str | None,
    revision: str,
) -> None:
    cache = tmp_path / "hub"
    if cached:
        hf_cache_with(cache, "org/tiny", cached)
    env = {**env, "HF_HUB_CACHE": str(cache)}
    if switch is None:
        fsprobe.check_offline_source("org/tiny", args, env)
        return
    with pytest.raises(RuntimeFailure) as caught:
        fsprobe.check_offline_source("org/tiny", args, env)
    assert caught.value.one_line() == NOT_HERE.format(cache=cache, switch=switch, revision=revision)


def test_a_model_directory_is_never_refused_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "org" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # "org/tiny" is a directory here
    fsprobe.check_offline_source("org/tiny", (), {"HF_HUB_OFFLINE": "1"})
    fsprobe.check_offline_source(str(tmp_path / "org" / "tiny"), (), {"HF_HUB_OFFLINE": "1"})


@pytest.mark.parametrize("rank", [0, 1])
def test_every_node_of_a_forced_offline_job_stops_before_vllm_serve(
    tmp_path: Path,
    make_plan: Callable[..., LaunchPlan],
    serve_argv: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
    rank: int,
) -> None:
    """The user set HF_HUB_OFFLINE=1 for a hub model not staged: the leader and the Ray
    worker (which loads weights too) each stop at once with the one line, recorded."""
    monkeypatch.chdir(tmp_path)
    plan = make_plan(model="org/tiny", nodes=2, gpus_per_node=1, pp=2, no_api_key=True,
                     job_root=str(tmp_path / "jobs"), env={"HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert plan.runtime == "ray" and plan.roles[1].serve is None
    cache = tmp_path / "hub"
    environ = {"PATH": "/usr/bin", "HF_HUB_CACHE": str(cache)}
    with pytest.raises(RuntimeFailure) as caught:
        run_plan(plan, rank=rank, job_id="9", environ=environ)
    why = NOT_HERE.format(cache=cache, switch="HF_HUB_OFFLINE=1", revision="")
    assert caught.value.one_line() == why
    assert serve_argv == []  # nothing started, Ray included
    job_dir = Path(plan.paths.for_job("9").job_dir)
    if rank == 0:
        ending = jobfiles.read(job_dir / "endpoint.json", jobfiles.Endpoint)
        assert ending is not None and (ending.state, ending.message) == ("FAILED", why)
    else:
        failure = read_failure(job_dir, 1)
        assert failure is not None and failure.message == why
