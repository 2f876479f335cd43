"""``vllm-hpc node doctor --plan P --dir D``: one node's preflight checks.

Run by ``vllm-hpc doctor`` on every allocated node at once (one ``srun`` step, one task
per node). Each check prints one JSON line (``DOCTOR {...}``) with a level (ok / warn /
fail), what was seen and, when not ok, the fix. The nodes meet through files in ``D``
(shared storage, as the job directory): rank 0 publishes its address, the ports it
holds open and the port of a TCPStore it holds; the other ranks connect to each, then
all ranks meet at the store and run the pre-flight's all-reduce
(``runtime.collective.collectives``: NCCL on GPUs, Gloo on CPUs, with a deadline) and
time it. With ``--network`` they first measure every pair of nodes over TCP, in rounds
of disjoint pairs (``runtime.collective.measure_pairs``, meeting at the same store):
one ``pair`` row per pair, from its lower rank, which the login side draws as a table.
With ``--offline`` they prove that the job needs nothing from outside: the staged copy
the plan serves is readable here, every file of its manifest with its size (``offline
copy``), and its config and tokenizer load in this node's Python with the offline
variables set (``offline load``); a hub id with no copy says what would be fetched.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from launchers import jobdir, waits
from launchers.defaults import (
    DOCTOR_ALLREDUCE_SECONDS,
    DOCTOR_MARK,
    DOCTOR_PAIR_LIMIT,
    DOCTOR_PAIR_MIB,
    DOCTOR_PAIR_PINGS,
    PREFLIGHT_PAIR_SECONDS,
)
from launchers.errors import VllmHpcError, WaitTimeout
from launchers.jobdir.paths import DoctorDir, ModelStore
from launchers.plan.commands import check_installed
from launchers.plan.launch import LaunchPlan
from launchers.plan.staging import OFFLINE_ENV
from launchers.runtime.collective import (
    Measured,
    Meeting,
    collectives,
    measure_pairs,
    stage_said,
)
from launchers.runtime.pairs import Peer, why
from launchers.spec import versions

MARK = DOCTOR_MARK
POLL = 0.2
ALLREDUCE_MIB = 16
ALLREDUCE_ROUNDS = 5  # timed after a first one (the warm-up, and the sum's check)
ALLREDUCE_FIX = "check the interface (GLOO/NCCL_SOCKET_IFNAME) and the firewall"
NOT_TRIED = (
    "not tried: a pair of nodes failed (or a node never came) above, and an all-reduce "
    "across them would only wait out its timeout"
)


class Report:
    def __init__(self, rank: int, host: str) -> None:
        self.rank, self.host = rank, host
        self.failed = False

    def __call__(
        self,
        check: str,
        level: str,
        detail: str,
        fix: str = "",
        *,
        pair: Mapping[str, Any] | None = None,
    ) -> None:
        """One check's line; ``pair``: what a pair check measured, for the table the
        login side draws (``observe.doctor_network``)."""
        self.failed |= level == "fail"
        line: dict[str, Any] = {"rank": self.rank, "host": self.host, "check": check}
        line |= {"level": level, "detail": detail, "fix": fix}
        if pair is not None:
            line["pair"] = dict(pair)
        print(MARK + json.dumps(line), flush=True)


def check_network(report: Report, iface: str | None) -> dict[str, str]:
    from launchers.runtime.network import detect, read_interfaces

    try:
        env, reason = detect(iface or None)
    except VllmHpcError as exc:
        report("interface", "fail", exc.detail, exc.fix or "pass --iface IF")
        return {}
    kinds = {i.name: i.kind for i in read_interfaces()}
    name = env["NCCL_SOCKET_IFNAME"]
    level = "ok" if kinds.get(name) in ("infiniband", "roce") or iface else "warn"
    fix = "" if level == "ok" else "no InfiniBand/RoCE interface: pass --iface if one exists"
    others = ", ".join(f"{n}({k})" for n, k in sorted(kinds.items()) if n != name)
    report("interface", level, f"{name} {env['VLLM_HOST_IP']}: {reason}; others: {others}", fix)
    return env


def check_rdma(report: Report, sys_root: str = "/sys") -> None:
    base = Path(sys_root, "class", "infiniband")
    devices = sorted(p.name for p in base.iterdir()) if base.is_dir() else []
    if devices:
        report("rdma", "ok", "RDMA devices: " + ", ".join(devices))
    else:
        report(
            "rdma",
            "warn",
            "no RDMA device in /sys/class/infiniband: NCCL falls back to TCP sockets",
            "load the IB driver (ibv_devices), or accept TCP (NCCL_IB_DISABLE=1)",
        )


def check_comm_env(report: Report, chosen: Mapping[str, str], environ: Mapping[str, str]) -> None:
    iface = chosen.get("NCCL_SOCKET_IFNAME")
    wrong = [
        f"{key}={environ[key]}"
        for key in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")
        if environ.get(key) and iface and environ[key].lstrip("=^") != iface
    ]
    shown = {k: v for k, v in environ.items() if k.startswith(("NCCL_", "GLOO_"))}
    if wrong:
        report(
            "nccl/gloo env",
            "warn",
            f"{', '.join(wrong)} overrides the chosen {iface}",
            "unset it, or pass --iface to choose that interface",
        )
    else:
        detail = " ".join(f"{k}={v}" for k, v in sorted(shown.items())) or "none set"
        report("nccl/gloo env", "ok", f"{detail}; vllm-hpc exports *_SOCKET_IFNAME={iface}")


def check_model_readable(report: Report, model: str) -> None:
    looks_local = model.startswith(("/", "./", "~")) or Path(model).exists()
    if not looks_local:
        report(
            "model",
            "warn",
            f"{model} is a hub id: it is downloaded on first start",
            "pre-download it to shared storage and point --model at the path",
        )
        return
    path = Path(os.path.expanduser(model))
    config = path / "config.json"
    if not path.is_dir():
        report("model", "fail", f"{path} is not a directory on this node", "mount it here")
    elif not os.access(config, os.R_OK):
        report("model", "fail", f"{config} is missing or unreadable", "check the path")
    else:
        report("model", "ok", f"{path} readable ({len(list(path.iterdir()))} files)")


def check_loading(report: Report, plan: LaunchPlan, environ: Mapping[str, str]) -> None:
    """What this node's file system makes of the model's loading (``plan.loading``): the
    line the node log will show when vllm serve starts here."""
    from launchers.plan.loading import decide_loading
    from launchers.runtime.fsprobe import facts

    serve = plan.leader.serve
    if serve is None:
        return
    decision = decide_loading(
        facts(serve.model, serve.args, environ), plan.vllm_version, serve.args
    )
    report("loading", "ok", decision.reason)


def _copy_problems(copy: Path, files: Sequence[tuple[str, int]]) -> list[str]:
    """What is wrong here with the files ``(path, size)`` of the copy in ``copy``: each
    must be a regular file of its size, readable (its first byte read)."""
    problems = []
    for name, size in files:
        path = copy / name
        try:
            with path.open("rb") as fh:
                found = os.fstat(fh.fileno()).st_size
                fh.read(1)
        except OSError as exc:
            problems.append(f"{name}: {exc.strerror or exc}")
            continue
        if found != size:
            problems.append(f"{name}: {found} bytes, the manifest says {size}")
    return problems


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def check_offline_copy(report: Report, plan: LaunchPlan, environ: Mapping[str, str]) -> str | None:
    """``doctor --offline``: where this node would read the model from, and what it would
    fetch from outside. The model to load offline next (None: none to load)."""
    from launchers.jobdir.modelstore import read_manifest
    from launchers.runtime import fsprobe

    check, model = "offline copy", plan.model
    env = {**environ, **plan.env}
    serve = plan.leader.serve
    args = serve.args if serve is not None else ()
    repo_id = plan.staged.repo_id if plan.staged is not None else model
    stage_fix = f"run: vllm-hpc stage {repo_id} on the login node"
    if fsprobe.unstaged_hub_id(model):
        switch = fsprobe.offline_switch(env)
        revision, cache = fsprobe.revision_of(args), fsprobe.hub_cache(env, args)
        if switch is None:
            report(check, "fail", f"not staged: the node would fetch {model} from the hub",
                   stage_fix)  # fmt: skip
            return None
        if not fsprobe.in_hub_cache(model, revision, cache):
            detail = (f"not staged and not in this node's Hugging Face cache ({cache}), with "
                      f"{switch}: the job would stop at its start")  # fmt: skip
            report(check, "fail", detail, stage_fix)
            return None
        detail = (f"not staged: {model} is read from this node's Hugging Face cache ({cache}, "
                  f"{switch}); its files are not checked")  # fmt: skip
        report(check, "warn", detail, stage_fix)
        return model
    copy = Path(os.path.expanduser(model))
    if not copy.is_dir():
        report(
            check,
            "fail",
            f"{model} is not a directory on this node",
            "mount the model store (shared storage) here" if plan.staged else "mount it here",
        )
        return None
    manifest = read_manifest(str(copy / ModelStore.MANIFEST))
    if manifest is None:
        if plan.staged is not None:
            report(check, "fail", f"{copy}: no readable {ModelStore.MANIFEST} on this node",
                   f"mount the model store here, or {stage_fix} again")  # fmt: skip
            return None
        switch = fsprobe.offline_switch(env)
        if switch is None:
            detail = (f"the model directory {copy} (not staged: no manifest to check it by); "
                      "HF_HUB_OFFLINE is not set in the job's env, so a file it lacks would "
                      "be asked of the hub")  # fmt: skip
            report(check, "warn", detail, "--env HF_HUB_OFFLINE=1 to be sure nothing is fetched")
        else:
            report(check, "ok", f"the model directory {copy} ({switch}; not staged: no "
                   "manifest to check it by)")  # fmt: skip
        return str(copy)
    files = [(f.path, f.size) for f in manifest.files]
    problems = _copy_problems(copy, files)
    if problems:
        shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        detail = f"{copy}: {len(problems)} of {len(files)} files wrong on this node: {shown}"
        report(check, "fail", detail,
               f"mount the model store here, or {stage_fix} again (it fetches what is "
               "missing)")  # fmt: skip
        return None
    detail = (f"staged copy of {manifest.repo_id} at {copy} (commit {manifest.commit[:12]}): "
              f"all {len(files)} files readable here with their sizes "
              f"({_size(manifest.total_bytes)}); nothing is fetched")  # fmt: skip
    report(check, "ok", detail)
    return str(copy)


LOAD_LEVELS = {"loaded": "ok", "failed": "fail", "skipped": "warn", "unavailable": "warn"}


def check_offline_load(
    report: Report,
    plan: LaunchPlan,
    target: str,
    environ: Mapping[str, str],
    python: str = sys.executable,
) -> None:
    """``doctor --offline``: the config and the tokenizer of ``target`` load in this
    node's Python (in the image, with Apptainer/Singularity) with the job's env and the
    offline variables (``offline_load``)."""
    from launchers.offline_load import load_offline
    from launchers.plan.argv import (
        APPTAINER_RUNTIMES,
        container_env,
        in_image,
        required_binds,
        wrap_env,
    )
    from launchers.runtime import fsprobe

    check, env = "offline load", {**environ, **plan.env}
    argv, shown = [python], python
    container = plan.container
    if container is not None and container.runtime in APPTAINER_RUNTIMES:
        binds = list(plan.container_binds) or required_binds(plan, environ)
        argv, shown = in_image(container, binds, ["python3"]), f"python3 in {container.image}"
        env = {**environ, **wrap_env(container, container_env(environ, {**env, **OFFLINE_ENV}))}
    elif container is not None:
        report(check, "warn", f"the tokenizer comes from {container.image}: not loaded here",
               "run vllm-hpc doctor inside the job (vllm-hpc doctor JOB)")  # fmt: skip
        return
    serve = plan.leader.serve
    revision = "" if os.path.isdir(target) else fsprobe.revision_of(serve.args if serve else ())
    found = load_offline(argv, target, env, revision=revision, shown=shown)
    level = LOAD_LEVELS[found.status]
    fixes = {
        "failed": f"run: vllm-hpc stage {plan.staged.repo_id} on the login node (it loads the "
        "tokenizer and names what the copy lacks)"
        if plan.staged is not None
        else "give the model directory the file named, or a right one",
        "skipped": "vLLM loads it at its start: nothing here proves it",
        "unavailable": "install vLLM (it brings Transformers) for this Python, or point "
        "--python / VLLM_HPC_PYTHON at the Python that has it",
    }
    report(check, level, found.detail, fixes.get(found.status, ""))


def check_offline(
    report: Report, plan: LaunchPlan, environ: Mapping[str, str], python: str = sys.executable
) -> None:
    """``doctor --offline``: the copy this node would read, then its config and
    tokenizer loaded offline in ``python`` (when there is a copy to load)."""
    target = check_offline_copy(report, plan, environ)
    if target is not None:
        check_offline_load(report, plan, target, environ, python)


def installed_versions() -> dict[str, str | None]:
    """vLLM's and Ray's versions in this Python (None: not installed)."""
    from launchers.installed import VLLM_DISTS, installed_version

    return {"vllm": installed_version(*VLLM_DISTS), "ray": installed_version("ray")}


def check_software(report: Report, plan: LaunchPlan, versions: Mapping[str, str | None]) -> None:
    """This node's vLLM (and Ray, for the Ray runtime) against what the plan runs."""
    if plan.container is not None:
        report("software", "ok", f"vLLM and Ray come from {plan.container}: not checked here")
        return
    python, vllm, ray = sys.executable, versions.get("vllm"), versions.get("ray")
    if vllm is None:
        fix = "install vLLM there, or point --python / VLLM_HPC_PYTHON at the Python that has it"
        report("software", "fail", f"vLLM is not installed for {python}", fix)
        return
    try:
        check_installed([a for role in plan.roles for a in role.serve_argv or ()], vllm)
    except VllmHpcError as exc:
        report("software", "fail", exc.detail, exc.fix or "")
        return
    if plan.runtime == "ray" and ray is None:
        fix = "install Ray there, or plan with --runtime native (vLLM >= 0.11.1)"
        report("software", "fail", f"the plan runs Ray, which is not installed for {python}", fix)
        return
    have = f"vLLM {vllm}" + (f", Ray {ray}" if ray else "")
    target = f"the plan targets vLLM {plan.vllm_version}, runtime {plan.runtime}"
    differs = version_differs(vllm, plan.vllm_version)
    if differs:
        report("software", "warn", f"{have} in {python}, but {target}", differs)
        return
    report("software", "ok", f"{have} in {python} ({target})")


