"""The pre-flight, as the node runtime runs it: start the check's child first thing (it
imports torch while Ray starts), then, before anything loads weights, wait for its
verdict: the leader before ``vllm serve``, a headless follower before its ``vllm serve``
(a Ray worker joins while the check runs: it loads nothing, and the leader's
``vllm serve`` that places vLLM's workers on it waits for the shared verdict). A failed
check fails the node with the child's one line, which names the nodes that cannot talk
(``runtime.collective``), then, as a second sentence, what each node used (interfaces,
subnets, ``NCCL_*``/``GLOO_*``/``VLLM_HOST_IP``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from launchers import _proc, waits
from launchers.errors import RuntimeFailure
from launchers.jobdir import jobfiles
from launchers.plan.launch import Preflight
from launchers.runtime.collective import DOCS, parse
from launchers.runtime.context import NodeContext

STOP_GRACE = 2.0


@dataclass
class Running:
    """A node's pre-flight child and what it was asked."""

    child: _proc.Child
    log_path: str
    check: Preflight
    arrive_seconds: float

    @property
    def timeout(self) -> float:
        """The longest the child can take: every node's arrival, the collectives, the
        pair checks and the verdict, with a margin for torch's import."""
        return self.arrive_seconds + self.check.seconds + 4 * self.check.pair_seconds + 60


def meeting_address(check: Preflight, leader_ip: str | None) -> str | None:
    """Where a follower given the leader's address meets the others without the leader's
    file (``IP:PORT``): only at a fixed port, which the leader never moves. None: read
    the port from the leader's file."""
    return f"{leader_ip}:{check.port}" if check.port_fixed and leader_ip else None


def start(
    ctx: NodeContext, check: Preflight, *, arrive_seconds: float, leader: str | None = None
) -> Running:
    """Start this node's check. ``leader`` (``IP:PORT``): where the nodes meet when there
    is no leader's file to read it from."""
    argv = [
        *ctx.python_argv(),
        "-m",
        "launchers.runtime.collective",
        "--rank",
        str(ctx.rank),
        "--world",
        str(ctx.nodes),
        "--job-id",
        ctx.job_id,
        "--attempt",
        str(ctx.attempt),
        "--leader-file",
        ctx.leader_file,
        "--seconds",
        f"{check.seconds:g}",
        "--pair-seconds",
        f"{check.pair_seconds:g}",
        "--large-mib",
        str(check.large_mib),
        "--arrive-seconds",
        f"{arrive_seconds:g}",
    ]
    if leader is not None:
        argv += ["--leader", leader]
    run, env = ctx.command(ctx.in_image(argv))
    log_path = ctx.logfile("preflight")
    child = _proc.start("preflight", run, env=env, log_path=log_path)
    return Running(child=child, log_path=log_path, check=check, arrive_seconds=arrive_seconds)


def _verdict(log_path: str) -> dict[str, object] | None:
    try:
        lines = Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        found = parse(line)
        if found is not None:
            return found
    return None


def finish(ctx: NodeContext, running: Running) -> None:
    """Wait for the verdict (a stop asked for ends the wait); log a pass, raise a
    failure naming the nodes that cannot talk."""

    def ended() -> int | None:
        ctx.stopper.check()
        return running.child.poll()

    try:
        waited = waits.wait_for(
            ended,
            what="the pre-flight (the nodes' collective check)",
            timeout=running.timeout,
            log=running.log_path,
            interval=0.1,
            clock=ctx.clock,
        )
    finally:
        if running.child.poll() is None:
            _proc.stop_tree(running.child, grace=STOP_GRACE)
    result = _verdict(running.log_path)
    if result is None:
        how = _proc.ended(waited.value)
        raise RuntimeFailure(
            f"pre-flight: its check {how} without a verdict", fix=f"read {running.log_path}"
        )
    if result.get("skipped"):
        ctx.log(f"pre-flight skipped: {result['skipped']}")
        return
    if result.get("ok"):
        ctx.log(f"pre-flight passed in {waited.seconds:.1f} s: {result.get('line')}")
        return
    line = f"pre-flight: {result.get('line')}"
    missing = result.get("missing")
    if isinstance(missing, list) and missing:
        line += ": " + "; ".join(_why_missing(ctx, int(rank)) for rank in missing)
    env = result.get("env")
    if isinstance(env, str) and env:
        line = then(line, env)
    fix = f"see {DOCS}; --no-preflight skips the check"
    if running.check.port_fixed and "missing" in result:
        # the nodes never met, and nodes that planned the check on their own may disagree
        fix += (
            f"; nodes that plan on their own must all run it on port {running.check.port} "
            "(--preflight-port, PREFLIGHT_PORT for launch_vllm_node1/2.sh) or all skip it "
            "(--no-preflight, PREFLIGHT=0)"
        )
    raise RuntimeFailure(line, fix=fix)


def then(line: str, more: str) -> str:
    """``more`` as a second sentence after ``line`` (what the nodes used, after the one
    line that says what failed)."""
    stop = "" if line.endswith((".", "?", "!")) else "."
    return f"{line}{stop} {more[:1].upper()}{more[1:]}"


def _why_missing(ctx: NodeContext, rank: int) -> str:
    """Why rank ``rank`` never reached the pre-flight, as far as the job directory says."""
    record = jobfiles.read(ctx.files.node(rank), jobfiles.NodeRecord)
    if record is None or record.attempt != ctx.attempt:
        return f"rank {rank} never started its runtime (see {ctx.files.node_log(rank)})"
    return (
        f"{record.hostname} ({record.ip}, rank {rank}) started but did not reach it "
        f"(see {ctx.files.node_log(rank)})"
    )
