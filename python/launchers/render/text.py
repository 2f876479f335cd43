"""Text renderers over a ``LaunchPlan``: the sbatch script and the readable dry run.

``shlex.quote`` is used only here, where argv lists become text.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable

from launchers.jobdir.safe import EXISTS_FIX
from launchers.plan.argv import APPTAINER_RUNTIMES, SRUN_STEP_OPTIONS, env_prefix, pyxis_options
from launchers.plan.argv import step_argv as _step_argv
from launchers.plan.commands import JOB_ID, JOB_KEY
from launchers.plan.launch import LaunchPlan
from launchers.render.nodes import NodeCommands, planned_nodes

PLAN_HEREDOC = "VLLM_HPC_PLAN"
# What the dry run shows for a secret variable's value (it is in a 0600 file, never here).
SECRET_SHOWN = "<secret, from a 0600 file>"  # noqa: S105 - a placeholder
_PLACEHOLDER_HELP = (
    ("@NODE_IP@", "the node's fast-interface address (exported as VLLM_HOST_IP)"),
    ("@LEADER_IP@", "node 0's fast-interface address"),
    ("@JOB_ID@", "the SLURM job id"),
    ("@JOB_KEY@", "the job directory's name: <cluster>-<job id>"),
    ("@NODE_RANK@", "the node's rank in the job (0 = leader)"),
    ("@DP_START_RANK@", "the first data-parallel rank on the node"),
)


def _port_help(plan: LaunchPlan) -> tuple[tuple[str, str], ...]:
    moves = "or the next free port when it is taken on the leader"
    ray = plan.ray_port
    return (
        ("@API_PORT@", f"the API's port: {plan.api_port}, {moves}"),
        ("@RAY_PORT@", f"the Ray head's port: {ray}, {moves}"),
    )


_LIVE = {JOB_ID: '"${SLURM_JOB_ID}"', JOB_KEY: '"${job_key}"'}


def quote_with_job_id(text: str) -> str:
    """Shell-quote ``text``, turning ``@JOB_ID@`` into a live ``${SLURM_JOB_ID}`` and
    ``@JOB_KEY@`` into ``${job_key}`` (set by ``job_dir_lines``)."""
    parts = re.split(f"({JOB_ID}|{JOB_KEY})", text)
    return "".join(_LIVE.get(part) or (shlex.quote(part) if part else "") for part in parts)


def job_dir_lines(job_dir: str) -> list[str]:
    """Bash that makes the job's directory ``job_dir`` (with ``@JOB_KEY@``): the job id
    and cluster name checked before they become a path, the directory made now (0700)
    for a new job, and only a requeued run of the same job (SLURM_RESTART_COUNT > 0)
    finding it there, as its own directory (the runtime checks its mode)."""
    return [
        "umask 077",
        "job_id=${SLURM_JOB_ID:-} cluster=${SLURM_CLUSTER_NAME:-slurm}",
        '[[ "$job_id" =~ ^[0-9]{1,20}$ ]] || {',
        "  echo \"Error: SLURM_JOB_ID: '${job_id:0:80}' is not a SLURM job id (digits)\" >&2",
        "  exit 2",
        "}",
        '[[ "$cluster" =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$ ]] || {',
        "  echo \"Error: SLURM_CLUSTER_NAME: '${cluster:0:80}' is not a cluster name\" >&2",
        "  exit 2",
        "}",
        "job_key=$cluster-$job_id",
        f"job_dir={quote_with_job_id(job_dir)}",
        'if [[ ! -e "$job_dir" && ! -L "$job_dir" ]]; then',
        '  mkdir -m 700 -- "$job_dir"',
        'elif [[ "${SLURM_RESTART_COUNT:-0}" == 0 ]]; then',
        f'  echo "Error: job directory: $job_dir already exists for a new job ({EXISTS_FIX})" >&2',
        "  exit 2",
        'elif [[ -L "$job_dir" || ! -d "$job_dir" || ! -O "$job_dir" ]]; then',
        '  echo "Error: job directory: $job_dir is not this job\'s own directory" >&2',
        "  exit 2",
        "fi",
    ]


def render_argv(argv: Iterable[str]) -> str:
    return " ".join(shlex.quote(item) for item in argv)


def curl_example(url: str, model: str | None, api_key_file: str | None) -> str:
    """A chat request to ``url`` (an OpenAI base URL ending in /v1) a user can paste: the
    key is read from its file by the shell, never written out."""
    auth = f' -H "Authorization: Bearer $(cat {shlex.quote(api_key_file)})"' if api_key_file else ""
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 64}
    )
    return (
        f"curl {url}/chat/completions -H 'Content-Type: application/json'{auth} "
        f"-d {shlex.quote(body)}"
    )


def render_sbatch(plan: LaunchPlan, *, plan_json: str | None = None) -> str:
    """A complete batch script: ``sbatch`` it as it is. The job writes the plan into its
    job directory and starts ``vllm-hpc node run`` on every node with one ``srun``.
    ``plan_json`` replaces the embedded plan text (the dry run shortens it)."""
    lines = [
        "#!/bin/bash",
        f"# vllm-hpc job for {plan.name} ({plan.generator})",
        f"# layout: {plan.layout.describe()}; runtime: {plan.runtime}",
        f"# The output directory must exist before sbatch: mkdir -p -m 700 {plan.paths.root}",
    ]
    for key, value in plan.sbatch:
        lines.append(f"#SBATCH --{key}={value}" if value else f"#SBATCH --{key}")
    lines += ["", "set -euo pipefail"]
    if plan.setup:
        lines += ["", "# site setup", *plan.setup]
    plan_file = quote_with_job_id(plan.paths.plan)
    lines += [
        "",
        *job_dir_lines(plan.paths.job_dir),
        f"cat > {plan_file} <<'{PLAN_HEREDOC}'",
        plan.model_dump_json(indent=2) if plan_json is None else plan_json,
        PLAN_HEREDOC,
        'echo "vllm-hpc: job ${SLURM_JOB_ID} on ${SLURM_JOB_NODELIST}; job directory ${job_dir}"',
        "",
        "# One task per node; node 0 leads. A failing node ends the whole step.",
        'exec srun --nodes="${SLURM_JOB_NUM_NODES}" ' + " ".join(SRUN_STEP_OPTIONS) + " \\",
        *_pyxis_lines(plan),
        "  " + " ".join(quote_with_job_id(item) for item in plan.node_argv),
        "",
    ]
    return "\n".join(lines)


def _pyxis_lines(plan: LaunchPlan) -> list[str]:
    """enroot/pyxis runs the whole step in the image: its options go on the srun line."""
    options = pyxis_options(plan)
    return ["  " + " ".join(shlex.quote(o) for o in options) + " \\"] if options else []


def _readable(path: str) -> str:
    return path.replace(JOB_KEY, "<cluster>-<job id>").replace(JOB_ID, "<job id>")


def _node_title(node: NodeCommands) -> str:
    return f"Node {node.rank} ({node.role})"


def _node_lines(node: NodeCommands) -> list[str]:
    out = ["", _node_title(node)]
    if node.ray:
        out.append(f"  ray    {render_argv(node.ray)}")
    if node.serve:
        out.append(f"  serve  {render_argv(node.serve)}")
    for key, value in node.serve_env.items():
        out.append(f"  env    {key}={shlex.quote(value)}  (for vllm serve)")
    return out


def _environment_title(plan: LaunchPlan) -> str:
    if plan.container is not None and plan.container.runtime in APPTAINER_RUNTIMES:
        prefix = env_prefix(plan.container)
        return (
            f"Environment on every node (into the image as {prefix}*, never on the "
            "command line, with the node's addresses, SLURM_* and GPU variables)"
        )
    return "Environment on every node"


# What SLURM uses for a request the plan leaves out: (directive, shown as, what SLURM does).
SLURM_SUMMARY: tuple[tuple[str, str, str], ...] = (
    ("partition", "partition", "the site's default"),
    ("account", "account", "your default"),
    ("qos", "QOS", "your default"),
    ("time", "time", "the partition's default"),
)
SUBMIT_THEN = (
    "drop --dry-run to submit; or, with the same options, write it for another launcher:\n"
    "  vllm-hpc render sbatch|k8s|compose|ray-cluster|swarm"
)


def slurm_summary(plan: LaunchPlan) -> str:
    """``partition gpu, account proj42, QOS (your default), time 04:00:00``:
    what the plan's sbatch directives ask of SLURM, and what SLURM picks for the rest."""
    asked = dict(plan.sbatch)
    return ", ".join(
        f"{shown} {asked[key]}" if asked.get(key) else f"{shown} ({default})"
        for key, shown, default in SLURM_SUMMARY
    )


