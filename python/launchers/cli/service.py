"""``vllm-hpc service up|status|list|scale|down|url|key|metrics``: a model kept served by replica
jobs behind one front, for longer than any job's time limit. Thin over
``launchers.service.manage``."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Literal

import click

from launchers.cli.jobs import job_root_option, json_option
from launchers.cli.options import RequestCommand, request_options
from launchers.defaults import (
    FRONT_ADDRESS_TIMEOUT,
    RAY_WORKER_PORTS,
    SERVICE_COLD_START_WAIT_SECONDS,
    SERVICE_DOWN_TIMEOUT,
    SERVICE_FRONT_TIME,
    SERVICE_HANDOVER_SECONDS,
    SERVICE_IDLE_SECONDS,
    SERVICE_MAX_REPLICAS,
    SERVICE_PORT,
    SERVICE_REPLICAS,
    SERVICE_RETRY_AFTER_SECONDS,
    SERVICE_ROUTER_PORT_OFFSET,
    SERVICE_SCALE_DOWN_SECONDS,
    SERVICE_SCALE_UP_SECONDS,
    SERVICE_SCALE_UP_WAITING,
    SLURM_WARNING_SECONDS,
    USER_PORTS,
    WAIT_TIMEOUT,
)
from launchers.spec import fields
from launchers.spec.request import SubmitRequest

if TYPE_CHECKING:
    from launchers.service.manage import Services, UpPlan

SERVICE_HELP = """Keep a model served past the walltime: N replica jobs behind one URL.

