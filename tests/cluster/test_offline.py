"""Compute nodes without internet (issue 32): a model staged on the login side from a
real hub-protocol server, and a 2-node job of its hub id that runs offline because its
plan says so, not because the bed does.

1. The hub: olah 0.5.4 (PyPI ``olah``, a maintained self-hosted Hugging Face mirror;
   its own venv, built by ``testenv.sh``), started by ``tests/unit/helpers/olahhub.py``
   in offline mode with no upstream, serves the bed's tiny model (``fakehub.files_of``:
   config, safetensors, tokenizer files, chat template; plus a README that staging must
   leave out) as ``bed-org/tiny-llama``, a local git repository in its ``mirrors-path``
   (the weights as LFS objects), on the login side's loopback, 127.0.0.1. The
   nodes cannot reach it: 127.0.0.1 in a node's network namespace is the node's own, and
   the nodes have no default route (as on a real cluster, where they reach no hub).
2. ``vllm-hpc stage bed-org/tiny-llama --endpoint http://127.0.0.1:PORT --dest STORE``
   on the login side, STORE on the bed's shared storage: each file fetched once, the
   manifest (commit, sizes, the weights' sha256, ``size+sha256``), the ref, the copy byte
   for byte the tiny model's.
3. Planning on a site that declares ``nodes_offline: true``: the same hub id with a
   store that has no copy is refused before anything is queued, with the one line; with
   the store it is planned from the staged copy (the dry run's weights line).
4. ``vllm-hpc submit -m bed-org/tiny-llama --model-store STORE`` of 2 nodes (PP=2, vLLM's
   own multi-node mode, so each node runs a ``vllm serve`` that loads its half from the
   copy), on that offline site, with an environment the bed's minus every Hugging Face
   variable (no ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``, which ``bed.job_environment``
   gives every other job) and an empty ``HF_HOME``: READY and an answer; the plan serves
   the copy with the offline variables; on each node the runtime (started by SLURM with
   the job's environment) does not have them and every vLLM process has them (read from
   ``/proc/<pid>/environ``); the hub saw no request after ``stage``; no vLLM log has a
   download line; nothing was cached in ``HF_HOME``.
5. Forced offline without a copy: a site that does not declare its nodes offline plans
   an unstaged hub id, and the user's own ``HF_HUB_OFFLINE=1`` reaches the nodes with the
   job's environment: the job FAILS within a minute naming the model and the fix
   (``run: vllm-hpc stage MODEL on the login node``), before any vLLM starts.
6. ``vllm-hpc doctor --offline`` of the hub id on 2 nodes: every file of the copy's
   manifest readable with its size and the config and tokenizer loaded offline on each
   node; then on a copy of the store whose weights are cut to half: FAILED on each node,
   naming ``model.safetensors`` and both sizes (two short ``srun`` steps, ~10 s).

Cost on the bed: ~70-100 s in all, one job. ``stage`` (~1.8 MB over loopback) and the
two plans take a few seconds; the one job (2 nodes, native PP=2 of the 2-layer tiny
model) is READY in ~40-60 s (the first run on a bed may compile ~10 s longer: the copy
is a model path vLLM's compile cache has not seen), then is cancelled (~10 s).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from launchers import waits
from launchers.jobdir.modelstore import staged_copy

from ..unit.helpers import fakehub, olahhub
from . import api, bed
from .jobs import cancel_and_check_clean

pytestmark = pytest.mark.cluster

HUB_ID = "bed-org/tiny-llama"
SERVED = "tiny-llama"  # the id's last part: what clients ask for, as for the hub id
README = "README.md"  # served by the hub, never staged: not a file vLLM reads
PROMPT = [{"role": "user", "content": "Where do the weights come from?"}]
# A forced offline job of an unstaged model ends this soon after submission (the nodes'
# check runs before vLLM; SLURM's start and teardown are most of it).
FORCED_FAILS_WITHIN = 60.0
# What the plan of a staged model exports on every node (docs/staging.md).
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
# Taken out of the bed's environment: none of them may reach a job but through its plan.
HUB_VARS = (*OFFLINE, "HF_ENDPOINT", "HF_TOKEN", "HF_TOKEN_PATH", "HF_HOME", "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "VLLM_HPC_MODEL_STORE")  # fmt: skip
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
# A line of a vLLM log that says something was (or was to be) fetched: vLLM's "Time
# spent downloading weights", huggingface_hub's "Fetching N files", a failed listing.
# "download_dir=None" in vLLM's config line does not match (no word boundary after it).
DOWNLOAD = re.compile(
    r"\bdownload(?:s|ed|ing)?\b|\bfetching \d+ files\b|snapshot_download|hf_hub_download"
    r"|failed to get file list|couldn't connect",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Staged:
    """The hub, what ``stage`` made of it, and the user's shell for the jobs."""

    hub: olahhub.OlahHub
    files: dict[str, bytes]  # what the hub serves: the tiny model's files and a README
    commit: str  # of the hub's main
    base: Path  # everything the module made, on the bed's shared storage
    store: Path
    copy: Path
    hf_home: Path  # the jobs' HF_HOME: created empty
    env: dict[str, str]  # the bed's environment without HUB_VARS, the offline site
    stage_out: dict[str, Any]  # `vllm-hpc stage --json`
    after_stage: int  # requests the hub had answered when stage ended