def version_differs(installed: str, target: str) -> str:
    """The fix when the node's vLLM release is not the plan's target ('' when it is, or
    when either cannot be read): the plan's flags and defaults follow the target."""
    try:
        have, want = versions.release(installed), versions.release(target)
    except ValueError:
        return ""
    if have == want:
        return ""
    return (
        f"plan for what the nodes run: --vllm-version {versions.shown(have)} (or the site "
        f"file's vllm_version), or install vLLM {versions.shown(want)} there"
    )


def check_gpus(report: Report, run: Callable[[Sequence[str]], tuple[int, str]]) -> bool:
    """True when this node has GPUs (the all-reduce then uses NCCL)."""
    if shutil.which("nvidia-smi") is None:
        report("gpus", "ok", "no nvidia-smi: a CPU node, nothing to check")
        return False
    code, out = run(
        ["nvidia-smi", "--query-gpu=index,memory.free,memory.total", "--format=csv,noheader"]
    )
    if code != 0:
        report("gpus", "fail", f"nvidia-smi failed: {out.strip()[:120]}", "check the driver")
        return False
    rows = [r for r in out.strip().splitlines() if r]
    busy = [r for r in rows if _free_fraction(r) < 0.9]
    detail = "; ".join(r.strip() for r in rows)
    if busy:
        report(
            "gpus", "warn", f"GPU memory in use: {detail}", "find the other process (nvidia-smi)"
        )
    else:
        report("gpus", "ok", detail)
    return bool(rows)


