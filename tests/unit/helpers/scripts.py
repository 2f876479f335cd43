"""Running the repo's bash (the sbatch templates, the wrappers in bin/) outside SLURM with
seams that record what would have started. The login-node environment with those seams
is the ``shell_env`` fixture in conftest.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BIN = REPO / "bin"

# The seams of ``shell_env``: a Python on VLLM_HPC_PYTHON that records a node runtime's
# start and runs everything else for real, a fake srun, fake ray and vllm that record a
# start and fail.
SEAM = """#!/bin/bash
if [[ "$1 $2 $3 $4" == "-m launchers node run" ]]; then echo "python $*" >> "$STARTED"; exit 0; fi
if [[ "$1 $3" == "-c ray" ]]; then exit 0; fi  # the planner asks: has the nodes' Python Ray?
exec {python} "$@"
"""
FAKE_SRUN = '#!/bin/bash\necho "srun $*" >> "$STARTED"\n'
FAKE_START = '#!/bin/bash\necho "$(basename "$0") $*" >> "$STARTED"\nexit 1\n'
SLURM_ENV = {"SLURM_JOB_ID": "77", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "n[1-2]"}

# A Python for bin/launch_vllm_node1.sh / node2.sh that answers `job-root` and records
# every other call's argv (one JSON line each) in $STUB_LOG.
DP_STUB = """#!/bin/bash
if [[ "$1 $2 $3" == "-m launchers job-root" ]]; then echo "$VLLM_HPC_JOB_ROOT"; exit 0; fi
python3 -c 'import json, os, sys
print(json.dumps({"argv": sys.argv[1:], "ip": os.environ.get("VLLM_HOST_IP")}))' "$@" >> "$STUB_LOG"
"""


def run_bash(
    env: dict[str, str], script: Path, args: tuple[str, ...], extra: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``bash SCRIPT ARGS`` in ``env`` plus ``extra``, output captured."""
    return subprocess.run(
        ["bash", str(script), *args],
        env={**env, **extra},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def run_dp(
    env: dict[str, str], script: str, *args: str
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run ``bin/SCRIPT ARGS`` with ``DP_STUB`` as its Python: the run, and the argv of
    every call the stub recorded."""
    done = subprocess.run([str(BIN / script), *args], env=env, capture_output=True, text=True,
                          check=False)  # fmt: skip
    log = Path(env["STUB_LOG"])
    calls = (
        [json.loads(line)["argv"] for line in log.read_text().splitlines()] if log.exists() else []
    )
    return done, calls
