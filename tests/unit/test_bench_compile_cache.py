"""What the compile-cache bench reads from vLLM's log (bench/launch/compile_cache.py)."""
# ruff: noqa: E501  (vLLM's log lines as vLLM writes them)

from __future__ import annotations

from bench.launch.compile_cache import read_log

FIRST = """\
(EngineCore pid=1) INFO 12-07 17:40:01 [backends.py:1104] Using cache directory: /r/compile-cache/root/0.32.0/tiny--abc/torch_compile_cache/1f2e/rank_0_0/backbone for vLLM's torch.compile
(EngineCore pid=1) INFO 12-07 17:40:09 [backends.py:398] Compiling a graph for compile range (1, 2048) takes 7.91 s
(EngineCore pid=1) INFO 12-07 17:40:10 [monitor.py:62] torch.compile took 9.48 s in total
(EngineCore pid=1) INFO 12-07 17:40:12 [core.py:403] init engine (profile, create kv cache, warmup model) took 12.30 s
"""
SECOND = """\
(EngineCore pid=1) INFO 12-07 17:42:01 [backends.py:1104] Using cache directory: /r/compile-cache/root/0.32.0/tiny--abc/torch_compile_cache/1f2e/rank_0_0/backbone for vLLM's torch.compile
(EngineCore pid=1) INFO 12-07 17:42:02 [backends.py:295] Directly load the compiled graph(s) for compile range (1, 2048) from the cache, took 0.812 s
(EngineCore pid=1) INFO 12-07 17:42:02 [monitor.py:62] torch.compile took 1.20 s in total
(EngineCore pid=1) INFO 12-07 17:42:04 [core.py:403] init engine (profile, create kv cache, warmup model) took 3.10 s
"""


def test_a_first_start_compiles_and_a_second_loads_from_the_cache() -> None:
    first, second = read_log(FIRST), read_log(SECOND)
    assert (first["graphs"], first["compile_s"], first["engine_s"]) == ("compiled", 9.48, 12.3)
    assert (second["graphs"], second["compile_s"], second["engine_s"]) == ("loaded", 1.2, 3.1)
    assert first["cache_dir"] == second["cache_dir"]
    assert str(first["cache_dir"]).startswith("/r/compile-cache/root/0.32.0/tiny--abc/")


def test_a_log_without_compile_lines_says_so() -> None:
    assert read_log("INFO nothing here\n") == {"cache_dir": None, "graphs": "-"}
