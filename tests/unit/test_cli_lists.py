"""``jobs`` and ``service list`` with nothing to list say so; ``service list`` is a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from launchers.cli import cli


def test_jobs_with_none_says_where_it_looked(tmp_path: Path) -> None:
    done = CliRunner().invoke(cli, ["jobs", "--job-root", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert done.output == f"no jobs in {tmp_path}\n"


def test_service_list_with_none_says_where_it_looked(tmp_path: Path) -> None:
    done = CliRunner().invoke(cli, ["service", "list", "--job-root", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert done.output == f"no services in {tmp_path}\n"


class _Service:
    def __init__(self, name: str, ready: int) -> None:
        self.name, self.ready = name, ready

    def summary(self) -> dict[str, Any]:
        replicas = [{"role": "serving", "state": "READY"}] * self.ready
        return {"name": self.name, "state": "up", "replicas": replicas, "replicas_wanted": 2,
                "url": "http://n1:9000" if self.ready else None}  # fmt: skip


def test_service_list_is_a_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from launchers.service.manage import Services

    services = [_Service("chat", 2), _Service("embeddings-big", 0)]
    monkeypatch.setattr(Services, "list", lambda self: services)
    done = CliRunner().invoke(cli, ["service", "list", "--job-root", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == [
        "NAME            STATE  READY  URL",
        "chat            up     2/2    http://n1:9000",
        "embeddings-big  up     0/2    -",
    ]