def _offline_site(bed_site: Path) -> str:
    """The bed's site file (its nodes' vLLM version) with ``nodes_offline: true``."""
    data = yaml.safe_load(bed_site.read_text()) or {}
    site = dict(data.get("site") or {})
    site["nodes_offline"] = True
    return "# written by tests/cluster/test_offline.py\n" + yaml.safe_dump({**data, "site": site})


@pytest.fixture(scope="module")
def staged(env: dict[str, str], minicluster: bed.MiniCluster, tiny_model: Path) -> Iterator[Staged]:
    """The tiny model on a hub on the login side's loopback, staged into a store on the
    bed's shared storage by the real ``vllm-hpc stage``; the hub serves until the module
    ends, so the job's test can ask it what it saw."""
    base = minicluster.state / "offline"
    shutil.rmtree(base, ignore_errors=True)
    hf_home = base / "hf-home"
    hf_home.mkdir(parents=True)
    login_hf_home = base / "login-hf-home"  # stage's own, so the jobs' stays untouched
    login_hf_home.mkdir()
    site = base / "site.yaml"
    site.write_text(_offline_site(Path(env["VLLM_HPC_SITE_CONFIG"])))
    user = {k: v for k, v in env.items() if k not in HUB_VARS}
    user.update(HF_HOME=str(hf_home), VLLM_HPC_SITE_CONFIG=str(site))
    files = {**fakehub.files_of(tiny_model), README: b"# a tiny random Llama\n"}
    store = base / "models"
    login = {k: v for k, v in user.items() if k not in PROXY_VARS}  # 127.0.0.1, directly
    login["HF_HOME"] = str(login_hf_home)
    with olahhub.serve({HUB_ID: files}, base / "olah") as hub:
        commit = hub.commits[HUB_ID]
        print(f"olah serves {HUB_ID} at {hub.url} (commit {commit}, listening after "
              f"{hub.started:.1f} s)")  # fmt: skip
        out = api.cli_json(login, "stage", HUB_ID, "--endpoint", hub.url, "--dest", str(store),
                           timeout=180)  # fmt: skip
        copy = store / HUB_ID.replace("/", "--") / commit
        yield Staged(hub, files, commit, base, store, copy, hf_home, user, dict(out),
                     len(hub.seen))  # fmt: skip


def _job_args(store: Path, *extra: str) -> list[str]:
    """A 2-node job of the hub id, PP=2 in vLLM's own multi-node mode (one ``vllm
    serve`` per node, each loading its stage's layers from ``store``'s copy)."""
    layout = ["--nodes", "2", "--gpus-per-node", "1", "--pp", "2", "--runtime", "native"]
    slurm = ["--partition", "debug", "--time", "00:10:00", "--via", "sbatch"]
    return ["--model", HUB_ID, "--model-store", str(store), *layout, *slurm, *extra,
            "--", "--max-model-len", "512"]  # fmt: skip


def _queued(cluster: bed.MiniCluster) -> set[str]:
    return set(cluster.slurm(["squeue", "-h", "-o", "%i"]).stdout.split())