def _free_fraction(row: str) -> float:
    try:
        _, free, total = (int(v.split()[0]) for v in row.split(","))
    except ValueError:
        return 1.0
    return free / total if total else 1.0


def _hold(ip: str, port: int, stack: ExitStack) -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((ip, port))
    except OSError:
        sock.close()
        return "in use (served by a running job?)"
    sock.listen(16)
    stack.callback(sock.close)
    return "held open by the doctor"


def _free_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def _wait_file(path: Path, timeout: float) -> dict[str, Any]:
    try:
        found = waits.wait_for(
            lambda: jobdir.read_json(path) or None,
            what=f"rank 0 to write {path}",
            timeout=timeout,
            interval=POLL,
        )
    except WaitTimeout as exc:
        raise TimeoutError(exc.one_line()) from None
    return found.value


def check_ports(report: Report, leader: Mapping[str, Any], ports: Mapping[str, int]) -> None:
    for name, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            code = sock.connect_ex((str(leader["ip"]), port))
        where = f"{leader['host']} {leader['ip']}:{port}"
        if code == 0:
            report(f"port {name}", "ok", f"{where} reachable")
        else:
            report(
                f"port {name}",
                "fail",
                f"{where} not reachable ({os.strerror(code)})",
                f"open TCP {port} between the nodes, or choose another port",
            )


