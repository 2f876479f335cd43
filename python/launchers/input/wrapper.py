"""The wrapper door: ``bin/multi-node-serving.sh leader|worker|slurm`` as a plan.

The HPC deployment guide's interface (``--ray_port=6379``, ``--ray_cluster_size=N``,
``ray start``'s own options after ``--ray-args``, vLLM arguments after ``--``) is parsed
here, checked in full before anything runs (an option it does not know is refused), and
turned into a ``LaunchPlan`` that the node runtime runs like any other
(``runtime.run_plan``), or, with ``--dry-run``, only prints. The bash script only finds
the Python and hands over the arguments as they came.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from launchers import jobdir
from launchers.defaults import (
    DEFAULT_API_PORT,
    DEFAULT_NODES_TIMEOUT,
    DEFAULT_PREFLIGHT_PORT,
    DEFAULT_RAY_PORT,
    DEFAULT_READY_TIMEOUT,
    DEFAULT_VLLM_VERSION,
    RAY_WORKER_PORTS,
    USER_PORTS,
)
from launchers.errors import InputError
from launchers.input import registry
from launchers.jobdir import jobroot
from launchers.jobdir.paths import JobRoot
from launchers.jobdir.safe import read_private_text
from launchers.plan.commands import RayStart
from launchers.plan.launch import JobPaths, LaunchPlan, Preflight, Readiness, RolePlan
from launchers.spec.config import ParallelLayout

Mode = Literal["leader", "worker", "slurm"]
MODES = ("leader", "worker", "slurm")
PROG = "multi-node-serving.sh"

USAGE = """\
Usage:
  {prog} leader [--ray_port=6379] [--ray_cluster_size=N] [--node-ip-address=IP]
               [--num-gpus=G] [--temp-dir=DIR] [--include-dashboard=False]
               [--model=NAME [--port=8000] [--registry=FILE]]
               [--ray-args RAY START OPTIONS] [-- VLLM SERVE ARGS]
  {prog} worker --ray_address=LEADER_IP[:PORT] [--ray_port=6379] [--node-ip-address=IP]
               [--num-gpus=G] [--temp-dir=DIR] [--ray-args RAY START OPTIONS]
  (both also take --job-dir=DIR for their logs and state, --nodes-timeout=SECONDS,
   --ray-token-file=FILE, --preflight-port=29510, --no-preflight, and --dry-run)
  {prog} slurm  --plan=FILE       (one srun task per node; node 0 leads)

The leader starts the Ray head, waits (with a deadline) until --ray_cluster_size nodes
are alive, and with --model also starts vllm serve and waits until it answers.
A worker joins the leader's Ray cluster and exits when the leader goes away.
Before that, with 2 or more nodes, every node checks the nodes' collectives (the
pre-flight: a broken link is named in seconds, before vLLM loads): the workers meet
the leader at its --preflight-port (default 29510, never moved: a taken one fails the
leader). Give every node the same --preflight-port, or --no-preflight to every node.
Without --node-ip-address (or VLLM_HOST_IP) the fast interface is detected:
InfiniBand, then RoCE, then the fastest Ethernet (override with --iface=NAME or
VLLM_HPC_IFACE).

--dry-run prints what each node would run (its ray start and vllm serve lines) and
starts nothing and writes nothing: no job directory, no API key, no Ray token.

An option not listed here is refused. Options for 'ray start' itself go after
--ray-args, up to a -- (e.g. --ray-args --object-store-memory=1000000 --num-cpus=8);
vLLM's arguments go after --.

Ray runs with token authentication (RAY_AUTH_MODE=token): every node reads the same
token file, never a token on a command line. The leader creates it (0600) when it is
absent; a worker refuses to start without it. The file is --ray-token-file=FILE, else
VLLM_HPC_RAY_TOKEN_FILE, else RAY_AUTH_TOKEN_PATH, else {ray_token} (shared
when the job root is on shared storage). Without shared storage, copy the leader's
file to each worker (chmod 600) and name it there.

