"""``vllm-hpc stage``: copy a model from the Hugging Face hub (or a site mirror) into the
model store on the login node, verify it and record it, so that jobs on nodes without
internet read it from shared storage. ``run.stage`` is the entry; ``hub`` is the one
module that speaks to the hub (through huggingface_hub)."""
