"""The ground floor: the pydantic models every step shares (ServeConfig, ModelSpec, the
parallel layout, the container spec, the site) and version parsing. Imports nothing of
vllm-hpc's but ``defaults`` and ``errors``."""
