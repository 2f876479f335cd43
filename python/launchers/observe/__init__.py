"""Readers of jobs: the Python client (``client.Client``, ``Job``), status, metrics,
load tests and the doctor's gathering side. They read typed job-directory files and
SLURM, and never import the node runtime."""