def torch_missing() -> str | None:
    """Why torch is not importable here (None: it is)."""
    try:
        import torch.distributed  # noqa: F401
    except ImportError as exc:
        return str(exc) or "ImportError"
    return None


def check_allreduce(
    report: Report,
    store: Any,
    where: str,
    rank: int,
    world: int,
    gpus: bool,
    seconds: float = DOCTOR_ALLREDUCE_SECONDS,
) -> None:
    """The pre-flight's all-reduce across the nodes (``collective.collectives``) at
    ``store`` (rank 0's, at ``where``), then ``ALLREDUCE_ROUNDS`` more timed: its bus
    bandwidth as nccl-tests computes it. It ends at ``seconds``, whatever blocks it."""
    found = collectives(
        rank, world, store, seconds, ALLREDUCE_MIB, repeat=ALLREDUCE_ROUNDS, gpus=gpus
    )
    backend = found["backend"]
    if found.get("wrong_sum"):
        report(
            "all-reduce",
            "fail",
            f"{backend} across {world} nodes: {found['error']}, WRONG SUM",
            "the fabric corrupts data: report it to the site",
        )
        return
    if "error" in found:
        stage = stage_said(found, ALLREDUCE_MIB, ALLREDUCE_ROUNDS)
        report(
            "all-reduce",
            "fail",
            f"{backend} over {where} ({stage}): {found['error']}",
            f"{ALLREDUCE_FIX}; vllm-hpc doctor --network measures every pair of nodes",
        )
        return
    each = max(float(found["repeat_ms"]) / 1000, 1e-9)
    busbw = 2 * (world - 1) / world * ALLREDUCE_MIB * 2**20 / each / 1e9
    report(
        "all-reduce",
        "ok",
        f"{backend} across {world} nodes: {ALLREDUCE_MIB} MiB in {each * 1000:.1f} ms, "
        f"bus bandwidth {busbw:.2f} GB/s",
    )


