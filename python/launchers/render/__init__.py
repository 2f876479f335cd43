"""Renderers over a ``LaunchPlan``: the sbatch script and the dry run (``text``),
Kubernetes (``k8s``), docker compose (``compose``), and the container wrapping of a
node's commands (``containers``). They quote what they emit; none starts anything."""
