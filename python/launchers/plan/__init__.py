"""Planning, pure: the layout checks, the typed ``ray start``/``vllm serve`` builders
(``commands``), the NCCL profiles (``netspec``) and ``launch.plan(config, cluster) ->
LaunchPlan``. No process, no socket, no clock, no environment."""