def open_store(ip: str, port: int, rank: int, seconds: float) -> Any:
    """The nodes' meeting point: a TCPStore rank 0 holds on its own address (as the
    pre-flight's), which the pair checks and the all-reduce each use under a prefix."""
    from datetime import timedelta

    import torch.distributed as dist

    return dist.TCPStore(
        ip, port, None, rank == 0, timedelta(seconds=seconds), wait_for_workers=False
    )


def prefixed(store: Any, prefix: str) -> Any:
    import torch.distributed as dist

    return dist.PrefixStore(prefix, store)


def pair_row(a: Peer, b: Peer, found: Measured, mib: int) -> dict[str, Any]:
    """What ``vllm-hpc doctor`` draws a pair's table row from."""
    return {
        "a": a.rank, "b": b.rank, "a_host": a.host, "b_host": b.host, "a_ip": a.ip,
        "b_ip": b.ip, "outcome": found.outcome, "rtt_ms": found.rtt_ms,
        "gb_per_s": found.gb_per_s, "mib": mib, "via": "tcp",
    }  # fmt: skip


PAIR_FIX = {
    "large": "frames over some size are dropped between them: compare the interfaces' "
    "MTUs (ip link) on both nodes and the switch's",
}
PAIR_FIX_DEFAULT = (
    "open TCP between the two nodes' data interfaces (a firewall between them?), or choose "
    "another interface (--iface)"
)


