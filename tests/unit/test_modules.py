"""The modulefiles, loaded for real by Lmod (Debian's `lmod` package) in a login shell:
`module use modules; module load vllm-hpc; vllm-hpc --help`. The Lua file is what Lmod
picks; the Tcl twin is loaded from a copy of the tree without the Lua file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LMOD_INIT = Path("/usr/share/lmod/lmod/init/bash")
NEEDS = "apt-get install -y --no-install-recommends lmod (make tools)"


def module_shell(script: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    assert LMOD_INIT.is_file(), f"Lmod is not installed: {NEEDS}"
    base = {
        "HOME": str(home),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "VLLM_HPC_VENV": sys.prefix,
    }
    return subprocess.run(
        ["bash", "-lc", f"source {LMOD_INIT}\n{script}"],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_lua_module_loads_and_runs_the_cli(tmp_path: Path) -> None:
    done = module_shell(
        f"module use {ROOT}/modules\n"
        "module load vllm-hpc\n"
        "module -t list 2>&1\n"
        'echo "ROOT=$VLLM_HPC_ROOT PYTHON=$VLLM_HPC_PYTHON"\n'
        "command -v multi-node-serving.sh\n"
        "vllm-hpc --help\n",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "vllm-hpc/0.1.0" in done.stdout
    assert f"ROOT={ROOT} PYTHON={sys.prefix}/bin/python" in done.stdout
    assert f"{ROOT}/bin/multi-node-serving.sh" in done.stdout
    assert "Usage: vllm-hpc" in done.stdout and "render" in done.stdout


def _fake_site(tmp_path: Path) -> Path:
    site = tmp_path / "site-modules" / "cuda"
    site.mkdir(parents=True)
    (site / "12.4").write_text("#%Module1.0\nsetenv FAKE_CUDA 12.4\n")
    return site.parent


def test_lua_module_depends_on_the_site_cuda(tmp_path: Path) -> None:
    site = _fake_site(tmp_path)
    done = module_shell(
        f"module use {ROOT}/modules {site}\n"
        "module load vllm-hpc\n"
        'echo "CUDA=${FAKE_CUDA:-none}"\n'
        "module unload vllm-hpc\n"
        'echo "AFTER=${FAKE_CUDA:-none} ${VLLM_HPC_ROOT:-unset}"\n',
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "CUDA=12.4" in done.stdout and "AFTER=none unset" in done.stdout


def test_a_named_missing_prereq_fails(tmp_path: Path) -> None:
    done = module_shell(
        f"module use {ROOT}/modules\nmodule load vllm-hpc\n",
        tmp_path,
        VLLM_HPC_DEPENDS="no-such-cuda/1.0",
    )
    assert done.returncode != 0
    assert "no-such-cuda/1.0" in done.stderr


def test_tcl_module_loads_and_runs_the_cli(tmp_path: Path) -> None:
    tree = tmp_path / "repo"
    (tree / "modules" / "vllm-hpc").mkdir(parents=True)
    shutil.copy(ROOT / "modules" / "vllm-hpc" / "0.1.0", tree / "modules" / "vllm-hpc")
    (tree / "bin").symlink_to(ROOT / "bin")
    site = _fake_site(tmp_path)
    done = module_shell(
        f"module use {tree}/modules {site}\n"
        "module load vllm-hpc\n"
        'echo "ROOT=$VLLM_HPC_ROOT CUDA=${FAKE_CUDA:-none}"\n'
        "multi-node-serving.sh --help | head -1\n"
        "vllm-hpc --help\n"
        "module unload vllm-hpc\n"
        'echo "AFTER=${FAKE_CUDA:-none}"\n',
        tmp_path,
        VLLM_HPC_DEPENDS="cuda/12.4",
    )
    assert done.returncode == 0, done.stderr
    assert f"ROOT={tree} CUDA=12.4" in done.stdout
    assert "Usage:" in done.stdout and "Usage: vllm-hpc" in done.stdout
    assert "AFTER=none" in done.stdout


@pytest.mark.skipif(shutil.which("tclsh") is None, reason="tclsh not installed")
def test_tcl_module_is_complete_tcl() -> None:
    path = ROOT / "modules" / "vllm-hpc" / "0.1.0"
    assert path.read_text().startswith("#%Module")
    done = subprocess.run(
        ["tclsh"],
        input=f"set fh [open {{{path}}}]\nputs [info complete [read $fh]]\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.strip() == "1", done.stderr