def _key_text(plan: LaunchPlan) -> str:
    if plan.generate_api_key:
        return f"new per job in {_readable(plan.api_key_file or '')} (0600)"
    if plan.api_key_file:
        return f"read from {plan.api_key_file} (never on a command line)"
    return "none: anyone who reaches the port can use the model"


_TRUE = ("1", "ON", "YES", "TRUE")


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def weights_text(plan: LaunchPlan) -> str:
    """Where the nodes get the weights from: a staged copy (offline), a local
    directory, each node's Hugging Face cache (HF_HUB_OFFLINE in the plan's env), or
    the hub, at start, on every node."""
    staged = plan.staged
    if staged is not None:
        return (
            f"staged copy of {staged.repo_id} at {staged.path} (commit {staged.commit[:12]}, "
            f"{staged.files} files, {_size(staged.bytes)}); offline: nothing is fetched"
        )
    if plan.model.startswith(("/", "./", "../", "~")) or plan.model in (".", ".."):
        return f"the local directory {plan.model}"
    if plan.env.get("HF_HUB_OFFLINE", "").upper() in _TRUE:
        return "each node's Hugging Face cache (HF_HUB_OFFLINE=1 in the env: no download)"
    return (
        "downloaded from the hub by every node at start (HF_HUB_OFFLINE not set; "
        "vllm-hpc stage copies it once)"
    )