Environment: VLLM_HPC_PYTHON (interpreter, default python3), VLLM_HPC_JOB_ROOT,
VLLM_HPC_RAY_TOKEN_FILE.
"""

# Options that take a value (``--name=value``, or ``--name value``).
_VALUED = {
    "--ray_port": "ray_port",
    "--ray-port": "ray_port",
    "--ray_cluster_size": "cluster_size",
    "--ray-cluster-size": "cluster_size",
    "--ray_address": "ray_address",
    "--ray-address": "ray_address",
    "--node-ip-address": "node_ip",
    "--num-gpus": "num_gpus",
    "--temp-dir": "temp_dir",
    "--include-dashboard": "dashboard",
    "--iface": "iface",
    "--model": "model",
    "--port": "port",
    "--registry": "registry",
    "--plan": "plan",
    "--job-dir": "job_dir",
    "--nodes-timeout": "nodes_timeout",
    "--ray-token-file": "ray_token_file",
    "--ray_token_file": "ray_token_file",
    "--preflight-port": "preflight_port",
    "--preflight_port": "preflight_port",
}
# Options that take no value.
_FLAGS = {"--dry-run": "dry_run", "--no-preflight": "no_preflight"}
# Everything after it (up to a ``--``) is for ``ray start``, passed on as it is.
RAY_ARGS = "--ray-args"


class Help(Exception):
    """``-h``/``--help``: print the usage and exit 0."""


@dataclass(frozen=True)
class WrapperArgs:
    """The wrapper's documented flags, checked."""

    mode: Mode
    ray_port: int = DEFAULT_RAY_PORT
    cluster_size: int = 1
    ray_address: str | None = None
    node_ip: str | None = None
    num_gpus: int | None = None
    temp_dir: str | None = None
    dashboard: bool = False
    iface: str | None = None
    model: str | None = None
    port: int | None = None
    registries: tuple[str, ...] = ()
    plan: str | None = None
    job_dir: str | None = None
    nodes_timeout: float = DEFAULT_NODES_TIMEOUT
    ray_token_file: str | None = None
    preflight_port: int = DEFAULT_PREFLIGHT_PORT
    no_preflight: bool = False
    dry_run: bool = False
    ray_args: tuple[str, ...] = ()
    vllm_args: tuple[str, ...] = field(default=())

    def leader(self) -> tuple[str, int]:
        """A worker's leader: ``--ray_address``'s host, and its port (else ``--ray_port``)."""
        host, _, port = (self.ray_address or "").partition(":")
        return host, int(port) if port else self.ray_port


def _bad(message: str) -> InputError:
    return InputError(message)


def _port(flag: str, value: str, example: int) -> int:
    first, last = USER_PORTS
    if not value.isdigit() or not 1 <= int(value) <= last:
        raise _bad(f"{flag} must be a port number {first}-{last}, e.g. {example} (got '{value}')")
    port = int(value)
    low, high = RAY_WORKER_PORTS
    if port < first:
        raise _bad(f"{flag} {port} is a privileged port (choose {first}-{last}, e.g. {example})")
    if low <= port <= high:
        raise _bad(
            f"{flag} {port} is inside Ray's worker port range {low}-{high} "
            f"(choose a port outside it, e.g. {example})"
        )
    return port


def _text(flag: str, value: str, prog: str) -> str:
    if not value:
        raise _bad(f"{flag} needs a value (write {flag}=VALUE; see {prog} -h)")
    return value


