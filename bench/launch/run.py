"""Launch speed on the mini cluster: ``make bench-launch`` (``python -m bench.launch.run``).

Interleaved repetitions of, for 1 and 2 nodes with the tiny model:

- ``floor``: ``bench/launch/floor.sbatch``, the minimal hand-written job (Ray head, workers,
  poll for every node, then ``vllm serve`` with the same argv);
- ``sbatch``: ``slurm/multinode_tp_pp.sbatch`` (the template's body, started by a one-line
  wrapper that stamps the job start, with its directives given to ``sbatch``);
- ``submit``: ``python -m launchers.submit --wait`` as a user runs it;

then the Ray bootstrap alone through vllm-hpc's runtime (``bench/launch/bootstrap.sbatch``)
for 2, 3 and 4 nodes, the ``--dry-run`` wall time and the import time of its path.

Times: ``from_start`` is the job's first line (a stamp written by the batch script) to the
first ``/v1/models`` 200 seen by this driver (polled every 50 ms from the login node);
``from_submit`` is the driver's ``sbatch``/``submit`` call to the same moment, or for
``submit`` to the command's exit after it printed READY. Results go to
``bench/results/launch-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.cluster import bed

from launchers.jobdir import jobfiles
from launchers.jobdir.paths import JobDir

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SERVED = "tiny-llama"
API_PORT = 8000
RAY_PORT = 6379
READY_TIMEOUT = 600.0
GONE_TIMEOUT = 90.0
POLL = 0.05
_LOG_LINE = re.compile(r"^\[vllm-hpc \w+ \+\s*([\d.]+)s\] (.*)$")


def say(text: str) -> None:
    print(f"bench-launch: {text}", file=sys.stderr, flush=True)


def poll(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Call `check` every POLL seconds until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"bench-launch: waited {timeout:.0f} s for {what}")
        time.sleep(POLL)  # poll


def read_phases(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return dict(line.split(" ", 1) for line in path.read_text().splitlines() if " " in line)


def models_answer(url: str, key: str | None) -> bool:
    request = urllib.request.Request(url)  # noqa: S310 (http:// built above)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=1) as resp:  # noqa: S310
            return resp.status == 200 and SERVED in resp.read().decode()
    except (urllib.error.URLError, OSError, ValueError):
        return False


class LaunchFailed(Exception):
    """A launch that ended without answering (counted by --consecutive)."""


class Bench:
    def __init__(self, cluster: bed.MiniCluster, testenv: bed.TestEnv, model: Path) -> None:
        self.cluster = cluster
        self.testenv = testenv
        self.model = model
        self.root = cluster.job_root / "bench-launch"
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = {
            **testenv.env,
            "PATH": f"{REPO / 'bin'}{os.pathsep}{testenv.env['PATH']}",
            "VLLM_HPC_PYTHON": str(testenv.python),
            "VLLM_HPC_JOB_ROOT": str(self.root),
        }

    # ---- one launch
    def serve_args(self, nodes: int) -> list[str]:
        return ["--max-model-len", "512", "--tensor-parallel-size", "1",
                "--pipeline-parallel-size", str(nodes)]  # fmt: skip

    def sbatch(self, script: Path, nodes: int, env: dict[str, str], out: Path) -> str:
        argv = ["sbatch", "--parsable", f"--nodes={nodes}", "--ntasks-per-node=1",
                "--gpus-per-node=1", "--time=00:15:00", "--signal=USR1@120", f"--output={out}",
                "--export=ALL", f"--chdir={out.parent}", str(script)]  # fmt: skip
        run_env = {**self.env, **env}
        done = subprocess.run(argv, env=run_env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"bench-launch: sbatch failed: {done.stderr.strip()}")
        return done.stdout.strip().split(";")[0]

    def finish(self, job_id: str) -> None:
        """scancel, then wait until SLURM forgot the job and no process is left."""
        nodes = self.cluster.job_nodes(job_id)
        self.cluster.slurm(["scancel", job_id], check=False)

        def ended() -> bool:
            state = self.cluster.job_info(job_id).get("JobState", "")
            return state not in ("RUNNING", "COMPLETING", "PENDING", "CONFIGURING")

        poll(f"job {job_id} to end", ended, GONE_TIMEOUT)
        self.cluster.wait_for_no_processes(nodes, GONE_TIMEOUT)

    def launch(self, variant: str, nodes: int) -> dict[str, Any]:
        work = self.cluster.new_job_dir(f"{variant}-{nodes}")
        phases_file = work / "phases"
        extra = self.serve_args(nodes)
        t_submit = time.time()
        record: dict[str, Any] = {"variant": variant, "nodes": nodes}
        if variant == "submit":
            argv = [sys.executable, "-m", "launchers.submit", "--model", str(self.model),
                    "--nodes", str(nodes), "--gpus-per-node", "1", "--pp", str(nodes),
                    "--partition", "debug", "--time", "00:15:00", "--via", "sbatch", "--wait",
                    "--json", "--wait-timeout", str(READY_TIMEOUT), "--", "--max-model-len",
                    "512"]  # fmt: skip
            done = subprocess.run(
                argv, env=self.env, capture_output=True, text=True, cwd="/", check=False
            )
            t_ready = time.time()
            if done.returncode != 0:
                raise SystemExit(f"bench-launch: submit failed: {done.stderr[-1500:]}")
            job_id = str(json.loads(done.stdout)["job_id"])
            record["from_submit"] = t_ready - t_submit
        else:
            if variant == "floor":
                script = HERE / "floor.sbatch"
                env = {"MODEL": str(self.model), "SERVED": SERVED, "SERVE_ARGS": " ".join(extra),
                       "PHASES": str(phases_file), "RAY_PORT": str(RAY_PORT),
                       "PORT": str(API_PORT)}  # fmt: skip
            else:
                script = work / "wrapper.sbatch"
                script.write_text(
                    "#!/bin/bash\n"
                    f'echo "job_start $(date +%s.%N)" >>{phases_file}\n'
                    f"exec bash {REPO / 'slurm' / 'multinode_tp_pp.sbatch'}\n"
                )
                env = {"MODEL": str(self.model), "TP": "1", "PP": str(nodes),
                       "EXTRA_VLLM_ARGS": "--max-model-len 512"}  # fmt: skip
            job_id = self.sbatch(script, nodes, env, work / "slurm.out")
            url, key = self.endpoint(variant, job_id, phases_file)
            poll(f"{variant} job {job_id} to answer {url}",
                 lambda: models_answer(url, key) or self.ended(variant, job_id),
                 READY_TIMEOUT)  # fmt: skip
            t_ready = time.time()
            start = float(read_phases(phases_file)["job_start"])
            record.update(from_submit=t_ready - t_submit, from_start=t_ready - start)
        record["job_id"] = job_id
        try:
            record["phases"] = self.phases(variant, job_id, phases_file, t_submit, t_ready)
        finally:  # a bench that fails here leaves no job behind for the next run
            self.finish(job_id)
        return record

    def ended(self, variant: str, job_id: str) -> bool:
        """Never true: a job that ended before answering stops the benchmark, saying why."""
        state = self.cluster.job_info(job_id).get("JobState", "")
        if state in bed.TERMINAL_STATES:
            why = ""
            if variant != "floor":
                endpoint = jobfiles.read(
                    JobDir(str(bed.vllm_job_dir(self.root, job_id))).endpoint,
                    jobfiles.Endpoint,
                )
                why = (
                    f": {endpoint.state} - {endpoint.message}"
                    if endpoint is not None
                    else " (no endpoint.json)"
                )
            raise LaunchFailed(f"{variant} job {job_id} ended {state} before answering{why}")
        return False

    def endpoint(self, variant: str, job_id: str, phases_file: Path) -> tuple[str, str | None]:
        if variant == "floor":
            ip = poll("the floor's head address", lambda: read_phases(phases_file).get("head_ip"),
                      READY_TIMEOUT)  # fmt: skip
            return f"http://{ip}:{API_PORT}/v1/models", None
        job_dir = bed.vllm_job_dir(self.root, job_id)

        def leader() -> tuple[jobfiles.Leader, str] | None:
            record = jobfiles.read(JobDir(str(job_dir)).leader, jobfiles.Leader)
            try:
                key = Path(JobDir(str(job_dir)).api_key).read_text().strip()
            except OSError:
                return None
            return None if record is None else (record, key)

        info, key = poll(f"job {job_id}'s leader.json", leader, READY_TIMEOUT)
        return f"http://{info.ip}:{info.api_port}/v1/models", key

    def phases(
        self, variant: str, job_id: str, phases_file: Path, t_submit: float, t_ready: float
    ) -> dict[str, float]:
        """Each phase in seconds after the job start (or, without a stamp, the submit)."""
        stamps = {k: float(v) for k, v in read_phases(phases_file).items() if k != "head_ip"}
        if variant != "floor":
            stamps.update(self.runtime_stamps(bed.vllm_job_dir(self.root, job_id)))
        stamps["endpoint_ready"] = t_ready
        t0 = stamps.get("job_start", t_submit)
        return {k: round(v - t0, 3) for k, v in sorted(stamps.items(), key=lambda kv: kv[1])}

    @staticmethod
    def runtime_stamps(job_dir: Path) -> dict[str, float]:
        """Wall times of the runtime's phases: node start + the offsets in its log lines."""
        out: dict[str, float] = {}
        records = [
            jobfiles.read(p, jobfiles.NodeRecord) for p in (job_dir / "nodes").glob("*.json")
        ]
        for record in sorted((r for r in records if r is not None), key=lambda r: r.rank):
            out[f"node{record.rank}_runtime"] = record.time
        leader = jobfiles.read(JobDir(str(job_dir)).node(0), jobfiles.NodeRecord)
        endpoint = jobfiles.read(JobDir(str(job_dir)).endpoint, jobfiles.Endpoint)
        try:
            lines = (job_dir / "node-0.log").read_text().splitlines()
        except OSError:
            return out
        if leader is None or endpoint is None:
            return out
        t0 = leader.time
        marks = {"Ray head starting": "head_start", "Ray head up": "head_up",
                 "vllm serve started": "serve_exec"}  # fmt: skip
        for line in lines:
            match = _LOG_LINE.match(line)
            if not match:
                continue
            offset, text = float(match.group(1)), match.group(2)
            for prefix, name in marks.items():
                if text.startswith(prefix):
                    out.setdefault(name, t0 + offset)
            joined = re.match(r"(\d+)/(\d+) Ray node\(s\) alive", text)
            if joined and joined.group(1) == joined.group(2):
                out.setdefault("workers_joined_seen", t0 + offset)
        if endpoint.ready_seconds is not None:  # set once READY
            out["status_ready"] = endpoint.started + endpoint.ready_seconds
        return out

    # ---- Ray bootstrap alone
    def bootstrap(self, nodes: int) -> dict[str, Any]:
        work = self.cluster.new_job_dir(f"bootstrap-{nodes}")
        phases_file = work / "phases"
        job_dir = work / "job"
        env = {"PHASES": str(phases_file), "JOB_DIR": str(job_dir)}
        job_id = self.sbatch(HERE / "bootstrap.sbatch", nodes, env, work / "slurm.out")

        def ready() -> float | None:
            endpoint = jobfiles.read(JobDir(str(job_dir)).endpoint, jobfiles.Endpoint)
            return endpoint.updated if endpoint is not None and endpoint.state == "READY" else None

        t_ready = poll(f"bootstrap job {job_id} READY", ready, READY_TIMEOUT)
        start = float(read_phases(phases_file)["job_start"])
        self.finish(job_id)
        return {"nodes": nodes, "job_id": job_id, "from_start": t_ready - start}


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)}  # fmt: skip