def compile_text(plan: LaunchPlan) -> str:
    """Where vLLM's compile caches go: the plan's directory kept across jobs (with the
    variables that name it and how the version key was learnt), or the user's own."""
    cache = plan.compile_cache
    if cache is None:
        value = plan.env.get("VLLM_CACHE_ROOT")
        shown = f"VLLM_CACHE_ROOT={shlex.quote(value)}" if value else "VLLM_CACHE_ROOT"
        return f"{shown} as you set it (vllm-hpc leaves vLLM's caches to it)"
    names = ", ".join(sorted(cache.env, key=lambda k: k != "VLLM_CACHE_ROOT"))
    return f"{cache.path}  ({names}; kept across jobs of this model; {cache.version_note})"


def _summary_lines(plan: LaunchPlan, title: str, ray_auth: str, *, slurm: bool = True) -> list[str]:
    """The dry run's head: what is served, how, where (``slurm``: what SLURM is asked
    for), and with which keys."""
    layout = plan.layout
    serves = plan.leader.serve is not None
    out = [title, ""]
    if serves:
        out.append(f"  model     {plan.model}  (served as {plan.served_model_name})")
        out.append(f"  weights   {weights_text(plan)}")
        out.append(f"  compile   {compile_text(plan)}")
    out += [f"  layout    {layout.describe()}", f"  why       {plan.layout_reason}"]
    if slurm:
        out.append(f"  slurm     {slurm_summary(plan)}")
    out.append(f"  runtime   {plan.runtime}")
    if serves:
        out.append(f"  vllm      target version {plan.vllm_version}")
    out.append(f"  job dir   {_readable(plan.paths.job_dir)}")
    if serves:
        out.append(
            f"  endpoint  http://<leader address>:{plan.api_port}/v1  (ready when "
            f"{plan.ready.health_path} and {plan.ready.models_path} answer)"
        )
    if plan.container is not None:
        out.append(f"  container {plan.container}")
    if serves:
        out.append(f"  api key   {_key_text(plan)}")
    if plan.ray_token_file:
        out.append(f"  ray auth  {ray_auth}")
    if plan.preflight is not None:
        check = plan.preflight
        out.append(
            f"  preflight every node's all-reduce (4 B, {check.large_mib} MiB) before vLLM "
            f"loads, meeting at <leader address>:{check.port}"
            f"{' (fixed)' if check.port_fixed else ''}; fails in ~{check.seconds:.0f} s "
            "naming a pair that cannot talk (--no-preflight skips it)"
        )
    for warning in plan.warnings:
        out.append(f"  warning   {warning}")
    wrapped = plan.container is not None and plan.container.runtime in APPTAINER_RUNTIMES
    if plan.env or plan.secret_env or wrapped:
        out += ["", _environment_title(plan)]
        shown = {**plan.env, **dict.fromkeys(plan.secret_env, SECRET_SHOWN)}
        out += [
            f"  {key}={value if key in plan.secret_env else shlex.quote(value)}"
            for key, value in sorted(shown.items())
        ] or ["  (none from the plan)"]
    return out


