"""Talking to a deployment from the login namespace, as a user would: with its API key,
and through the `vllm-hpc` command line."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from launchers.jobdir import jobfiles
from launchers.plan.launch import LaunchPlan
from launchers.render.nodes import NodeCommands, filled, job_values, planned_nodes

from . import bed


def post_json(url: str, body: object, api_key: str | None, timeout: float = 120) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(  # noqa: S310 - the test bed's own addresses
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status), json.loads(response.read().decode())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")


def api_key(endpoint: dict[str, Any]) -> str | None:
    path = endpoint.get("api_key_file")
    return Path(path).read_text().strip() if path else None


def chat(endpoint: dict[str, Any], messages: list[dict[str, str]], max_tokens: int = 12) -> str:
    """A temperature-0 chat completion; returns the text (raises on any failure)."""
    body = {"model": endpoint["model"], "messages": messages, "temperature": 0,
            "max_tokens": max_tokens}  # fmt: skip
    status, answer = post_json(f"{endpoint['url']}/chat/completions", body, api_key(endpoint))
    if status != 200 or not isinstance(answer, dict):
        raise AssertionError(f"chat completion failed: HTTP {status}: {answer}")
    text = answer["choices"][0]["message"]["content"]
    if not isinstance(text, str) or not text:
        raise AssertionError(f"empty answer: {answer}")
    return text


# What a stranger (another user, another host, no key) tries on a job's API port: every
# route vLLM 0.32 serves outside /v1 (each answered 200 without the key before the key
# middleware), the /v1 routes, and spellings that try to pass for /health.
STRANGER_ROUTES: list[tuple[str, str, object]] = [
    ("POST", "/invocations", {"prompt": "hello", "max_tokens": 4}),
    ("POST", "/tokenize", {"prompt": "hello"}),
    ("POST", "/detokenize", {"tokens": [1, 2, 3]}),
    ("GET", "/metrics", None),
    ("GET", "/version", None),
    ("GET", "/load", None),
    ("GET", "/ping", None),
    ("POST", "/ping", None),
    ("GET", "/server_info", None),
    ("POST", "/reset_prefix_cache", None),
    ("POST", "/sleep", None),
    ("POST", "/collective_rpc", {"method": "get_model"}),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
    ("GET", "/v1/models", None),
    ("POST", "/v1/completions", {"prompt": "hello", "max_tokens": 4}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/health", None),
    ("GET", "/health/", None),
    ("GET", "/%2e%2e/metrics", None),
    ("GET", "/health/../metrics", None),
]


def raw_request(
    base: str, method: str, path: str, body: object = None, api_key: str | None = None
) -> int:
    """One request (without a key unless given), its path sent as written (no client
    normalises it, no proxy variable is read); the status, or 0 when the connection was
    refused or reset."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=30)
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        conn.request(method, path, body=data, headers=headers)
        return int(conn.getresponse().status)
    except OSError:
        return 0
    finally:
        conn.close()


def assert_a_stranger_gets_only_health(endpoint: dict[str, Any]) -> None:
    """Without the key, from the login node (another host of the cluster's network), no
    route of the job's API answers but GET /health: each is refused with 401."""
    base = str(endpoint["url"]).removesuffix("/v1")
    got = {f"{m} {p}": raw_request(base, m, p, b) for m, p, b in STRANGER_ROUTES}
    opened = {route: status for route, status in got.items() if status != 401}
    assert not opened, f"{base}: routes that did not answer 401 without the key: {opened}"
    assert raw_request(base, "GET", "/health") == 200, f"{base}/health must stay open"


def endpoint_nodes(cluster: bed.MiniCluster, endpoint: dict[str, Any]) -> list[str]:
    """The bed nodes a job runs on: its SLURM allocation, else (a job started by hand)
    its Ray nodes, else its leader."""
    job_id = str(endpoint.get("job_id") or "")
    if job_id.isdigit():
        nodes = cluster.job_nodes(job_id)
        if nodes:
            return nodes
    by_ip = {ip: name for name, ip in cluster.addresses.items()}
    ips = [str(n["ip"]) for n in endpoint.get("ray_nodes") or []] or [endpoint["leader_ip"]]
    return [by_ip[ip] for ip in ips if ip in by_ip]


