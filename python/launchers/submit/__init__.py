"""Submission: ``slurm.submit(plan)`` is the one place that calls submitit or
``sbatch --parsable`` (or starts a local job), with SLURM's state tables.
``python -m launchers.submit`` is ``vllm-hpc submit``."""