def check_pairs(report: Report, meeting: Meeting, me: Peer, seconds: float) -> bool:
    """Every pair of nodes over TCP (``runtime.collective.measure_pairs``): one row for
    each pair this node sends on, a failing row for each that does not pass. True when
    every node came and no pair failed anywhere (every node reads the same answer)."""
    mine, silent, failed = measure_pairs(
        meeting, me, PREFLIGHT_PAIR_SECONDS, DOCTOR_PAIR_MIB,
        pings=DOCTOR_PAIR_PINGS, limit=DOCTOR_PAIR_LIMIT, arrive=seconds,
    )  # fmt: skip
    if silent and me.rank == 0:
        ranks = ", ".join(str(r) for r in silent)
        report(
            "pairs",
            "fail",
            f"node rank(s) {ranks} never joined the pair checks within {seconds:.0f} s",
            "read those nodes' rows above",
        )
    for other in sorted(mine):
        peer, found = mine[other]
        to = f"to {peer.host} ({peer.ip})"
        row = pair_row(me, peer, found, DOCTOR_PAIR_MIB)
        if found.outcome == "ok" and found.rtt_ms is not None and found.gb_per_s is not None:
            detail = (
                f"{to}: {found.rtt_ms:.3f} ms round trip, {found.gb_per_s:.2f} GB/s "
                f"({DOCTOR_PAIR_MIB} MiB over TCP)"
            )
            report("pair", "ok", detail, pair=row)
        else:
            detail = f"{to} over TCP: {why(found.outcome)}"
            report("pair", "fail", detail, PAIR_FIX.get(found.outcome, PAIR_FIX_DEFAULT), pair=row)
    return not silent and failed == 0


def _network(report: Report, store: Any, rank: int, world: int, chosen: Mapping[str, str],
             seconds: float) -> bool:  # fmt: skip
    """The pair checks at rank 0's store; True when every pair passed."""
    iface = chosen.get("GLOO_SOCKET_IFNAME") or chosen.get("NCCL_SOCKET_IFNAME", "?")
    me = Peer(rank, report.host.split(".")[0], chosen["VLLM_HOST_IP"], iface)
    return check_pairs(report, Meeting(prefixed(store, "network"), rank, world), me, seconds)


def _own_store(ip: str, seconds: float) -> tuple[Any, int] | str:
    """Rank 0's store and its port, or why it could not open one."""
    port = _free_port(ip)
    try:
        return open_store(ip, port, 0, seconds), port
    except Exception as exc:  # a port taken meanwhile: say which
        return f"cannot open the nodes' store on {ip}:{port}: {exc}"[:200]


def _their_store(leader: Mapping[str, Any], rank: int, seconds: float) -> Any:
    """Rank 0's store, as another rank reaches it, or why it cannot."""
    port = leader.get("store_port")
    if port is None:
        return f"rank 0 opened no store: {leader.get('no_store') or 'see rank 0'}"
    try:
        return open_store(str(leader["ip"]), int(port), rank, seconds)
    except Exception as exc:  # torch's store raises several types
        return f"cannot reach rank 0's store at {leader['ip']}:{port}: {exc}"[:200]


def _run(argv: Sequence[str]) -> tuple[int, str]:
    from launchers import _proc

    done = _proc.run(argv, timeout=30)
    return done.returncode, done.stdout + done.stderr


