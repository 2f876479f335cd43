"""``vllm-hpc jobs|status|logs|metrics|bench|stop``: the operator's commands over a
job, each a thin printer of what ``launchers.observe.job`` reads."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from launchers.cli.exits import EXIT_FAILURE
from launchers.defaults import (
    BENCH_CONCURRENCY,
    BENCH_INPUT_LEN,
    BENCH_OUTPUT_LEN,
    BENCH_REQUESTS,
    METRICS_INTERVAL,
    STOP_TIMEOUT,
)

if TYPE_CHECKING:
    from launchers.client import Client

job_root_option = click.option(
    "--job-root",
    help="Where job directories are (default: $VLLM_HPC_JOB_ROOT, else the site file's "
    "job_root, else ~/.vllm-hpc/jobs).",
)

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def client_for(job_root: str | None) -> Client:
    from launchers.client import Client

    return Client(job_root=job_root)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _start(pending: dict[str, str | None], now: float) -> str:
    """``expected start 2026-12-02T15:30:00 (in 2h)``, or that SLURM has no estimate."""
    from datetime import datetime

    start = pending["expected_start"]
    if not start:
        return "no expected start yet (SLURM's scheduler has not estimated one)"
    try:
        left = datetime.fromisoformat(start).timestamp() - now
    except ValueError:  # SLURM_TIME_FORMAT set to another format: as squeue prints it
        return f"expected start {start}"
    return f"expected start {start}" + (f" (in {_age(left)})" if left > 0 else "")


def _why(pending: dict[str, str | None]) -> str:
    """``Priority: other jobs are ahead of it in the queue [detail]``."""
    text = str(pending["reason"]) + (f": {pending['meaning']}" if pending["meaning"] else "")
    return text + (f" [{pending['detail']}]" if pending["detail"] else "")


@click.command("jobs")
@job_root_option
@json_option
def jobs_cmd(job_root: str | None, as_json: bool) -> None:
    """Your vllm-hpc jobs: id, model, nodes, state, endpoint, age; under a PENDING
    job, why SLURM has not started it and when it expects to."""
    import json
    import time

    rows: list[dict[str, Any]] = []
    client = client_for(job_root)
    for job in client.jobs():
        row = job.summary()
        started = row.pop("started")
        rows.append({**row, "age": _age(time.time() - started) if started else "-"})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no jobs in {client.job_root}")
        return
    cols = ("job_id", "model", "nodes", "state", "endpoint", "age")
    table = [tuple(c.upper() for c in cols)] + [tuple(str(r[c]) for c in cols) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    now = time.time()
    from launchers.cli.colour import state

    state_col = cols.index("state")
    for n, (line, pending) in enumerate(
        zip(table, [None, *(r["pending"] for r in rows)], strict=True)
    ):
        cells = [v.ljust(w) for v, w in zip(line, widths, strict=True)]
        if n:
            cells[state_col] = state(cells[state_col])
        click.echo("  ".join(cells).rstrip())
        if pending:
            click.echo(f"{'':{widths[0]}}  pending: {_why(pending)}; {_start(pending, now)}")


@click.command("status")
@click.argument("job_id")
@job_root_option
@json_option
def status_cmd(job_id: str, job_root: str | None, as_json: bool) -> None:
    """SLURM state (for a PENDING job: why it waits, when SLURM expects to start it),
    each node's role and address, Ray nodes, vLLM health, endpoint.

    Exits 0 only when the job is READY (1 otherwise), so scripts can poll it.
    """
    import json
    import time

    job = client_for(job_root).job(job_id)
    data = job.report()
    health, ray_nodes = data["healthy"], data["ray_nodes"]
    state, url, model = data["state"], data["endpoint"], data["model"]
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        from launchers.cli.colour import state as painted

        click.echo(f"job {job_id}: {painted(state)} - {data['message']}")
        click.echo(f"  slurm     {data['slurm'] or '-'}")
        if data["pending"]:  # its reason is in the message above
            click.echo(f"  start     {_start(data['pending'], time.time())}")
        click.echo(f"  endpoint  {url or '-'}  model {model or '-'}")
        if health is not None:
            click.echo(f"  health    {'ok' if health else 'not answering'}")
        for node in data["nodes"]:
            click.echo(f"  node {node['rank']}    {node['host']} {node['ip']} ({node['role']})")
        if ray_nodes is not None:
            when = "alive" if state == "READY" else "at the last report"
            click.echo(f"  ray       {len(ray_nodes)} node(s) {when}")
        click.echo(f"  job dir   {job.job_dir}")
        if data["log_tail"]:
            click.echo("  log tail  (the failed process's last lines)")
            for line in data["log_tail"]:
                click.echo(f"    {line}")
    if state != "READY" or health is False:
        sys.exit(EXIT_FAILURE)


@click.command("logs")
@click.argument("job_id")
@job_root_option
@click.option("--node", "-n", type=int, help="Only this node rank's logs.")
@click.option("--tail", "tail_lines", type=int, default=40, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl+C ends).")
def logs_cmd(
    job_id: str, job_root: str | None, node: int | None, tail_lines: int, follow: bool
) -> None:
    """The leader's and workers' logs from the job directory."""

    from launchers._proc import tail

    job = client_for(job_root).job(job_id)
    files = job.logs(node)
    if not files:
        raise click.ClickException(f"no logs yet in {job.job_dir}")
    for path in files:
        click.echo(f"==> {path} <==")
        text = tail(str(path), tail_lines)
        if text:
            click.echo(text)
    if not follow:
        return
    for path, line in job.follow_logs(node):  # until Ctrl+C
        click.echo(f"{path.name}: {line}")


@click.command("metrics")
@click.argument("job_id")
@job_root_option
@click.option(
    "--interval",
    type=click.FloatRange(min=0.5),
    default=METRICS_INTERVAL,
    show_default=True,
    help="Seconds between the two scrapes that give rates.",
)
@click.option("--watch", is_flag=True, help="Keep printing every --interval (Ctrl+C ends).")
@json_option
def metrics_cmd(
    job_id: str, job_root: str | None, interval: float, watch: bool, as_json: bool
) -> None:
    """Requests running/waiting, KV-cache use, token throughput, TTFT and latency
    percentiles, from the endpoint's /metrics (Prometheus text, parsed)."""
    import json

    from launchers.observe.metrics import render_summary

    job = client_for(job_root).job(job_id)
    for summary in job.watch_metrics(interval):
        click.echo(json.dumps(summary) if as_json else render_summary(summary))
        if not watch:
            return
        if not as_json:
            click.echo("")


