"""Token parallelism (issue 5): the nodes' vLLM is asked whether it has the flags.

Upstream vLLM has no ``--token-parallel-size``; a research build does (with
``--enable-token-parallel``). ``launchers.input.probe.probe_vllm_flags`` asks the
interpreter the nodes run, in a child process, and the answer decides: the flags go into
the plan, or the request stops at the edge with one line, before anything is submitted. The probe is
the seam these tests fake; its own subprocess path is tested with fake interpreters.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from launchers.errors import InputError, UnsupportedFeatureError
from launchers.input import probe as probe_module
from launchers.input.probe import (
    PROBE_MARK,
    VllmProbe,
    check_token_parallel,
    parse_vllm_probe,
    probe_vllm_flags,
)
from launchers.input.registry import load_registry
from launchers.input.resolve import resolve
from launchers.plan.commands import build_vllm_serve_argv
from launchers.plan.launch import plan
from launchers.spec.config import ClusterSpec
from launchers.spec.request import SubmitRequest
from launchers.submit import slurm

from .conftest import PYTHON
from .helpers.cli import run

UPSTREAM = VllmProbe("0.32.0", frozenset({"--tensor-parallel-size", "--pipeline-parallel-size"}))
RESEARCH = VllmProbe(
    "0.11.2.dev0+tknp",
    frozenset({"--tensor-parallel-size", "--enable-token-parallel", "--token-parallel-size"}),
)
UNREACHABLE = VllmProbe(error="cannot run /opt/venv/bin/python: No such file or directory")
TKP: dict[str, Any] = {
    "model": "meta-llama/Llama-2-7b-hf",
    "tp": 4,
    "token_parallel_size": 4,
    "nodes": 2,
}
TKP_ARGS = "submit -m meta-llama/Llama-2-7b-hf --tp 4 --token-parallel-size 4 -N 2 -G 8"
REFUSED = (
    "token_parallel_size: the nodes' vLLM 0.32.0 (/opt/venv/bin/python) has no "
    "--enable-token-parallel / --token-parallel-size: upstream vLLM has no token parallelism "
    "(only research builds such as github.com/susavlsh10/vllm-tknp have it: install one for "
    "the nodes' Python, else drop --token-parallel-size)"
)


@pytest.fixture
def nodes_vllm(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[VllmProbe], list[str]]]:
    """Fake the capability probe with one answer; returns the interpreters it was asked."""

    def install(answer: VllmProbe) -> list[str]:
        asked: list[str] = []

        def probe(python: str, **_: object) -> VllmProbe:
            asked.append(python)
            return answer

        monkeypatch.setattr(probe_module, "probe_vllm_flags", probe)
        return asked

    yield install


@pytest.fixture
def submissions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    for name in ("submit_submitit", "submit_sbatch", "start_local"):
        monkeypatch.setattr(slurm, name, lambda *a, _n=name, **k: calls.append(_n))
    return calls


def _resolve(environ: dict[str, str], *registries: str, **kwargs: Any) -> Any:
    registry = load_registry(registries, environ)
    return resolve(SubmitRequest(**{"gpus_per_node": 8, **kwargs}), registry, environ, PYTHON)


def _site(tmp_path: Path, text: str = "site:\n  vllm_features: [token_parallel]\n") -> str:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return str(path)


# --- the two answers, through the planner --------------------------------------------


def test_supported_build_gets_the_flags_in_every_serve_argv(
    nodes_vllm: Callable[[VllmProbe], list[str]], environ: dict[str, str]
) -> None:
    asked = nodes_vllm(RESEARCH)
    config = _resolve(environ, **TKP)
    assert asked == [PYTHON]  # the nodes' interpreter was asked, once
    argv = build_vllm_serve_argv(config)
    at = argv.index("--token-parallel-size")
    assert argv[at - 1 : at + 2] == ["--enable-token-parallel", "--token-parallel-size", "4"]
    launch = plan(config, ClusterSpec(nodes=2, gpus_per_node=8))
    serve = [role.serve_argv for role in launch.roles if role.serve_argv]
    assert serve and all("--enable-token-parallel" in a for a in serve)
    assert launch.layout.token_parallel_size == 4


def test_upstream_vllm_is_refused_with_one_line(
    nodes_vllm: Callable[[VllmProbe], list[str]], environ: dict[str, str]
) -> None:
    nodes_vllm(UPSTREAM)
    with pytest.raises(UnsupportedFeatureError) as caught:
        _resolve(environ, **TKP)
    assert str(caught.value) == REFUSED
    assert caught.value.exit_code == 2


def test_the_installed_answer_beats_a_site_declaration(
    nodes_vllm: Callable[[VllmProbe], list[str]], environ: dict[str, str], tmp_path: Path
) -> None:
    nodes_vllm(UPSTREAM)
    with pytest.raises(UnsupportedFeatureError, match="has no --enable-token-parallel"):
        _resolve(environ, _site(tmp_path), **TKP)


def test_unreachable_vllm_needs_the_site_declaration(
    nodes_vllm: Callable[[VllmProbe], list[str]], environ: dict[str, str], tmp_path: Path
) -> None:
    nodes_vllm(UNREACHABLE)
    with pytest.raises(UnsupportedFeatureError) as caught:
        _resolve(environ, **TKP)
    assert str(caught.value) == (
        "token_parallel_size: upstream vLLM has no token parallelism and the nodes' vLLM "
        "could not be asked: cannot run /opt/venv/bin/python: No such file or directory (only "
        "research builds such as github.com/susavlsh10/vllm-tknp have it; if the nodes run "
        "one, declare `vllm_features: [token_parallel]` in the site file, else drop it)"
    )
    config = _resolve(environ, _site(tmp_path), **TKP)
    assert "--enable-token-parallel" in build_vllm_serve_argv(config)


def test_container_image_is_not_probed_on_the_host(
    nodes_vllm: Callable[[VllmProbe], list[str]], environ: dict[str, str], tmp_path: Path
) -> None:
    asked = nodes_vllm(RESEARCH)  # the host's vLLM is not the image's: never asked
    image = {**TKP, "container": "apptainer:/shared/vllm.sif"}
    with pytest.raises(UnsupportedFeatureError, match="inside apptainer:/shared/vllm.sif"):
        _resolve(environ, **image)
    config = _resolve(environ, _site(tmp_path), **image)
    assert "--token-parallel-size" in build_vllm_serve_argv(config)
    assert asked == []


def test_no_probe_without_token_parallelism(
    nodes_vllm: Callable[[VllmProbe], list[str]], environ: dict[str, str]
) -> None:
    asked = nodes_vllm(UPSTREAM)
    config = _resolve(environ, model="meta-llama/Llama-2-7b-hf", tp=8)
    assert asked == []
    assert not {"--token-parallel-size", "--enable-token-parallel"} & set(
        build_vllm_serve_argv(config)
    )


def test_cheap_checks_come_before_the_probe(
    nodes_vllm: Callable[[VllmProbe], list[str]], environ: dict[str, str]
) -> None:
    asked = nodes_vllm(RESEARCH)
    with pytest.raises(InputError, match="--port: 80 is not a usable port"):
        _resolve(environ, **TKP, port=80)
    assert asked == []


def test_check_token_parallel_needs_both_flags() -> None:
    half = VllmProbe("x", frozenset({"--token-parallel-size"}))
    with pytest.raises(UnsupportedFeatureError, match="has no --enable-token-parallel:"):
        check_token_parallel(half, python="/p", declared=True)
    check_token_parallel(RESEARCH, python="/p", declared=False)


# --- the two answers, through the CLI: nothing submitted on refusal --------------------


def test_cli_supported_plans_and_submits(
    nodes_vllm: Callable[[VllmProbe], list[str]], submissions: list[str]
) -> None:
    nodes_vllm(RESEARCH)
    code, out, err = run([*shlex.split(TKP_ARGS), "--dry-run", "--json"])
    assert code == 0, err
    leader = json.loads(out)["plan"]["roles"][0]["serve_argv"]
    assert leader[leader.index("--token-parallel-size") + 1] == "4"
    code, _, err = run([*shlex.split(TKP_ARGS), "--no-wait"])
    assert submissions == ["submit_submitit"], err


def test_cli_unsupported_is_one_line_and_nothing_submitted(
    nodes_vllm: Callable[[VllmProbe], list[str]], submissions: list[str]
) -> None:
    nodes_vllm(UPSTREAM)
    for extra in (["--dry-run"], ["--no-wait"], ["--via", "sbatch"], []):
        code, out, err = run([*shlex.split(TKP_ARGS), *extra])
        assert (code, out, err) == (2, "", f"Error: {REFUSED}\n")
    assert submissions == []


# --- the probe itself: the marked line, fake interpreters ------------------------------


def test_parse_probe_ignores_vllm_logging() -> None:
    flags = ["--token-parallel-size", "--enable-token-parallel"]
    text = (
        "INFO 11-22 10:00:00 [__init__.py:216] Automatically detected platform cuda.\n"
        f"{PROBE_MARK}{json.dumps({'version': '0.11.2', 'flags': flags})}\n"
        "WARNING something after\n"
    )
    probe = parse_vllm_probe(text)
    assert probe == VllmProbe("0.11.2", frozenset(flags))
    assert parse_vllm_probe(f"{PROBE_MARK}{json.dumps({'error': 'ImportError: x'})}\n") == (
        VllmProbe(error="ImportError: x")
    )
    for junk in ("", "no marker\n", f"{PROBE_MARK}{{not json\n", f"{PROBE_MARK}[1, 2]\n"):
        assert parse_vllm_probe(junk).error == "the probe printed no answer"


def _fake_python(tmp_path: Path, body: str) -> str:
    path = tmp_path / "python"
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_probe_runs_the_nodes_interpreter_in_a_child(tmp_path: Path) -> None:
    answer = json.dumps({"version": "9.9", "flags": ["--enable-token-parallel"]})
    record = tmp_path / "argv"
    python = _fake_python(
        tmp_path,
        f'printf "%s\\n" "$@" > {shlex.quote(str(record))}\n'
        f"echo 'INFO vLLM is logging'\necho {shlex.quote(PROBE_MARK + answer)}",
    )
    probe = probe_vllm_flags(python)
    assert probe == VllmProbe("9.9", frozenset({"--enable-token-parallel"}))
    argv = record.read_text().splitlines()
    assert argv[0] == "-c" and "vllm.engine.arg_utils" in "\n".join(argv[1:])
    assert "vllm" not in sys.modules  # asked in a child: never imported here


@pytest.mark.parametrize(
    ("body", "timeout", "error"),
    [
        ("echo 'Traceback ...' >&2; echo 'SyntaxError: boom' >&2; exit 1", 30.0, "failed: "),
        ("exit 3", 30.0, "failed: exit code 3"),
        ("exec tail -f /dev/null", 0.3, "did not import vLLM within 0 s"),
    ],
)
def test_probe_failures_are_unanswered(
    tmp_path: Path, body: str, timeout: float, error: str
) -> None:
    python = _fake_python(tmp_path, body)
    probe = probe_vllm_flags(python, timeout=timeout)
    assert probe.flags == frozenset() and probe.error and error in probe.error, probe
    assert probe_vllm_flags(str(tmp_path / "missing")).error == (
        f"cannot run {tmp_path / 'missing'}: No such file or directory"
    )


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM installed here")
def test_probe_of_a_python_without_vllm() -> None:
    probe = probe_vllm_flags(sys.executable)
    assert probe.error is not None and "vllm" in probe.error, probe
