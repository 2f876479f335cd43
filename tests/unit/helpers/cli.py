"""Running the command line in-process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NoReturn

from click.testing import CliRunner

from launchers.cli import main


def run(
    args: list[str],
    env: dict[str, str] | None = None,
    entry: Callable[[Sequence[str] | None], NoReturn] = main,
) -> tuple[int, str, str]:
    """Run ``vllm-hpc ARGS`` in-process with click's runner isolation (``entry``: another
    door's main, e.g. ``launchers.submit.__main__.main`` for ``python -m launchers.submit``)."""
    runner = CliRunner()
    base = {
        "HOME": "/home/alice",
        "XDG_CONFIG_HOME": "/nonexistent",
        "MODEL_NAME": None,
        "VLLM_HPC_REGISTRY": None,
        "VLLM_HPC_SITE_CONFIG": None,
        "VLLM_HPC_JOB_ROOT": None,
        "VLLM_HPC_MODEL_STORE": None,
        "VLLM_HPC_PYTHON": "/opt/venv/bin/python",
    }
    base.update(env or {})
    with runner.isolation(env=base) as streams:
        try:
            entry(args)
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = streams[0].getvalue().decode()
        err = streams[1].getvalue().decode() if streams[1] is not None else ""
    return code, out, err