@click.command("bench")
@click.argument("job_id")
@job_root_option
@click.option("--requests", type=click.IntRange(min=1), default=BENCH_REQUESTS, show_default=True)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=BENCH_CONCURRENCY,
    show_default=True,
    help="Requests in flight at once.",
)
@click.option("--input-len", type=click.IntRange(min=1), default=BENCH_INPUT_LEN, show_default=True)
@click.option(
    "--output-len", type=click.IntRange(min=1), default=BENCH_OUTPUT_LEN, show_default=True
)
@click.option(
    "--tool",
    type=click.Choice(["auto", "vllm", "builtin"]),
    default="auto",
    show_default=True,
    help="auto: `vllm bench serve` where vLLM is importable (here, else on the job's "
    "leader), the built-in client only where it is not.",
)
@json_option
def bench_cmd(
    job_id: str,
    job_root: str | None,
    requests: int,
    concurrency: int,
    input_len: int,
    output_len: int,
    tool: str,
    as_json: bool,
) -> None:
    """Load-test a READY job: throughput, TTFT, TPOT, inter-token and request latency
    percentiles. The result is saved as JSON in the job directory (bench/)."""
    import json

    from launchers.observe.loadtest import render

    job = client_for(job_root).job(job_id)
    result = job.bench(
        requests=requests,
        concurrency=concurrency,
        input_len=input_len,
        output_len=output_len,
        tool=tool,
        log=None if as_json else (lambda message: click.echo(message, err=True)),
    )
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(render(result))
    click.echo(f"saved       {result['result_file']}")


@click.command("stop")
@click.argument("job_id")
@job_root_option
@click.option("--timeout", type=float, default=STOP_TIMEOUT, show_default=True)
def stop_cmd(job_id: str, job_root: str | None, timeout: float) -> None:
    """Cancel the job and wait until every node has stopped. Safe to repeat."""
    job = client_for(job_root).job(job_id)
    status = job.stop(timeout=timeout)
    click.echo(f"job {job_id}: {status.state} - {status.message}")