\b
  vllm-hpc service up llama -m llama-3.1-70b-instruct -N 2 -G 4 -p gpu -t 12:00:00 \\
      --replicas 2 --handover 30m
  vllm-hpc service status llama      replicas, their jobs, states and end times
  vllm-hpc service url llama         the one URL clients use (http://HOST:PORT/v1)
  vllm-hpc service scale llama 3
  vllm-hpc service up chat -m MODEL --min-replicas 0 --idle 30m   scale to zero when idle
  vllm-hpc service up chat -m MODEL --replicas 1 --max-replicas 4  autoscale on vLLM's queue
  vllm-hpc service key add llama alice   a key for alice, printed once
  vllm-hpc service metrics llama     requests and tokens per key, latency, replicas
  vllm-hpc service down llama        drain and stop every replica, then the front

Each replica is an ordinary vllm-hpc job (any layout `submit` runs). The front (a small
CPU-only job, or `--front here`) runs vllm-router on loopback behind an authenticating
proxy, and a controller that keeps the replicas READY: a successor is submitted
`--handover` before a replica's time limit and takes over once READY, then the old one
drains (in-flight requests finish); handovers roll: the next successor waits until no
other replica loads or drains, so SLURM holds at most N + 1 replicas (unless half the
window has gone by); a failed replica is replaced. `down` returns once SLURM has ended
every replica job and the front's job. With `--min-replicas` below `--replicas` the
service keeps only its minimum after `--idle` without a request (0: only the front);
the next request starts the rest and waits for a replica up to `--cold-start-wait`.
With `--max-replicas` above `--replicas` the load moves the count between the minimum
(one at least) and it: one replica more when vLLM's waiting requests per READY replica
stay above `--scale-up-waiting` for `--scale-up-after`, one fewer at half of it for
`--scale-down-after`, never while a replica loads or drains.
Each user gets a key of their own (`service key add`, `revoke`); the front forwards with
the service's internal key (`<job root>/services/NAME/key`, the key `default`), which
users never see. The router's admin API is never exposed.
"""


def _duration(text: str, flag: str) -> float:
    """``30m``, ``2h``, ``90s`` or plain seconds -> seconds (``flag`` names it in the
    refusal: bad input, exit 2)."""
    from launchers.errors import InputError

    units = {"s": 1, "m": 60, "h": 3600}
    value = text.strip().lower()
    scale = units.get(value[-1:], 0)
    number = value[:-1] if scale else value
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise InputError(f"{flag}: {text!r} is not a duration (e.g. 30m, 2h, 90s)") from None
    if not 0 < seconds <= fields.MAX_TIMEOUT_SECONDS:
        raise InputError(f"{flag}: {text!r} is out of range (above 0, at most "
                         f"{fields.MAX_TIMEOUT_SECONDS:g} s)")  # fmt: skip
    return seconds


def _maybe_duration(text: str | None, flag: str) -> float | None:
    return None if text is None else _duration(text, flag)


def _span(seconds: float) -> str:
    """``30m``, ``90s``: a duration as the options take it."""
    return f"{seconds / 60:g}m" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g}s"


def _services(job_root: str | None) -> Services:
    from launchers.cli.jobs import client_for
    from launchers.service.manage import Services

    return Services(client_for(job_root))


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    left = epoch - time.time()
    return f"in {int(left // 60)}m{int(left % 60):02d}s" if left > 0 else "now"


def _say(as_json: bool, data: dict[str, Any], text: str) -> None:
    """One result: ``data`` as JSON, or ``service NAME: text``."""
    click.echo(json.dumps(data) if as_json else f"service {data['name']}: {text}")


def _print_summary(row: dict[str, Any]) -> None:
    from launchers.cli.colour import state

    said = f" ({row['message']})" if row["message"] else ""
    click.echo(f"service {row['name']}: {state(row['state'])}{said}")
    front, ended = row["front"], row.get("front_ended")
    if ended is not None:  # why no front runs: its job ended (its log says why)
        click.echo(f"  front: not running: {ended['message']}")
        for line in ended["lines"]:
            click.echo(f"    | {line}")
        click.echo(f"  (fix the cause, then vllm-hpc service up {row['name']}: it adopts the "
                   "replicas)")  # fmt: skip
    elif front is None:
        click.echo("  front: not running (vllm-hpc service up NAME adopts the replicas)")
    else:
        where = f"job {front['job_id']} on " if front["job_id"] else ""
        click.echo(f"  url:   {front['url']}   front: {where}{front['hostname']}")
    auto = row.get("autoscaling")
    if auto is not None:
        click.echo(
            f"  replicas {row['replicas_now']} ({auto['fewest']}-{auto['most']}, autoscaling on "
            f"waiting requests: above {auto['scale_up_waiting']:g} per replica for "
            f"{_span(auto['scale_up_seconds'])} adds one, at most "
            f"{auto['scale_down_waiting']:g} for {_span(auto['scale_down_seconds'])} drains one)"
        )
        if auto["last_decision"]:
            click.echo(f"  last scaling: {auto['last_decision']}")
    cols = ("slot", "job_id", "generation", "role", "state", "url", "ends")
    table = [tuple(c.upper() for c in cols)]
    for r in row["replicas"]:
        table.append((str(r["slot"]), r["job_id"], str(r["generation"]), r["role"],
                      r["state"], r["url"] or "-", _when(r["ends_at"])))  # fmt: skip
    widths = [max(len(t[i]) for t in table) for i in range(len(cols))]
    at = cols.index("state")
    for t in table:  # the state column in its colour, padded first so columns stay aligned
        cells = [v.ljust(w) for v, w in zip(t, widths, strict=True)]
        cells[at] = state(cells[at])
        click.echo(("  " + "  ".join(cells)).rstrip())
    for event in row["events"][-5:]:
        click.echo(f"  - {event}")


@click.group("service", help=SERVICE_HELP)
def group() -> None:
    pass


@group.command("status")
@click.argument("name")
@job_root_option
@json_option
def status_cmd(name: str, job_root: str | None, as_json: bool) -> None:
    """Replicas, their jobs, states and end times; the front; the last events."""
    row = _services(job_root).get(name).summary()
    if as_json:
        click.echo(json.dumps(row, indent=2))
    else:
        _print_summary(row)


@group.command("list")
@job_root_option
@json_option
def list_cmd(job_root: str | None, as_json: bool) -> None:
    """Your services: name, state, replicas, URL."""
    services = _services(job_root)
    rows = [s.summary() for s in services.list()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no services in {services.client.job_root}")
        return
    table = [("NAME", "STATE", "READY", "URL")]
    for r in rows:
        serving = [x for x in r["replicas"] if x["role"] not in ("draining", "ending")]
        ready = sum(1 for x in serving if x["state"] == "READY")
        wanted = r["replicas_now"] if r.get("autoscaling") else r["replicas_wanted"]
        table.append((r["name"], r["state"], f"{ready}/{wanted}", r["url"] or "-"))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for line in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


@group.command("scale")
@click.argument("name")
@click.argument("replicas", type=click.IntRange(min=0))
@job_root_option
@json_option
def scale_cmd(name: str, replicas: int, job_root: str | None, as_json: bool) -> None:
    """Keep REPLICAS replicas READY from now on (the front acts within seconds); a
    service that autoscales starts from REPLICAS (within its range) and the load moves it."""
    spec = _services(job_root).get(name).scale(replicas)
    more = f" (the load moves it, {spec.fewest}-{spec.most})" if spec.autoscales else ""
    _say(as_json, {"name": name, "replicas": spec.replicas},
         f"{spec.replicas} replica(s) wanted{more}")  # fmt: skip


@group.command("down")
@click.argument("name")
@job_root_option
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=SERVICE_DOWN_TIMEOUT, show_default=True
)
@json_option
def down_cmd(name: str, job_root: str | None, timeout: float, as_json: bool) -> None:
    """Drain and stop every replica, then the front; return once SLURM has ended all
    their jobs (or after --timeout, naming the jobs still there)."""
    state = _services(job_root).get(name).down(timeout)
    _say(as_json, {"name": name, "state": state.state}, state.state)


@group.command("url")
@click.argument("name")
@job_root_option
def url_cmd(name: str, job_root: str | None) -> None:
    """The URL clients use (the front's current address)."""
    click.echo(_services(job_root).get(name).url())


@group.command("front", hidden=True)
@click.option("--service-dir", required=True)
@click.option("--host")
def front_cmd(service_dir: str, host: str | None) -> None:
    """Run a service's front (what the front job runs)."""
    from launchers.service.front import run_front

    raise SystemExit(run_front(service_dir, host=host))


@group.command("up", cls=RequestCommand, heading="Service")
@click.argument("name")
@request_options
@click.option(
    "--replicas",
    type=click.IntRange(min=0),
    default=SERVICE_REPLICAS,
    show_default=True,
    help=f"Replica jobs to keep READY (at most {SERVICE_MAX_REPLICAS}).",
)
@click.option(
    "--handover",
    "handover",
    default=f"{int(SERVICE_HANDOVER_SECONDS // 60)}m",
    show_default=True,
    help="How long before a replica's time limit its successor is submitted: below "
    f"--time less the {SLURM_WARNING_SECONDS} s time-limit warning. Handovers roll, so "
    "give it twice the queue wait and model load, plus the warning.",
)
@click.option(
    "--min-replicas",
    type=click.IntRange(min=0),
    default=None,
    help="Replicas kept while no request comes (default: --replicas, never idle); 0 "
    "scales to zero (only the front's one CPU), and the next request wakes the service.",
)
@click.option(
    "--idle",
    "idle",
    default=None,
    help="With --min-replicas below --replicas: how long without a request before the "
    f"service drains to its minimum.  [default: {int(SERVICE_IDLE_SECONDS // 60)}m]",
)
@click.option(
    "--cold-start-wait",
    default=f"{int(SERVICE_COLD_START_WAIT_SECONDS // 60)}m",
    show_default=True,
    help="How long a request that finds no replica READY waits for one (holding its "
    f"connection) before it gets 503 with Retry-After: {SERVICE_RETRY_AFTER_SECONDS}.",
)
@click.option(
    "--max-replicas",
    type=click.IntRange(min=0),
    default=None,
    help="Autoscaling: the most replicas the load may keep (default: --replicas, no "
    f"autoscaling; at most {SERVICE_MAX_REPLICAS}). --replicas is the count it starts "
    "with; the fewest is --min-replicas (else --replicas), one at least.",
)
@click.option(
    "--scale-up-waiting",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="With --max-replicas: vLLM's waiting requests per READY replica above which the "
    "load adds a replica; at most half of it drains one.  "
    f"[default: {SERVICE_SCALE_UP_WAITING:g}]",
)
@click.option(
    "--scale-up-after",
    default=None,
    help="With --max-replicas: how long the queue stays above that threshold before a "
    f"replica is added.  [default: {_span(SERVICE_SCALE_UP_SECONDS)}]",
)
@click.option(
    "--scale-down-after",
    default=None,
    help="With --max-replicas: how long the queue stays at half that threshold or below "
    f"before a replica drains.  [default: {_span(SERVICE_SCALE_DOWN_SECONDS)}]",
)
@click.option(
    "--front",
    type=click.Choice(["job", "here"]),
    default="job",
    show_default=True,
    help="job: the front runs as a small CPU-only SLURM job; here: in the "
    "foreground on this machine (a service node).",
)
@click.option(
    "--front-port",
    type=int,
    default=SERVICE_PORT,
    show_default=True,
    help=f"The port clients use: {USER_PORTS[0]}-{USER_PORTS[1]} and outside Ray's worker ports "
    f"{RAY_WORKER_PORTS[0]}-{RAY_WORKER_PORTS[1]}, as the router's two ports "
    f"{SERVICE_ROUTER_PORT_OFFSET} above it must be too.",
)
@click.option(
    "--front-host",
    help="With --front here: the address to listen on "
    "(default: detected as for vLLM, InfiniBand first).",
)
@click.option(
    "--front-time",
    default=SERVICE_FRONT_TIME,
    show_default=True,
    help="The front job's time limit.",
)
@click.option("--wait/--no-wait", default=False,
              help="Wait until every replica is READY (or the service is IDLE).")  # fmt: skip
@click.option(
    "--wait-timeout", type=click.FloatRange(min=1), default=WAIT_TIMEOUT, show_default=True
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print a replica's plan, the front's batch script and what would be written; "
    "write and submit nothing.",
)
@json_option
def up_cmd(name: str, replicas: int, handover: str, min_replicas: int | None, idle: str | None,
           cold_start_wait: str, max_replicas: int | None, scale_up_waiting: float | None,
           scale_up_after: str | None, scale_down_after: str | None,
           front: Literal["job", "here"], front_port: int,
           front_host: str | None, front_time: str, wait: bool, wait_timeout: float,
           dry_run: bool, as_json: bool, request: SubmitRequest) -> None:  # fmt: skip
    """Start service NAME (or start its front again: the replicas still serving are
    adopted). Takes every layout and SLURM option of `submit`."""
    from launchers.service.manage import UpSettings

    services = _services(request.job_root)
    given = request.model is not None or bool(request.extra_args)
    settings = UpSettings(
        replicas=replicas, handover_seconds=_duration(handover, "--handover"), front=front,
        front_port=front_port, front_time=front_time, min_replicas=min_replicas,
        idle_seconds=None if idle is None else _duration(idle, "--idle"),
        cold_start_wait_seconds=_duration(cold_start_wait, "--cold-start-wait"),
        max_replicas=max_replicas, scale_up_waiting=scale_up_waiting,
        scale_up_seconds=_maybe_duration(scale_up_after, "--scale-up-after"),
        scale_down_seconds=_maybe_duration(scale_down_after, "--scale-down-after"),
    )  # fmt: skip
    if dry_run:
        _print_up_plan(services.plan_up(name, request if given else None, settings), as_json)
        return
    svc = services.up(name, request if given else None, settings)
    if front == "here":
        from launchers.service.front import run_front

        raise SystemExit(run_front(svc.directory, host=front_host))
    if wait:
        svc.wait(("UP", "IDLE"), wait_timeout, "to have every replica READY")
        # the front writes its address with its first heartbeat
        from launchers import waits

        waits.wait_for(svc.front, what=f"the front of {name}", timeout=FRONT_ADDRESS_TIMEOUT)
    row = svc.summary()
    if as_json:
        click.echo(json.dumps(row, indent=2))
    else:
        _print_summary(row)


_ACTIONS = {
    "create": "create service {name}",
    "replace": "replace service {name} (it never started: no replica, no front ran)",
    "adopt": "start the front of service {name} again (its replicas still serving are kept)",
}


def _print_up_plan(plan: UpPlan, as_json: bool) -> None:
    """``service up --dry-run``: what would be written and submitted, the front's batch
    script and a replica's plan (as ``submit --dry-run`` shows it)."""
    from launchers.render.text import render_plan_json, render_plan_text

    spec = plan.spec
    if as_json:
        click.echo(json.dumps({
            "name": plan.name, "action": plan.action, "directory": plan.directory,
            "writes": list(plan.writes), "service": json.loads(spec.model_dump_json()),
            "front_script": plan.front_script,
            "replica": json.loads(render_plan_json(plan.replica)),
        }, indent=2))  # fmt: skip
        return
    idle = (
        [f"  idle      {spec.least} replica(s) after {_span(spec.idle_seconds)} without a "
         f"request; the next one waits up to {_span(spec.cold_start_wait_seconds)} for a "
         "replica"]
        if spec.idles
        else []
    )  # fmt: skip
    auto = (
        [f"  autoscale {spec.fewest} to {spec.most} replicas: one more after "
         f"{_span(spec.scale_up_seconds)} above {spec.scale_up_waiting:g} waiting requests "
         f"per READY replica, one fewer after {_span(spec.scale_down_seconds)} at "
         f"{spec.scale_down_waiting:g} or below"]
        if spec.autoscales
        else []
    )  # fmt: skip
    front = (
        f"a SLURM job (time {spec.front_time}), port {spec.front_port}"
        if plan.front_script is not None
        else f"here, in the foreground, port {spec.front_port}"
    )
    out = [
        f"vllm-hpc service up {plan.name} (dry run: nothing written, nothing submitted)",
        "",
        f"  action    {_ACTIONS[plan.action].format(name=plan.name)}",
        f"  replicas  {spec.replicas}, each a job planned as below; a successor "
        f"{int(spec.handover_seconds // 60)}m before a replica's time limit",
        *idle,
        *auto,
        f"  front     {front}",
        f"  key       {spec.key_file} (clients use it; never on a command line)",
        "  writes    " + "\n            ".join(plan.writes),
    ]
    if plan.front_script is not None:
        script = plan.front_script.rstrip("\n")
        out += ["  submits   the front job (its script below); it submits the replicas",
                "", "Front job script", "-" * 72, script, "-" * 72]  # fmt: skip
    out += ["", "Each replica (the first shown)", ""]
    click.echo("\n".join(out))
    click.echo(render_plan_text(plan.replica, then=None), nl=False)
    click.echo(f"\nDrop --dry-run to start service {plan.name}.")


@click.command("tunnel")
@click.argument("target")
@job_root_option
@click.option("--login", help="The login node a laptop reaches (default: $VLLM_HPC_LOGIN_HOST, "
              "else the site file's login_host, else this machine's name).")  # fmt: skip
@click.option("--local-port", type=click.IntRange(1, 65535), help="Port on the laptop.")
@click.option("--user", help="Your user name on the login node (default: this one).")
@click.option("--run", "run_it", is_flag=True, help="Run the ssh command here instead.")
def tunnel_cmd(
    target: str,
    job_root: str | None,
    login: str | None,
    local_port: int | None,
    user: str | None,
    run_it: bool,
) -> None:
    """The ssh command that forwards a laptop's port to a service's front or a job's
    endpoint, through the login node. TARGET: a service name or a job id."""
    import os
    import shlex

    from launchers.input.registry import site_login_host
    from launchers.observe import tunnel

    # bad input first, before any lookup; the site file is read only if it is needed
    host = tunnel.login_host(os.environ, login, lambda: site_login_host(os.environ))
    if user:
        tunnel.ssh_word(user, "--user")
    url = _target_url(target, job_root)
    argv = tunnel.ssh_argv(url, host, local_port, user)
    if run_it:
        from launchers import _proc

        _proc.exec_replace(argv)
    click.echo(" ".join(shlex.quote(a) for a in argv))
    click.echo(f"# then, on the laptop: {tunnel.local_url(url, local_port)}", err=True)


def _target_url(target: str, job_root: str | None) -> str:
    from launchers.errors import InputError
    from launchers.service.definition import NAME_RE

    if NAME_RE.fullmatch(target):
        return str(_services(job_root).get(target).url())
    from launchers.cli.jobs import client_for

    url = client_for(job_root).job(target).endpoint
    if not url:
        raise InputError(f"JOB: job {target} has no endpoint yet", fix=f"vllm-hpc status {target}")
    return str(url)


KEY_HELP = """A key per user: add one (printed once, only its hash kept), list them with
their usage, revoke one (refused from the next request on; no restart).

\b
  vllm-hpc service key add llama alice            prints alice's key: give it to her
  vllm-hpc service key add llama prom --scrape    a key that reads the front's /metrics only
  vllm-hpc service key list llama                 label, created, last used, requests, tokens
  vllm-hpc service key revoke llama alice

Keys live hashed in `<job root>/services/NAME/keys.json` (0600). The service's own key
(`.../NAME/key`) is the key `default`: the front forwards every request with it, and the
replicas accept only it, so a user's key never reaches a replica. Revoking `default`
closes the front to it; the replicas still accept it (it is theirs)."""


@group.group("key", help=KEY_HELP)
def key_group() -> None:
    pass


@key_group.command("add")
@click.argument("name")
@click.argument("label")
@click.option(
    "--scrape", is_flag=True,
    help="A key for Prometheus: it reads the front's /metrics and nothing else.",
)  # fmt: skip
@job_root_option
@json_option
def key_add_cmd(name: str, label: str, scrape: bool, job_root: str | None, as_json: bool) -> None:
    """A new key for LABEL (a user, or a scraper with --scrape): printed once on stdout;
    only its hash is kept. A label whose key was revoked gets a new one."""
    token = _services(job_root).get(name).add_key(label, "scrape" if scrape else "user")
    if as_json:
        click.echo(json.dumps({"name": name, "label": label, "key": token}))
        return
    click.echo(token)
    what = "reads the front's /metrics" if scrape else "uses the model"
    click.echo(f"service {name}: key {label!r} {what}; it is shown this once (only its hash "
               "is kept): hand it over now", err=True)  # fmt: skip


def _stamp(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


@key_group.command("list")
@click.argument("name")
@job_root_option
@json_option
def key_list_cmd(name: str, job_root: str | None, as_json: bool) -> None:
    """Every key: label, kind, created, last used, requests, errors, tokens in and out
    (as the front last saved them, every few seconds), revoked when."""
    rows = _services(job_root).get(name).list_keys()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    cols = ("LABEL", "KIND", "CREATED", "LAST_USED", "REQUESTS", "ERRORS", "TOKENS_IN",
            "TOKENS_OUT", "REVOKED")  # fmt: skip
    table = [cols]
    for r in rows:
        table.append((r["label"], r["kind"], _stamp(r["created_at"]), _stamp(r["last_used"]),
                      str(r["requests"]), str(r["errors"]), str(r["tokens_in"]),
                      str(r["tokens_out"]), _stamp(r["revoked_at"])))  # fmt: skip
    widths = [max(len(t[i]) for t in table) for i in range(len(cols))]
    for t in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())


@key_group.command("revoke")
@click.argument("name")
@click.argument("label")
@job_root_option
@json_option
def key_revoke_cmd(name: str, label: str, job_root: str | None, as_json: bool) -> None:
    """Revoke LABEL's key: the front refuses it (401) from its next request on."""
    record = _services(job_root).get(name).revoke_key(label)
    _say(as_json, {"name": name, "label": label, "revoked_at": record.revoked_at},
         f"key {label!r} revoked")  # fmt: skip


@group.command("metrics")
@click.argument("name")
@job_root_option
@json_option
def metrics_cmd(name: str, job_root: str | None, as_json: bool) -> None:
    """The front's own metrics: requests, errors and tokens per key, in-flight requests,
    replicas by state, handovers, time to first byte and duration percentiles (from the
    front's /metrics, asked with the service's key; Prometheus: a --scrape key)."""
    from launchers.service.frontmetrics import render

    summary = _services(job_root).get(name).metrics()
    click.echo(json.dumps(summary) if as_json else render(summary))