def dry_run_figures(model: Path, env: dict[str, str], reps: int = 10) -> dict[str, Any]:
    """Wall time of ``submit --dry-run`` and, from ``-X importtime``, where import time goes."""
    argv = [sys.executable, "-m", "launchers.submit", "--dry-run", "--model", str(model), "--nodes",
            "2", "--gpus-per-node", "1", "--pp", "2", "--partition", "debug"]  # fmt: skip
    walls = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        walls.append(time.perf_counter() - t0)
    done = subprocess.run([sys.executable, "-X", "importtime", *argv[1:]], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    rows = []  # (self us, cumulative us, module)
    for line in done.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[0].isdigit():
            rows.append((int(parts[0]), int(parts[1]), parts[2]))
    launchers = sum(us for us, _, name in rows if name.startswith("launchers"))
    top = sorted(((cum, name) for _, cum, name in rows), reverse=True)[:8]
    return {
        "wall_s": summary(walls),
        "imports_total_ms": round(sum(us for us, _, _ in rows) / 1000, 1),
        "launchers_self_ms": round(launchers / 1000, 1),
        "heaviest_cumulative_ms": [{"module": name, "ms": round(us / 1000, 1)} for us, name in top],
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"Launch speed, {result['date']} on {result['machine']} (mini cluster, tiny model, "
        f"vLLM {result['versions']['vllm']}, Ray {result['versions']['ray']}; "
        f"median of {result['reps']}, seconds)",
        "",
        "| nodes | floor (job start → ready) | vllm-hpc sbatch | ratio | floor (submit → ready) "
        "| vllm-hpc submit --wait | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, row in result["launch"].items():
        lines.append(
            f"| {n} | {row['floor']['from_start']['median']:.1f} "
            f"| {row['sbatch']['from_start']['median']:.1f} | {row['ratio_vs_floor']:.2f} "
            f"| {row['floor']['from_submit']['median']:.1f} "
            f"| {row['submit']['from_submit']['median']:.1f} "
            f"| {row['ratio_submit_vs_floor']:.2f} |"
        )
    boot = result["bootstrap"]
    lines += [
        "",
        "Ray bootstrap through the runtime (job start → every node alive): "
        + ", ".join(f"{n} nodes {v['median']:.1f} s" for n, v in boot["from_start"].items())
        + (f"; 4 / 2 = {boot['bootstrap_4_over_2']:.2f}." if "bootstrap_4_over_2" in boot else "."),
        f"READY in the job directory after the endpoint answered: median "
        f"{result['status_lag_s']['median']:.2f} s (max {result['status_lag_s']['max']:.2f}). "
        f"`submit --dry-run`: {result['dry_run']['wall_s']['median']:.2f} s wall.",
    ]
    return "\n".join(lines) + "\n"


def versions(python: Path, env: dict[str, str]) -> dict[str, str]:
    code = "import ray, vllm; print(ray.__version__); print(vllm.__version__)"
    argv = [str(python), "-c", code]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    ray_v, vllm_v = ([*out.stdout.split(), "?", "?"])[:2]
    return {"ray": ray_v, "vllm": vllm_v}


def setup(nodes: int) -> Bench:
    reason = bed.cannot_host_reason()
    if reason:
        raise SystemExit(f"bench-launch: this machine cannot host the mini cluster: {reason}")
    testenv = bed.make_testenv()
    model = bed.ensure_tiny_model(testenv, bed.state_dir() / "models" / "tiny-llama")
    state = bed.state_dir()
    running = bed.cluster_node_count(state)
    if running < nodes:
        if running:
            bed.minicluster_down(state)
        say(f"bringing the mini cluster up with {nodes} nodes")
        bed.minicluster_up(state, nodes)
    return Bench(bed.MiniCluster.attach(state), testenv, model)


def consecutive(count: int, out: Path) -> int:
    """Back-to-back 2-node launches: how many fail (ports, stale state, races)."""
    bench = setup(2)
    times: list[float] = []
    failures: list[str] = []
    for i in range(count):
        try:
            record = bench.launch("sbatch", 2)
        except (LaunchFailed, SystemExit) as exc:
            failures.append(str(exc))
            bench.cluster.slurm(["scancel", "--name=wrapper.sbatch"], check=False)
            say(f"launch {i + 1}/{count} FAILED: {exc}")
            continue
        times.append(record["from_start"])
        say(f"launch {i + 1}/{count}: {record['from_start']:.1f} s")
    result = {
        "date": datetime.date.today().isoformat(),
        "launches": count,
        "failed": len(failures),
        "failures": failures,
        "from_start": summary(times) if times else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"launch-consecutive-{result['date']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    say(f"{len(failures)} of {count} launches failed; wrote {path}")
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.launch.run", description=__doc__)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each launch")
    parser.add_argument("--nodes", default="1,2", help="node counts of the serving launches")
    parser.add_argument("--bootstrap", default="2,3,4", help="node counts of the Ray bootstrap")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--consecutive",
        type=int,
        metavar="N",
        help="instead: N back-to-back 2-node launches through the sbatch template; count failures",
    )
    args = parser.parse_args(argv)
    if args.consecutive:
        return consecutive(args.consecutive, args.out)
    node_counts = [int(n) for n in args.nodes.split(",") if n]
    boot_counts = [int(n) for n in args.bootstrap.split(",") if n]
    need = max([*node_counts, *boot_counts])

    bench = setup(need)
    testenv, model = bench.testenv, bench.model

    say("warm-up launches (not recorded)")
    for n in node_counts:
        bench.launch("sbatch", n)
    runs: list[dict[str, Any]] = []
    boots: list[dict[str, Any]] = []
    for rep in range(args.reps):
        for n in node_counts:
            for variant in ("floor", "sbatch", "submit"):
                record = bench.launch(variant, n)
                say(f"rep {rep + 1}/{args.reps} {variant} {n} node(s): "
                    f"{record.get('from_start', record['from_submit']):.1f} s")  # fmt: skip
                runs.append(record)
        for n in boot_counts:
            record = bench.bootstrap(n)
            say(f"rep {rep + 1}/{args.reps} Ray bootstrap {n} nodes: {record['from_start']:.1f} s")
            boots.append(record)

    launch: dict[str, Any] = {}
    lags = []
    for n in node_counts:
        row: dict[str, Any] = {}
        for variant in ("floor", "sbatch", "submit"):
            mine = [r for r in runs if r["nodes"] == n and r["variant"] == variant]
            row[variant] = {k: summary([r[k] for r in mine]) for k in ("from_start", "from_submit")
                            if all(k in r for r in mine)}  # fmt: skip
            lags += [r["phases"]["status_ready"] - r["phases"]["endpoint_ready"] for r in mine
                     if "status_ready" in r["phases"]]  # fmt: skip
        row["ratio_vs_floor"] = round(
            row["sbatch"]["from_start"]["median"] / row["floor"]["from_start"]["median"], 3
        )
        row["ratio_submit_vs_floor"] = round(
            row["submit"]["from_submit"]["median"] / row["floor"]["from_submit"]["median"], 3
        )
        launch[str(n)] = row
    boot_from_start = {
        str(n): summary([b["from_start"] for b in boots if b["nodes"] == n]) for n in boot_counts
    }
    result: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()})",
        "versions": versions(testenv.python, bench.env),
        "reps": args.reps,
        "launch": launch,
        "bootstrap": {"from_start": boot_from_start},
        "status_lag_s": summary(lags) if lags else {"median": 0.0, "max": 0.0},
        "dry_run": dry_run_figures(model, bench.env),
        "runs": runs,
        "bootstrap_runs": boots,
    }
    if "2" in boot_from_start and "4" in boot_from_start:
        result["bootstrap"]["bootstrap_4_over_2"] = round(
            boot_from_start["4"]["median"] / boot_from_start["2"]["median"], 3
        )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"launch-{result['date']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(table(result))
    say(f"wrote {stem}.json and {stem}.md")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