def _cluster_size(flag: str, value: str, prog: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise _bad(
            "--ray_cluster_size must be a positive number of nodes, e.g. "
            f"--ray_cluster_size=2 (got '{value}')"
        )
    return int(value)


def _num_gpus(flag: str, value: str, prog: str) -> int:
    if not value.isdigit():
        raise _bad(
            f"--num-gpus must be a number (got '{value}'; give this node's GPU count, "
            "e.g. --num-gpus=4)"
        )
    return int(value)


def _seconds(flag: str, value: str, prog: str) -> float:
    if not re.fullmatch(r"[0-9]+([.][0-9]+)?", value):
        raise _bad(f"--nodes-timeout must be seconds, e.g. --nodes-timeout=300 (got '{value}')")
    return float(value)


def _flag(flag: str, value: str, prog: str) -> bool:
    return _text(flag, value, prog).lower() in ("1", "true", "yes")


# How each option's value is checked and converted (the rest: any non-empty text).
_CONVERT: dict[str, Callable[[str, str, str], object]] = {
    "ray_port": lambda flag, value, prog: _port("--ray_port", value, DEFAULT_RAY_PORT),
    "port": lambda flag, value, prog: _port("--port", value, DEFAULT_API_PORT),
    "preflight_port": lambda flag, value, prog: _port(
        "--preflight-port", value, DEFAULT_PREFLIGHT_PORT
    ),
    "cluster_size": _cluster_size,
    "num_gpus": _num_gpus,
    "nodes_timeout": _seconds,
    "dashboard": _flag,
}


def _split(
    argv: Sequence[str], prog: str
) -> tuple[list[tuple[str, str]], set[str], list[str], list[str], str]:
    """(option, value) pairs, flags, ``ray start``'s options (after ``--ray-args``), vLLM
    arguments (after ``--``), and the first stray word; raises on an unknown option."""
    pairs: list[tuple[str, str]] = []
    flags: set[str] = set()
    ray_args: list[str] = []
    for_ray = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return pairs, flags, ray_args, list(argv[i + 1 :]), ""
        if for_ray:
            ray_args.append(arg)  # ray start's own: passed on unchanged
            i += 1
            continue
        if arg in ("-h", "--help"):
            raise Help
        name, eq, value = arg.partition("=")
        if arg == RAY_ARGS:
            for_ray = True
        elif name in _VALUED:
            if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value = argv[i + 1]
                i += 1
            pairs.append((name, value))
        elif name in _FLAGS:
            if eq:
                raise _bad(f"{name} takes no value (write {name} alone; see {prog} -h)")
            flags.add(_FLAGS[name])
        elif arg.startswith("-"):
            raise _bad(
                f"unknown option '{name}' (options for 'ray start' go after {RAY_ARGS}, e.g. "
                f"{RAY_ARGS} --object-store-memory=1000000; see {prog} -h)"
            )
        else:
            return pairs, flags, ray_args, [], arg
        i += 1
    return pairs, flags, ray_args, [], ""


def parse(argv: Sequence[str], prog: str = PROG) -> WrapperArgs:
    """The wrapper's arguments (mode first), every one checked before anything runs."""
    if not argv:
        raise _bad(f"missing mode (start with leader, worker or slurm; see {prog} -h)")
    mode, rest = argv[0], argv[1:]
    if mode in ("-h", "--help"):
        raise Help
    if mode not in MODES:
        raise _bad(f"unknown mode '{mode}' (use leader, worker or slurm)")
    pairs, flags, ray_args, vllm_args, stray = _split(rest, prog)
    if stray:
        raise _bad(
            f"unexpected argument '{stray}' (write options as --name=value and vLLM "
            f"arguments after --; see {prog} -h)"
        )
    values: dict[str, object] = {}
    registries: list[str] = []
    for flag, value in pairs:
        key = _VALUED[flag]
        converted = _CONVERT.get(key, _text)(flag, value, prog)
        if key == "registry":
            registries.append(str(converted))
        else:
            values[key] = converted
    args = WrapperArgs(
        mode=mode,  # type: ignore[arg-type]
        registries=tuple(registries),
        dry_run="dry_run" in flags,
        no_preflight="no_preflight" in flags,
        ray_args=tuple(ray_args),
        vllm_args=tuple(vllm_args),
        **values,  # type: ignore[arg-type]
    )
    _check_mode(args, prog)
    return args


def _check_mode(args: WrapperArgs, prog: str) -> None:
    if args.mode == "slurm" and not args.plan:
        raise _bad(
            "slurm mode needs --plan=FILE (write one with: vllm-hpc plan --out FILE; "
            f"see {prog} -h)"
        )
    if args.mode == "worker":
        if not args.ray_address:
            raise _bad(
                "worker needs --ray_address=LEADER_IP (the leader node's IP address; "
                f"see {prog} -h)"
            )
        if args.model:
            raise _bad(f"--model belongs on the leader (drop it here; give it to {prog} leader)")
        _, colon, port = args.ray_address.partition(":")
        if colon:
            _port("--ray_address", port, DEFAULT_RAY_PORT)
    if args.mode == "leader" and args.ray_address:
        raise _bad("--ray_address belongs on workers (drop it: the leader starts the Ray head)")
    taken = {args.leader()[1]: "--ray_port"}
    if args.model:
        taken[args.port or DEFAULT_API_PORT] = "--port"
    if not args.no_preflight and args.preflight_port in taken:
        raise _bad(
            f"--preflight-port {args.preflight_port} is also the {taken[args.preflight_port]} "
            "(give one of them another port; the pre-flight's is the same on every node)"
        )
    if args.vllm_args:
        if args.mode != "leader":
            raise _bad("vLLM arguments after -- belong on the leader (with --model=NAME)")
        if not args.model:
            raise _bad("vLLM arguments after -- need --model=NAME on the leader")


def worker_rank(environ: Mapping[str, str]) -> int:
    """A worker's rank: VLLM_HPC_RANK, else SLURM_NODEID, else 1 (never the leader's 0)."""
    text = environ.get("VLLM_HPC_RANK", environ.get("SLURM_NODEID", "1"))
    return int(text) if text.isdigit() and int(text) > 0 else 1


def _ray(args: WrapperArgs, head: bool, port: int) -> RayStart:
    fields: dict[str, object] = {}
    if args.temp_dir:
        fields["temp_dir"] = args.temp_dir
    return RayStart(
        head=head,
        port=port,
        port_fixed=True,  # the wrapper's port is the user's: never moved
        num_gpus=args.num_gpus,
        dashboard=head and args.dashboard,
        extra=args.ray_args,
        **fields,
    )


def _roles(args: WrapperArgs, nodes: int, serve: RolePlan | None) -> tuple[RolePlan, ...]:
    port = args.leader()[1]
    leader = RolePlan(
        role="leader",
        ranks="0",
        ray=_ray(args, True, port),
        serve=None if serve is None else serve.serve,
        env={} if serve is None else dict(serve.env),
    )
    if nodes == 1:
        return (leader,)
    worker = RolePlan(role="worker", ranks=f"1-{nodes - 1}", ray=_ray(args, False, port))
    return (leader, worker)


def _job_root(args: WrapperArgs, environ: Mapping[str, str]) -> str:
    return jobroot.job_root(None, environ, lambda: registry.site_job_root(environ, args.registries))


def ray_token_path(args: WrapperArgs, environ: Mapping[str, str]) -> str:
    """Where the Ray token file is (see USAGE); nothing is read or made (the dry run)."""
    given = (
        args.ray_token_file
        or environ.get("VLLM_HPC_RAY_TOKEN_FILE")
        or environ.get("RAY_AUTH_TOKEN_PATH")
        or JobRoot(_job_root(args, environ)).ray_token
    )
    return os.path.abspath(jobroot.expand_home(given, environ))


def ray_token_file(args: WrapperArgs, environ: Mapping[str, str]) -> str:
    """The Ray token file every node of the wrapper's cluster reads (see USAGE): the
    leader creates it (0600, ``O_EXCL``) when absent; an existing one, or a worker's,
    must be a private non-empty file of ours. Fail closed: no token, no Ray."""
    path = ray_token_path(args, environ)
    if args.mode == "leader":
        jobdir.ensure_secret(path, "--ray-token-file")
    try:
        token = read_private_text(path, "--ray-token-file")
    except FileNotFoundError:
        raise InputError(
            f"--ray-token-file: no Ray token at {path}",
            fix="start the leader first with the token file on storage this node reads, or "
            "copy the leader's token file here (chmod 600) and pass --ray-token-file=FILE",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InputError(
            f"--ray-token-file: cannot read {path}: {why}",
            fix=f"use a regular file of your own (chmod 600 {path}), not a symlink",
        ) from None
    if not token.strip():
        raise InputError(
            f"--ray-token-file: {path} is empty",
            fix="delete it and start the leader again (it writes a new token), or copy the "
            "leader's token file here (chmod 600)",
        )
    return path


def wrapper_plan(
    args: WrapperArgs, *, job_id: str, environ: Mapping[str, str], python: str, ray_token: str
) -> LaunchPlan:
    """The plan a wrapper's ``leader`` or ``worker`` runs: a Ray cluster of
    ``--ray_cluster_size`` nodes (a worker: at least up to its own rank), the leader also
    serving ``--model`` when given (planned as ``submit`` would, runtime ray). Ray uses
    token authentication with ``ray_token`` (``ray_token_file``: checked, 0600)."""
    nodes = args.cluster_size
    if args.mode == "worker":
        nodes = max(nodes, worker_rank(environ) + 1)
    root = _job_root(args, environ)
    key = jobroot.job_key(job_id, jobroot.cluster_name(environ), "SLURM_JOB_ID")
    job_dir = args.job_dir or JobRoot(root).job(key).root
    paths = JobPaths.at(job_dir)
    gpn = args.num_gpus or 1
    # Each node of the wrapper door plans on its own (a worker's plan has no model): all
    # plan the pre-flight at the same fixed port, never moved, as no file tells a moved one;
    # a worker meets it at the leader's address (--ray_address), given to it.
    check = (
        None
        if args.no_preflight or nodes == 1
        else Preflight(port=args.preflight_port, port_fixed=True)
    )
    if args.mode == "leader" and args.model:
        served = _served_plan(args, environ, python)
        return served.model_copy(
            update={
                "roles": _roles(args, nodes, served.leader),
                "paths": paths,
                "api_key_file": paths.api_key,
                "ray_token_file": ray_token,
                "node_argv": (),
                "sbatch": (),
                "preflight": check,
            }
        )
    return LaunchPlan(
        name="ray-cluster",
        model="",
        served_model_name="",
        runtime="ray",
        layout=ParallelLayout(nodes=nodes, gpus_per_node=gpn),
        layout_reason="a Ray cluster (no --model: nothing is served)",
        job_name="vllm-hpc-wrapper",
        vllm_version=DEFAULT_VLLM_VERSION,
        python=python,
        roles=_roles(args, nodes, None),
        node_argv=(),
        sbatch=(),
        paths=paths,
        ray_token_file=ray_token,
        ready=Readiness(
            nodes_timeout=args.nodes_timeout,
            ready_timeout=DEFAULT_READY_TIMEOUT,
            expected_nodes=nodes,
            expected_gpus=nodes * gpn,
        ),
        preflight=check,
    )


def _served_plan(args: WrapperArgs, environ: Mapping[str, str], python: str) -> LaunchPlan:
    from launchers.input.planner import make_config, plan_for
    from launchers.spec.request import SubmitRequest

    config = make_config(
        SubmitRequest(
            model=args.model,
            nodes=args.cluster_size,
            gpus_per_node=args.num_gpus or 1,
            runtime="ray",
            port=args.port,
            ray_port=args.ray_port,
            registry=tuple(args.registries),
            extra_args=args.vllm_args,
        ),
        environ,
        python,
    )
    return plan_for(
        config.model_copy(update={"runtime": "ray", "nodes_timeout": args.nodes_timeout})
    )


__all__ = [
    "MODES",
    "USAGE",
    "Help",
    "WrapperArgs",
    "parse",
    "ray_token_file",
    "ray_token_path",
    "worker_rank",
    "wrapper_plan",
]
