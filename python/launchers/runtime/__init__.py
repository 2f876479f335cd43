"""The per-node runtime: ``vllm-hpc node run --plan FILE`` on every node.

Rank 0 leads (``leader``): it starts the Ray head (Ray runtimes), writes ``leader.json``,
starts ``vllm serve`` at once while Ray workers join in parallel (``supervise`` watches
the Ray node count and fails with the missing node's name when its deadline passes),
waits until ``/health`` and ``/v1/models`` answer, writes ``endpoint.json`` and prints
the endpoint. Other ranks (``follower``) wait for ``leader.json`` and join
(``ray start --block``) or run their headless ``vllm serve``; they stop when the leader
is gone.

Every child runs in its own session under a guard (``launchers._proc``) and is stopped as
a tree on exit, on SIGTERM/SIGINT (scancel, Ctrl+C) and, on the leader, on SIGUSR1/SIGUSR2
(the warning before the time limit: vLLM drains; the followers stay until the leader has
ended). If the runtime itself dies (SIGKILL included) the guards stop the trees. An
exception that is not the runtime's own still ends the rank FAILED with its reason
(``unexpected``).

Modules: ``context`` (what a node knows: rank, job, network, log, stop flag, clock),
``tasks`` (a rank's typed part of the plan), ``endpoint`` (endpoint.json and the READY
banner), ``leader``, ``supervise``, ``follower``, ``run`` (``run_plan``, the one entry).
"""
