"""``python -m launchers.submit``: the same command as ``vllm-hpc submit``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

from launchers.cli import command, run


def main(args: Sequence[str] | None = None) -> NoReturn:
    run(command("submit"), args, "python -m launchers.submit")


if __name__ == "__main__":
    main()
