"""The front's batch script (render.front): recorded whole, one CPU-only task that runs
the front, valid bash, and a control character in a value is refused, not rendered."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from launchers.errors import InputError
from launchers.render.front import FrontJob, render_front_script

JOB = FrontJob(
    service="llama", time="7-00:00:00", log="/jobs/services/llama/front-%j.log",
    python="/opt/env/bin/python", service_dir="/jobs/services/llama", partition="gpu",
    qos="long",
)  # fmt: skip


def test_the_front_script(golden: Callable[[str, str], None], tmp_path: Path) -> None:
    text = render_front_script(JOB)
    golden("service-front.sbatch", text)
    lines = text.splitlines()
    assert "#SBATCH --cpus-per-task=1" in lines and "#SBATCH --partition=gpu" in lines
    assert not any("account" in line or "gres" in line for line in lines)
    script = tmp_path / "front.sbatch"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0


@pytest.mark.parametrize("field", ["partition", "account", "qos", "log"])
def test_a_newline_in_a_value_is_refused(field: str) -> None:
    from dataclasses import replace

    with pytest.raises(InputError, match="control character"):
        render_front_script(replace(JOB, **{field: "gpu\n#SBATCH --uid=0"}))


def test_a_path_with_spaces_is_quoted_on_the_exec_line() -> None:
    from dataclasses import replace

    text = render_front_script(replace(JOB, service_dir="/jobs/my services/llama"))
    assert text.splitlines()[-1].endswith("--service-dir '/jobs/my services/llama'")
