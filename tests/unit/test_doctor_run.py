"""``vllm-hpc doctor`` gathers the nodes' checks through ``srun``: off a SLURM login node
(no ``srun`` on PATH) it says so in one line and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from launchers import cli


def test_doctor_off_a_login_node_says_so_in_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    root = tmp_path / "jobs"
    argv = ["doctor", "-m", "meta-llama/Llama-3.2-3B-Instruct", "--job-root", str(root)]
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 1
    assert err == (
        "Error: doctor: no srun here: this is not a SLURM login node (run vllm-hpc doctor "
        "on the cluster's login node; vllm-hpc submit --dry-run plans without SLURM)\n"
    )
    assert not root.exists() or list(root.iterdir()) == []  # no .doctor-* directory