def _endpoint(job_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((job_dir / "endpoint.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _wait_ready(cluster: bed.MiniCluster, job_id: str, job_dir: Path) -> dict[str, Any]:
    """endpoint.json once READY; the test fails as soon as the leader or SLURM says the
    job ended."""

    def ready() -> dict[str, Any] | None:
        seen = _endpoint(job_dir)
        if seen.get("state") == "READY":
            return seen
        if seen.get("state") in ("FAILED", "STOPPED"):
            pytest.fail(f"leader says {seen['state']}: {seen.get('message')} (read {job_dir})")
        state = cluster.job_info(job_id).get("JobState", "UNKNOWN")
        if state in bed.TERMINAL_STATES:
            pytest.fail(f"job {job_id} ended {state} before READY; read {job_dir}")
        return None

    waited = waits.wait_for(ready, what=f"job {job_id} READY", timeout=bed.READY_TIMEOUT,
                            log=str(job_dir / "node-0.log"))  # fmt: skip
    print(f"job {job_id} READY {waited.seconds:.0f} s after submission")
    return waited.value


def _environ(pid: int) -> dict[str, str] | None:
    """The environment process ``pid`` (a host PID) was started with; None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    pairs = (item.partition("=") for item in raw.decode(errors="replace").split("\0") if item)
    return {key: value for key, _, value in pairs}


def _assert_offline_on(cluster: bed.MiniCluster, node: str, staged: Staged) -> None:
    """On ``node``: the node runtime, as SLURM started it with the job's environment,
    has none of the offline variables; every vLLM process (``vllm serve`` of the copy, its
    guard, the processes vLLM renamed ``VLLM::...``) has all of them and the empty
    HF_HOME."""
    runtime: list[tuple[str, dict[str, str]]] = []
    vllm: list[tuple[str, dict[str, str]]] = []
    for proc in cluster.node_processes(node):
        environ = _environ(proc.pid)
        if environ is None:
            continue
        if "launchers node run" in proc.cmdline:  # the runtime (and srun, on the first node)
            runtime.append((proc.cmdline, environ))
        elif str(staged.copy) in proc.cmdline or proc.cmdline.startswith("VLLM::"):
            vllm.append((proc.cmdline, environ))
    assert runtime, f"{node}: no node runtime (launchers node run) found"
    assert any(" serve " in cmd for cmd, _ in vllm), (
        f"{node}: no vllm serve of {staged.copy}; processes: "
        f"{[p.cmdline[:120] for p in cluster.node_processes(node)]}"
    )
    for cmd, environ in runtime:
        given = {k: environ[k] for k in OFFLINE if k in environ}
        assert not given, f"{node}: the job's own environment has {given}: {cmd[:160]}"
        assert environ.get("HF_HOME") == str(staged.hf_home), (node, environ.get("HF_HOME"))
    for cmd, environ in vllm:
        got = {k: environ.get(k) for k in OFFLINE}
        assert got == OFFLINE, f"{node}: {cmd[:160]} runs with {got}"
        assert environ.get("HF_HOME") == str(staged.hf_home), (node, cmd[:160])
    print(f"{node}: {len(vllm)} vLLM processes with {OFFLINE}; the runtime without them")


def test_stage_fetches_verifies_and_records_the_hub_model(staged: Staged) -> None:
    out, copy, commit = staged.stage_out, staged.copy, staged.commit
    wanted = {name: data for name, data in staged.files.items() if name != README}
    assert out["staged"] is True and out["verified"] == "size+sha256", out
    assert (out["commit"], out["path"], out["weights"]) == (commit, str(copy), "safetensors")
    assert [s["path"] for s in out["skipped"]] == [README], out["skipped"]
    assert sorted(staged.hub.gets()) == sorted(wanted), "each file fetched once, the README never"
    found = staged_copy(str(staged.store), HUB_ID, "main")
    assert found is not None and found.path == copy, f"no whole copy of {HUB_ID} in {staged.store}"
    manifest = found.manifest
    assert (manifest.repo_id, manifest.revision, manifest.commit) == (HUB_ID, "main", commit)
    assert (manifest.endpoint, manifest.verified) == (staged.hub.url, "size+sha256")
    assert {f.path: f.size for f in manifest.files} == {n: len(d) for n, d in wanted.items()}
    sums = {f.path: f.sha256 for f in manifest.files if f.sha256 is not None}
    assert sums == {"model.safetensors": hashlib.sha256(wanted["model.safetensors"]).hexdigest()}
    for name, data in wanted.items():
        assert (copy / name).read_bytes() == data, f"{copy / name} differs from the tiny model's"
    assert not (copy / README).exists()
    ref = staged.store / HUB_ID.replace("/", "--") / "refs" / "main"
    assert ref.read_text() == commit + "\n"
    print(f"the staged manifest ({copy / 'vllm-hpc-staged.json'}):")
    print((copy / "vllm-hpc-staged.json").read_text())


def test_an_offline_site_plans_the_staged_copy_and_refuses_a_store_without_it(
    minicluster: bed.MiniCluster, staged: Staged
) -> None:
    empty = staged.base / "empty-store"
    before = _queued(minicluster)
    done = api.cli(staged.env, "submit", *_job_args(empty), timeout=120)
    expected = (
        f"Error: model {HUB_ID}: not staged and the nodes are offline "
        f"(run: vllm-hpc stage {HUB_ID} --dest {empty} on the login node)"
    )
    assert (done.returncode, done.stdout, done.stderr.strip()) == (2, "", expected), done.stderr
    assert _queued(minicluster) <= before, "a refused job must not be queued"
    dry = api.cli(staged.env, "submit", *_job_args(staged.store, "--dry-run"), timeout=120)
    assert dry.returncode == 0, dry.stderr[-2000:]
    files = len(staged.files) - 1  # the README is not staged
    commit = staged.commit[:12]
    weights = f"staged copy of {HUB_ID} at {staged.copy} (commit {commit}, {files} files"
    assert weights in dry.stdout and "offline: nothing is fetched" in dry.stdout, dry.stdout
    assert len(staged.hub.seen) == staged.after_stage, "planning asked the hub"


def test_a_job_of_the_staged_hub_id_runs_offline_on_two_nodes(
    minicluster: bed.MiniCluster, staged: Staged, job_ids: list[str]
) -> None:
    # Only the plan may make the nodes offline: the job's environment has none of it.
    carried = [name for name in HUB_VARS if name != "HF_HOME" and name in staged.env]
    assert not carried, f"the job's environment carries {carried}"
    assert not any(staged.hf_home.iterdir()), f"{staged.hf_home} must start empty"
    handle = api.cli_json(staged.env, "submit", *_job_args(staged.store), timeout=120)
    job_id, job_dir = str(handle["job_id"]), Path(handle["job_dir"])
    job_ids.append(job_id)
    endpoint = _wait_ready(minicluster, job_id, job_dir)
    nodes = minicluster.job_nodes(job_id)
    assert len(nodes) == 2, nodes
    assert endpoint["model"] == SERVED, endpoint
    print(f"answer: {api.chat(endpoint, PROMPT)!r}")

    plan = json.loads((job_dir / "plan.json").read_text())
    assert (plan["model"], plan["served_model_name"]) == (str(staged.copy), SERVED), plan["model"]
    assert plan["staged"]["repo_id"] == HUB_ID, plan["staged"]
    assert plan["staged"]["commit"] == staged.commit, plan["staged"]
    assert plan["env"].items() >= OFFLINE.items(), plan["env"]
    for node in nodes:
        _assert_offline_on(minicluster, node, staged)

    for rank in range(2):
        log = job_dir / f"vllm-{rank}.log"
        fetched = [line for line in log.read_text(errors="replace").splitlines()
                   if DOWNLOAD.search(line)]  # fmt: skip
        assert not fetched, f"{log} says something was fetched:\n" + "\n".join(fetched[:20])
    assert str(staged.copy) in (job_dir / "vllm-0.log").read_text(), "vLLM did not load the copy"
    assert len(staged.hub.seen) == staged.after_stage, (
        f"the hub was asked after stage: {staged.hub.seen[staged.after_stage :]}"
    )
    assert not list(staged.hf_home.rglob("models--*")), f"something was cached in {staged.hf_home}"
    cancel_and_check_clean(minicluster, job_id, nodes)


def test_a_forced_offline_job_of_an_unstaged_hub_id_fails_on_the_node_within_seconds(
    minicluster: bed.MiniCluster, env: dict[str, str], staged: Staged, job_ids: list[str]
) -> None:
    """A site that does not say its nodes are offline plans the hub id; the user's own
    HF_HUB_OFFLINE=1 reaches the nodes with the job's environment: every node stops
    before vLLM with the model and the fix, not after vLLM's retries of the hub."""
    unstaged = "bed-org/never-staged"
    user = {**staged.env, "VLLM_HPC_SITE_CONFIG": env["VLLM_HPC_SITE_CONFIG"]}
    user["HF_HUB_OFFLINE"] = "1"
    args = ["--model", unstaged, "--nodes", "2", "--gpus-per-node", "1", "--pp", "2",
            "--runtime", "native", "--partition", "debug", "--time", "00:05:00",
            "--via", "sbatch", "--", "--max-model-len", "512"]  # fmt: skip
    began = time.monotonic()
    handle = api.cli_json(user, "submit", *args, timeout=120)
    job_id, job_dir = str(handle["job_id"]), Path(handle["job_dir"])
    job_ids.append(job_id)
    state = minicluster.wait_for_state(job_id, bed.TERMINAL_STATES, timeout=FORCED_FAILS_WITHIN)
    took = time.monotonic() - began
    final = _endpoint(job_dir)
    print(f"forced offline: {state} after {took:.1f} s: {final.get('message')}")
    assert final.get("state") == "FAILED", final
    message = str(final.get("message"))
    assert f"model {unstaged}: not staged and not in this node's Hugging Face cache" in message
    assert f"run: vllm-hpc stage {unstaged} on the login node" in message, message
    assert not list(job_dir.glob("vllm-*.log")), "vLLM started for a model it cannot load"
    assert len(staged.hub.seen) == staged.after_stage, "a node asked the hub"
    minicluster.wait_for_no_processes(minicluster.nodes, timeout=bed.GONE_TIMEOUT)


def _doctor_offline(staged: Staged, store: Path) -> tuple[int, list[dict[str, Any]], str]:
    """``vllm-hpc doctor --offline`` of the hub id on 2 nodes with ``store``: its exit
    code, its rows (``--json``) and what it printed."""
    done = api.cli(
        staged.env, "doctor", "--offline", "--model", HUB_ID, "--model-store", str(store),
        "--nodes", "2", "--gpus-per-node", "1", "--pp", "2", "--runtime", "native",
        "--partition", "debug", "--json", timeout=300,
    )  # fmt: skip
    try:
        rows = json.loads(done.stdout)
    except ValueError:
        rows = []
    return done.returncode, rows, done.stdout + done.stderr


def _offline_rows(rows: list[dict[str, Any]], check: str) -> dict[str, dict[str, Any]]:
    return {str(row["host"]): row for row in rows if row.get("check") == check}


def test_doctor_offline_proves_the_staged_copy_on_two_nodes_and_names_a_truncated_file(
    minicluster: bed.MiniCluster, staged: Staged
) -> None:
    """``doctor --offline`` of the staged hub id: on each of 2 nodes every file of the
    manifest is readable with its size and the config and tokenizer load offline in the
    node's Python (the hub never asked); a copy of the store whose weights a transfer cut
    short fails on each node naming the file and its sizes."""
    code, rows, out = _doctor_offline(staged, staged.store)
    print(out)
    assert code == 0, out
    copies, loads = _offline_rows(rows, "offline copy"), _offline_rows(rows, "offline load")
    assert len(copies) == 2 and len(loads) == 2, out
    files = len(staged.files) - 1  # the README is not staged
    for row in copies.values():
        assert row["level"] == "ok", row
        assert f"staged copy of {HUB_ID} at {staged.copy}" in row["detail"], row
        assert f"all {files} files readable here with their sizes" in row["detail"], row
    for row in loads.values():
        assert row["level"] == "ok", row
    assert len(staged.hub.seen) == staged.after_stage, "the doctor asked the hub"

    cut = staged.base / "truncated-store"
    shutil.rmtree(cut, ignore_errors=True)
    shutil.copytree(staged.store, cut)
    weights = cut / staged.copy.relative_to(staged.store) / "model.safetensors"
    whole = weights.stat().st_size
    with weights.open("r+b") as handle:
        handle.truncate(whole // 2)
    code, rows, out = _doctor_offline(staged, cut)
    print(out)
    assert code == 1, out
    copies = _offline_rows(rows, "offline copy")
    assert len(copies) == 2, out
    for row in copies.values():
        assert row["level"] == "fail", row
        assert "model.safetensors" in row["detail"] and str(whole) in row["detail"], row
        assert "vllm-hpc stage" in str(row["fix"]), row
    minicluster.wait_for_no_processes(minicluster.nodes, timeout=bed.GONE_TIMEOUT)