def assert_no_open_door(cluster: bed.MiniCluster, endpoint: dict[str, Any]) -> dict[str, int]:
    """A stranger gets 401 from every route of the API but /health, and every socket the
    job listens on, on every node, is one README's listener table accounts for."""
    from . import listeners

    assert_a_stranger_gets_only_health(endpoint)
    python = str(bed.testenv_dir() / "bin" / "python")
    return listeners.assert_every_listener_accounted(
        cluster, python, endpoint_nodes(cluster, endpoint)
    )


def cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`vllm-hpc ARGS` (``python -m launchers``) run by the login venv, from /."""
    return subprocess.run(
        [sys.executable, "-m", "launchers", *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd="/",
    )  # fmt: skip


def cli_json(env: dict[str, str], *args: str, code: int = 0, timeout: float = 300) -> Any:
    """`vllm-hpc COMMAND --json ARGS`, its exit code checked, its output parsed."""
    done = cli(env, args[0], "--json", *args[1:], timeout=timeout)
    assert done.returncode == code, f"vllm-hpc {' '.join(args)}: {done.stderr[-2000:]}"
    return json.loads(done.stdout)


def assert_ray_refuses_a_stranger(testenv: bed.TestEnv, address: str) -> None:
    """A Ray client without the cluster's token, from the login node, gets no session."""
    stranger = {k: v for k, v in testenv.env.items() if not k.startswith("RAY_AUTH")}
    code = f"import ray; ray.init(address={address!r}); print('CONNECTED', flush=True)"
    done = subprocess.run(
        [str(testenv.python), "-c", code], env=stranger, capture_output=True, text=True,
        timeout=180, check=False, cwd="/",
    )  # fmt: skip
    assert "CONNECTED" not in done.stdout and done.returncode != 0, done.stdout
    assert "auth" in done.stderr.lower(), done.stderr[-1500:]


# --- the dry run against what the nodes ran --------------------------------------------


def dry_run_nodes(
    python: Path, env: dict[str, str], options: list[str], vllm_args: list[str]
) -> list[NodeCommands]:
    """`python -m launchers.submit OPTIONS --dry-run --json -- VLLM_ARGS`: each node's
    lines for the inputs a test submits (run by the same Python as the submission)."""
    done = subprocess.run(
        [str(python), "-m", "launchers.submit", *options, "--dry-run", "--json", "--", *vllm_args],
        env=env, capture_output=True, text=True, timeout=120, check=False, cwd="/",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return [NodeCommands.model_validate(node) for node in json.loads(done.stdout)["nodes"]]


def plan_nodes(job_dir: Path) -> list[NodeCommands]:
    """The dry run's node lines for the plan a job ran (its plan.json), through the
    library: for jobs an sbatch template planned on the node."""
    plan = LaunchPlan.model_validate_json((job_dir / "plan.json").read_text())
    return planned_nodes(plan)


def assert_nodes_ran_the_dry_run(job_dir: Path, dry: list[NodeCommands]) -> None:
    """Each node's recorded argv (``nodes/<rank>.json``) is its dry-run line with the
    job's values (addresses, job id, ports: the job directory's records) filled in."""
    leader = jobfiles.read(job_dir / "leader.json", jobfiles.Leader)
    assert leader is not None, f"no leader.json in {job_dir}"
    assert dry, "the dry run shows no node"
    for node in dry:
        record = jobfiles.read(job_dir / "nodes" / f"{node.rank}.json", jobfiles.NodeRecord)
        assert record is not None, f"no nodes/{node.rank}.json in {job_dir}"
        executed = filled(node, job_values(str(job_dir), record, leader))
        for name in ("ray", "serve"):
            planned = getattr(executed, name)
            assert record.argv(name) == planned, (
                f"node {node.rank} {name}: ran {record.argv(name)}\n  dry run filled: {planned}"
            )


def submit(
    env: dict[str, str], model: Path, nodes: int, *extra: str, max_model_len: int = 512
) -> dict[str, Any]:
    """`vllm-hpc submit --wait --json` of ``model`` on ``nodes`` nodes x 1 "GPU" (PP over
    the nodes) through sbatch, with ``extra`` options: the job's handle once READY."""
    layout = ["--nodes", str(nodes), "--gpus-per-node", "1", "--pp", str(nodes)]
    args = ["--model", str(model), *layout, "--partition", "debug", "--time", "00:15:00",
            "--via", "sbatch", "--wait", "--wait-timeout", str(bed.READY_TIMEOUT), *extra,
            "--", "--max-model-len", str(max_model_len)]  # fmt: skip
    return dict(cli_json(env, "submit", *args, timeout=bed.READY_TIMEOUT + 60))
