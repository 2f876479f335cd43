"""The CLI's exit codes (``launchers.cli.run`` is the one place that maps errors to them):
0 ok, 1 a failure on the cluster or in the scheduler, 2 bad input, 130 interrupted."""

EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