def _this_node(
    report: Report, plan: LaunchPlan, environ: Mapping[str, str], offline: bool
) -> tuple[dict[str, str], bool]:
    """The checks of this node alone: the interface chosen (empty: none) and whether it
    has GPUs."""
    chosen = check_network(report, plan.env.get("VLLM_HPC_IFACE"))
    check_rdma(report)
    check_comm_env(report, chosen, environ)
    check_model_readable(report, plan.model)
    check_loading(report, plan, environ)
    if offline:
        check_offline(report, plan, environ)
    check_software(report, plan, installed_versions())
    return chosen, check_gpus(report, _run)


def _meet(
    report: Report, plan: LaunchPlan, rank: int, world: int, ip: str, leader_file: Path,
    timeout: float, stack: ExitStack, missing: str | None,
) -> tuple[dict[str, Any], Any] | None:  # fmt: skip
    """Rank 0 holds the plan's ports and the nodes' store (``stack`` closes them) and
    writes where they are; the others read it, check the ports and join the store. The
    leader's file and the store (a reason instead when there is none; None: on a
    single node, or no torch); None when rank 0's file never came (reported)."""
    store: Any = None
    if rank == 0:
        ports = plan.leader_ports()
        held = {name: _hold(ip, port, stack) for name, port in ports.items()}
        leader: dict[str, Any] = {"host": report.host, "ip": ip, "ports": ports, "held": held}
        if world > 1 and missing is not None:
            leader["no_store"] = "torch is not importable on rank 0"
        elif world > 1:
            opened = _own_store(ip, timeout)
            if isinstance(opened, str):
                store = leader["no_store"] = opened
            else:
                store, leader["store_port"] = opened
        jobdir.write_json(leader_file, leader)
        return leader, store
    try:
        leader = _wait_file(leader_file, timeout)
    except TimeoutError as exc:
        report("leader", "fail", str(exc), "read rank 0's output above")
        return None
    check_ports(report, leader, leader["ports"])
    return leader, (_their_store(leader, rank, timeout) if missing is None else None)


def run_node(
    plan: LaunchPlan,
    rank: int,
    world: int,
    out_dir: str,
    environ: Mapping[str, str],
    timeout: float,
    network: bool = False,
    *,
    offline: bool = False,
) -> int:
    """``network``: measure every pair of nodes too (``vllm-hpc doctor --network``);
    ``offline``: prove the model needs nothing from outside (``--offline``)."""
    report = Report(rank, socket.gethostname())
    chosen, gpus = _this_node(report, plan, environ, offline)
    if not chosen:
        return 1
    for key in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "TP_SOCKET_IFNAME"):
        os.environ[key] = chosen[key]
    missing = torch_missing() if world > 1 else None
    with ExitStack() as stack:
        leader_file = Path(DoctorDir(out_dir).leader)
        ip = chosen["VLLM_HOST_IP"]
        met = _meet(report, plan, rank, world, ip, leader_file, timeout, stack, missing)
        if met is None:
            return 1
        leader, store = met
        if world == 1:
            report("all-reduce", "ok", "one node: no cross-node all-reduce to test")
        elif missing is not None:
            report("all-reduce", "fail", f"torch is not importable here ({missing})",
                   "run from the job's env")  # fmt: skip
        elif isinstance(store, str):
            fix = "see rank 0's rows" if rank else "run the doctor again (a port taken meanwhile?)"
            report("pairs" if network else "all-reduce", "fail", store, fix)
            if network:
                report("all-reduce", "warn", NOT_TRIED, "mend the failed pairs first")
        elif network and not _network(report, store, rank, world, chosen, timeout):
            # Every node reads the same count: none starts a collective the others skip.
            report("all-reduce", "warn", NOT_TRIED, "mend the failed pairs first")
        else:
            where = f"{leader['ip']}:{leader['store_port']}"
            check_allreduce(report, prefixed(store, "all-reduce"), where, rank, world, gpus)
    return 1 if report.failed else 0
