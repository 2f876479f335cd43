"""``python -m launchers``: the ``vllm-hpc`` command."""

from launchers.cli import main

main()