def _nodes_and_placeholders(plan: LaunchPlan, out: list[str]) -> list[str]:
    """``out`` with every node's lines and what their placeholders stand for."""
    out = list(out)
    for node in planned_nodes(plan):
        out += _node_lines(node)
    shown_text = "\n".join(out)
    used = [(k, v) for k, v in (*_PLACEHOLDER_HELP, *_port_help(plan)) if k in shown_text]
    if used:
        out += ["", "Filled in when the job runs"]
        out += [f"  {key:<16} {text}" for key, text in used]
    return out


def render_plan_text(plan: LaunchPlan, *, then: str | None = SUBMIT_THEN) -> str:
    """The dry run: what SLURM is asked for, what would run where, and why; the sbatch
    script last, set apart; ``then`` (what to do next) at the very end. Every node's
    lines are what it will execute (``render.nodes``), only what the running job knows
    left as placeholders."""
    title = f"vllm-hpc plan for {plan.name} (dry run: nothing submitted)"
    out = _summary_lines(plan, title, "token per job (RAY_AUTH_MODE=token), dashboard off")
    out += ["", "Every node (the sbatch script's srun step starts the node runtime)"]
    out.append(f"  step   {render_argv(_step_argv(plan))}")
    out = _nodes_and_placeholders(plan, out)
    script = render_sbatch(plan, plan_json="<the plan as JSON: see --dry-run --json>")
    out += [
        "",
        "=" * 72,
        "The sbatch script (given to sbatch as it is)",
        "=" * 72,
        script.rstrip("\n"),
        "=" * 72,
    ]
    if then:
        out += ["", then]
    return "\n".join(out) + "\n"


def render_wrapper_text(plan: LaunchPlan, rank: int, prog: str) -> str:
    """The wrapper door's dry run (``multi-node-serving.sh ... --dry-run``): the plan as
    ``render_plan_text`` shows it, which rank this node plays, and every node's lines;
    no batch script (each node of the wrapper starts itself)."""
    role = plan.role_for_rank(rank).role
    title = f"{prog} plan for {plan.name} (dry run: nothing started)"
    token = plan.ray_token_file or ""
    auth = f"token file {token} (RAY_AUTH_MODE=token; the leader makes it when absent)"
    out = _summary_lines(plan, title, auth, slurm=False)
    out.insert(2, f"  this node rank {rank} ({role})")
    out = _nodes_and_placeholders(plan, out)
    out += ["", f"Drop --dry-run to start it: {prog} leader on node 0, then worker on the others."]
    return "\n".join(out) + "\n"


def render_plan_json(plan: LaunchPlan) -> str:
    data = {
        "plan": json.loads(plan.model_dump_json()),
        "step": _step_argv(plan),
        "nodes": [node.model_dump(mode="json") for node in planned_nodes(plan)],
        "sbatch_script": render_sbatch(plan),
    }
    return json.dumps(data, indent=2) + "\n"
