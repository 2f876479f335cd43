"""vllm-hpc: serve vLLM's OpenAI-compatible API on SLURM clusters.

The package is split as ``../ARCHITECTURE``: pure planning (config, registry, layout,
commands, plan, render) and the code that runs processes (slurm, node, ray_cluster).
Importing this package imports nothing heavy.
"""

__version__ = "0.1.0"
