"""The options of every command that plans come from ``SubmitRequest`` (cli/options.py):
their ``--help`` is recorded whole, and every option reaches the request."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from launchers.cli import cli
from launchers.cli.options import request_options
from launchers.spec.request import FLAG_NAMES, GROUPS, SubmitRequest, request_flags

PLANNING = [
    ["submit"],
    ["plan"],
    ["render", "sbatch"],
    ["render", "k8s"],
    ["render", "compose"],
    ["render", "ray-cluster"],
    ["render", "swarm"],
    ["doctor"],
    ["service", "up"],
]


@pytest.mark.parametrize("path", PLANNING, ids="-".join)
def test_help_of_each_planning_command(path: list[str], golden: Callable[[str, str], None]) -> None:
    done = CliRunner().invoke(cli, [*path, "--help"], terminal_width=100)
    assert done.exit_code == 0, done.output
    golden(f"help/{'-'.join(path)}.txt", done.output)


def _seen() -> tuple[click.Command, list[SubmitRequest]]:
    seen: list[SubmitRequest] = []

    @click.command()
    @request_options
    def command(request: SubmitRequest) -> None:
        seen.append(request)

    return command, seen


# A value for each option, as a user types it, and what the request holds then.
TYPED: dict[str, tuple[list[str], Any]] = {
    "model": (["-m", "org/x"], "org/x"),
    "revision": (["--revision", "v1.0"], "v1.0"),
    "nodes": (["-N", "2"], 2),
    "gpus_per_node": (["-G", "4"], 4),
    "tp": (["--tp", "4"], 4),
    "pp": (["--pp", "2"], 2),
    "dp": (["--dp", "8"], 8),
    "ep": (["--no-ep"], False),
    "token_parallel_size": (["--token-parallel-size", "2"], 2),
    "allow_cross_node_tp": (["--allow-cross-node-tp"], True),
    "runtime": (["--runtime", "native"], "native"),
    "partition": (["-p", "gpu"], "gpu"),
    "account": (["-A", "lab"], "lab"),
    "qos": (["--qos", "high"], "high"),
    "time": (["-t", "01:00:00"], "01:00:00"),
    "job_name": (["-J", "mine"], "mine"),
    "registry": (["--registry", "a.yaml", "--registry", "b.yaml"], ("a.yaml", "b.yaml")),
    "port": (["--port", "8100"], 8100),
    "host": (["--host", "node"], "node"),
    "ray_port": (["--ray-port", "6400"], 6400),
    "api_key_file": (["--api-key-file", "/k"], "/k"),
    "no_api_key": (["--no-api-key"], True),
    "no_ray_auth": (["--no-ray-auth"], True),
    "no_preflight": (["--no-preflight"], True),
    "preflight_port": (["--preflight-port", "29600"], 29600),
    "container": (["--container", "apptainer:/x.sif"], "apptainer:/x.sif"),
    "vllm_version": (["--vllm-version", "0.11.0"], "0.11.0"),
    "gpu_memory_gib": (["--gpu-memory-gib", "80"], 80.0),
    "iface": (["--iface", "ib0"], "ib0"),
    "all2all_backend": (["--all2all-backend", "naive"], "naive"),
    "api_server_count": (["--api-server-count", "2"], 2),
    "dp_rpc_port": (["--dp-rpc-port", "13400"], 13400),
    "dp_backend": (["--dp-backend", "ray"], "ray"),
    "requeue": (["--requeue"], True),
    "job_root": (["--job-root", "/j"], "/j"),
    "model_store": (["--model-store", "/m"], "/m"),
    "extra_args": (["--", "--enable-prefix-caching"], ("--enable-prefix-caching",)),
}


def test_every_request_flag_is_an_option_that_reaches_the_request() -> None:
    assert set(TYPED) == set(request_flags()), "a new flag needs a row here"
    command, seen = _seen()
    argv = [arg for name, (args, _) in TYPED.items() if name != "extra_args" for arg in args]
    done = CliRunner().invoke(command, [*argv, *TYPED["extra_args"][0]])
    assert done.exit_code == 0, done.output
    (request,) = seen
    for name, (_, value) in TYPED.items():
        assert getattr(request, name) == value, name


def test_nothing_given_is_the_empty_request() -> None:
    command, seen = _seen()
    done = CliRunner().invoke(command, [])
    assert done.exit_code == 0, done.output
    assert seen == [SubmitRequest()]


def test_bounds_come_from_the_request() -> None:
    command, _ = _seen()
    done = CliRunner().invoke(command, ["--nodes", "0"])
    assert done.exit_code == 2
    assert "1<=x<=4096" in done.output


def test_error_names_are_the_flags() -> None:
    assert FLAG_NAMES["time"] == "--time"
    assert FLAG_NAMES["gpus_per_node"] == "--gpus-per-node"
    assert "extra_args" not in FLAG_NAMES


def _sections(text: str) -> dict[str, str]:
    """``--help`` text cut at its headings (lines ending in ``:`` at column 0)."""
    out: dict[str, str] = {}
    heading = ""
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            heading = line[:-1]
            out[heading] = ""
        elif heading:
            out[heading] += line + "\n"
    return out


@pytest.mark.parametrize("path", PLANNING, ids="-".join)
def test_help_lists_the_request_options_under_their_groups(path: list[str]) -> None:
    done = CliRunner().invoke(cli, [*path, "--help"], terminal_width=100)
    sections = _sections(done.output)
    assert [h for h in sections if h in GROUPS] == list(GROUPS)
    for flag in request_flags().values():
        if not flag.argument:
            assert f"  {flag.name}" in sections[flag.group] or any(
                f"{n}, {flag.name}" in sections[flag.group] for n in flag.names
            ), (flag.name, flag.group)


def test_submit_help_puts_its_own_options_under_output_and_waiting() -> None:
    done = CliRunner().invoke(cli, ["submit", "--help"], terminal_width=100)
    own = _sections(done.output)["Output and waiting"]
    for name in ("--dry-run", "--json", "--wait / --no-wait", "--executor", "-h, --help"):
        assert name in own
    assert "--partition" not in own


def test_every_flag_has_a_known_group() -> None:
    assert {f.group for f in request_flags().values()} <= set(GROUPS)


def _planned(args: list[str]) -> tuple[click.testing.Result, list[SubmitRequest]]:
    """``args`` through a command like ``submit`` (the model may be its argument)."""
    from launchers.cli.options import RequestCommand

    seen: list[SubmitRequest] = []

    @click.command(cls=RequestCommand, model_argument=True)
    @request_options
    def command(request: SubmitRequest) -> None:
        seen.append(request)

    return CliRunner().invoke(command, args), seen


@pytest.mark.parametrize(
    ("args", "model", "extra"),
    [
        (["org/x", "-p", "gpu"], "org/x", ()),
        (["-p", "gpu", "org/x"], "org/x", ()),
        (["org/x", "--", "--enable-prefix-caching"], "org/x", ("--enable-prefix-caching",)),
        (["-m", "org/x", "--", "--max-model-len", "4096"], "org/x", ("--max-model-len", "4096")),
        # After `--` a bare word is vLLM's, never the model.
        (["--", "word"], None, ("word",)),
        (["-m", "org/x", "--", "word"], "org/x", ("word",)),
        ([], None, ()),
    ],
)
def test_model_as_the_first_argument(
    args: list[str], model: str | None, extra: tuple[str, ...]
) -> None:
    done, seen = _planned(args)
    assert done.exit_code == 0, done.output
    (request,) = seen
    assert (request.model, request.extra_args) == (model, extra)


def test_model_given_twice_is_one_line() -> None:
    done, seen = _planned(["-m", "org/x", "org/y"])
    assert done.exit_code == 2 and not seen
    assert "given twice" in done.output and "not both" in done.output


def test_submit_takes_the_model_as_its_argument(tmp_path: Any) -> None:
    args = ["-p", "gpu", "-t", "01:00:00", "--job-root", str(tmp_path), "--dry-run", "--json"]
    by_flag = CliRunner().invoke(cli, ["submit", "-m", "llama-3.2-3b-instruct", *args])
    by_argument = CliRunner().invoke(cli, ["submit", "llama-3.2-3b-instruct", *args])
    assert by_flag.exit_code == 0, by_flag.output
    assert by_argument.output == by_flag.output


def test_usage_names_the_model_argument() -> None:
    done = CliRunner().invoke(cli, ["submit", "--help"])
    assert "submit [OPTIONS] [MODEL] [-- EXTRA_VLLM_ARGS]..." in done.output
    done = CliRunner().invoke(cli, ["doctor", "--help"])
    assert "[MODEL]" not in done.output


def test_a_request_that_does_not_validate_is_the_same_one_line_from_the_cli_and_python(
    tmp_path: Path,
) -> None:
    """The CLI's step from its options to the request (past click's own checks) and the
    Python client given the fields both refuse with ``SubmitRequest.checked``'s line:
    an ``InputError`` (exit code 2) naming the flag, not pydantic's ValidationError."""
    from launchers.client import Client
    from launchers.errors import InputError

    line = "--nodes: Input should be greater than or equal to 1 (got 0)"
    fields = {"model": "llama-3.2-3b-instruct", "nodes": 0}

    @request_options
    def command(request: SubmitRequest) -> None:
        raise AssertionError("a bad request reached the command")

    parsed = SubmitRequest().model_dump(include=set(request_flags())) | fields
    refused: list[InputError] = []
    for attempt in (
        lambda: command(**parsed),
        lambda: Client(job_root=str(tmp_path)).plan(fields),
        lambda: Client(job_root=str(tmp_path)).submit(fields),
        lambda: SubmitRequest.checked(fields),
    ):
        with click.Context(click.Command("plan")), pytest.raises(InputError) as caught:
            attempt()
        refused.append(caught.value)
    assert [(e.one_line(), e.exit_code) for e in refused] == [(line, 2)] * 4
    assert not (tmp_path / "jobs").exists()
