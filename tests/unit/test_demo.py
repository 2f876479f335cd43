"""``make demo`` speaks (tests/cluster/demo.py): a long step says it is still going at
least every 30 s with its log's last line, a failure names the log, and the clean-up
removes what the demo made and says what it leaves."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import demo

from .helpers.runtime import FakeClock


class Child:
    """A child that runs for ``ticks`` looks, then exits with ``code``."""

    def __init__(self, ticks: int, code: int = 0) -> None:
        self.left, self.code, self.killed = ticks, code, False

    def poll(self) -> int | None:
        self.left -= 1
        return self.code if self.left < 0 else None

    def kill(self) -> None:
        self.killed = True


def run(tmp_path: Path, child: Child, **kwargs: Any) -> None:
    log = tmp_path / "logs" / "step.log"
    log.parent.mkdir(parents=True)
    log.write_text("Collecting torch==2.13.0+cpu\n")
    demo.run_with_progress(
        ["build"], what="building the test environment", log=log,
        clock=FakeClock().clock(), start=lambda argv, **kw: child, **kwargs,
    )  # fmt: skip


def test_a_long_step_says_it_is_going_every_30_s_with_the_logs_last_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(tmp_path, Child(ticks=200))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("demo: building the test environment (log: ")
    times = [0] + [int(m.group(1)) for line in out if (m := re.search(r"\((\d+) s\)", line))]
    assert len(times) > 10 and max(b - a for a, b in itertools.pairwise(times)) <= 30
    assert all("Collecting torch" in line for line in out[1:-1])
    assert out[-1] == "demo: building the test environment: done in 200 s"


def test_a_failed_step_names_its_log_and_a_slow_one_is_stopped(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"failed \(exit 3\); see .*step\.log"):
        run(tmp_path, Child(ticks=5, code=3))
    slow = Child(ticks=10_000)
    with pytest.raises(SystemExit, match="took more than 60 s"):
        run(tmp_path / "again", slow, timeout=60.0)
    assert slow.killed


def test_clean_removes_the_bed_and_the_test_environment_and_says_what_is_left(
    tmp_path: Path,
) -> None:
    state, testenv = tmp_path / "bed", tmp_path / "testenv"
    (state / "jobs" / "vhpc-25").mkdir(parents=True)
    (state / "jobs" / "vhpc-25" / "api_key").write_text("secret")
    (testenv / "bin").mkdir(parents=True)
    olah = tmp_path / "olah"
    (olah / "bin").mkdir(parents=True)
    downed: list[Path] = []
    said = demo.clean(state, testenv, down=downed.append, olah=olah)
    assert downed == [state] and not state.exists() and not testenv.exists()
    assert not olah.exists() and f"removed {olah} (the offline tests' hub, olah)" in said
    assert said[-1].startswith("left: the apt packages")
    assert demo.clean(state, testenv, down=downed.append)[0] == "nothing to remove"
