"""Where ``vllm-hpc bench`` runs its load, and the result file it leaves.

``vllm bench serve`` runs where vLLM is importable, tried in this order: this Python;
the job's Python on the leader node (``srun --jobid J --overlap``, so it shares the
allocation and sees the fast network); the job's Python here for ``--executor local``
jobs. Only when none has vLLM does the built-in client send the load. The API key
travels in the environment (``OPENAI_API_KEY``), never in argv.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launchers import _proc, health, jobdir
from launchers.defaults import DEFAULT_READY_TIMEOUT
from launchers.errors import InputError, RuntimeFailure
from launchers.jobdir.paths import JobDir
from launchers.observe.loadtest import LoadSpec, run_builtin, summarize_vllm, vllm_bench_argv
from launchers.plan.launch import LaunchPlan
from launchers.submit import slurmctl

PROBE = "import importlib.util as u, sys; sys.exit(0 if u.find_spec('vllm') else 3)"


def places(
    job_id: str, plan: LaunchPlan | None, leader_host: str | None
) -> list[tuple[str, list[str]]]:
    """(description, argv prefix) of the Pythons to try, best first."""
    python = plan.python if plan is not None else "python3"
    out: list[tuple[str, list[str]]] = []
    if importlib.util.find_spec("vllm") is not None:
        out.append(("this Python", [sys.executable]))
    if job_id.startswith("local-"):
        out.append(("the job's Python", [python]))
    elif leader_host and (plan is None or plan.container is None):
        on_leader = slurmctl.srun_in_job(job_id, nodelist=leader_host)
        out.append((f"the leader {leader_host}", [*on_leader, python]))
    return out


def run_bench(
    *,
    job_id: str,
    job_dir: str,
    spec: LoadSpec,
    plan: LaunchPlan | None,
    api_key: str | None,
    leader_host: str | None,
    tool: str = "auto",
    timeout: float = DEFAULT_READY_TIMEOUT,
    environ: Mapping[str, str] | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Run the load test, save ``<job_dir>/bench/<time>.json``; return the summary."""
    say = log or (lambda message: None)
    # vllm bench serve's HTTP client reads proxy variables: the key must not go there.
    env = health.without_proxies(os.environ if environ is None else environ)
    if api_key:
        env["OPENAI_API_KEY"] = api_key
    out_dir = Path(JobDir(job_dir).bench)
    jobdir.ensure_dir(str(out_dir))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    summary: dict[str, Any] | None = None
    tried: list[str] = []
    if tool in ("auto", "vllm"):
        for where, prefix in places(job_id, plan, leader_host):
            probe = _proc.run([*prefix, "-c", PROBE], env=env, timeout=120)
            if probe.returncode != 0:
                tried.append(f"{where}: no vllm")
                continue
            raw_name = f"{stamp}-vllm.json"
            argv = [*prefix, *vllm_bench_argv("", spec, str(out_dir), raw_name)[1:]]
            say(f"running vllm bench serve on {where}")
            done = _proc.run(argv, env=env, timeout=timeout)
            raw = jobdir.read_json(out_dir / raw_name)
            if done.returncode != 0 or raw is None:
                lines = (done.stderr or done.stdout).strip().splitlines()
                raise RuntimeFailure(
                    f"vllm bench serve on {where} failed (exit {done.returncode}): "
                    + (lines[-1][:200] if lines else "no output"),
                    fix="rerun with --tool builtin, or read the job's leader log",
                )
            summary = {**summarize_vllm(raw, spec), "where": where}
            break
        if summary is None and tool == "vllm":
            raise InputError(
                "--tool vllm: vLLM is not importable here nor in the job's Python "
                f"({'; '.join(tried) or 'no place to run it'})",
                fix="use --tool builtin, or install vllm where you run vllm-hpc",
            )
    if summary is None:
        say(f"vLLM not found ({'; '.join(tried) or 'not tried'}): using the built-in client")
        summary = {**run_builtin(spec, api_key, timeout=timeout), "where": "this host"}
    result = {"job_id": job_id, "time": jobdir.now(), "endpoint": spec.base_url, **summary}
    jobdir.write_json(out_dir / f"{stamp}.json", result)
    result["result_file"] = str(out_dir / f"{stamp}.json")
    return result


def describe(summary: Mapping[str, Any]) -> str:
    return json.dumps(summary, indent=2)
