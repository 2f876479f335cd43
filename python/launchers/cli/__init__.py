"""The ``vllm-hpc`` command line: the group, its commands (one module each) and the
one place that turns errors into exit codes.

Exit codes: 0 ok, 1 a failure on the cluster or in the scheduler, 2 bad input
(always one line naming the field and the fix), 130 interrupted.
Imports of the planning modules are lazy so ``--help`` and ``--dry-run`` stay fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from launchers.cli.exits import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED

# Each command and the module (of launchers.cli) and name it is defined as, imported only
# when the command is asked for: `submit --dry-run` imports the submit command's module,
# not the service's, the doctor's or the renderers'; `--help` imports them all.
COMMANDS: dict[str, tuple[str, str]] = {
    "submit": ("submit", "submit_cmd"), "plan": ("plan", "plan_cmd"),
    "render": ("render", "render_group"),
    "jobs": ("jobs", "jobs_cmd"), "status": ("jobs", "status_cmd"), "logs": ("jobs", "logs_cmd"),
    "metrics": ("jobs", "metrics_cmd"), "bench": ("jobs", "bench_cmd"),
    "stop": ("jobs", "stop_cmd"),
    "models": ("models", "models_group"), "node": ("node", "node_group"),
    "service": ("service", "group"), "tunnel": ("service", "tunnel_cmd"),
    "doctor": ("doctor", "doctor_cmd"),
    "job-root": ("internal", "job_root_cmd"), "sbatch-helper": ("internal", "sbatch_helper_cmd"),
    "clean": ("clean", "clean_cmd"), "stage": ("stage", "stage_cmd"),
}  # fmt: skip


def command(name: str) -> click.Command:
    """The command ``name`` (a key of COMMANDS), its module imported now."""
    import importlib

    module, attribute = COMMANDS[name]
    found = getattr(importlib.import_module(f"launchers.cli.{module}"), attribute)
    assert isinstance(found, click.Command) and found.name == name, (module, attribute)
    return found


class LazyGroup(click.Group):
    """A group whose commands (COMMANDS) are imported when one is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.add_command(command(cmd_name))
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.", envvar="VLLM_HPC_DEBUG")
@click.version_option(package_name="vllm-hpc", prog_name="vllm-hpc")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Serve vLLM's OpenAI-compatible API on SLURM clusters.

    \b
    Start with:
      vllm-hpc models list
      vllm-hpc submit --model llama-3.1-70b-instruct --nodes 2 --gpus-per-node 4 --dry-run
    """
    ctx.obj = {"debug": debug}


def _fail(message: str, code: int, lines: tuple[str, ...] = ()) -> NoReturn:
    from launchers.cli.colour import paint

    # color=True: click would strip what paint() chose to keep (paint checks the terminal)
    click.echo(f"{paint('Error:', 'red', err=True, bold=True)} {message}", err=True, color=True)
    for line in lines:
        click.echo(f"  | {line}", err=True)
    sys.exit(code)


def run(command: click.Command, args: Sequence[str] | None, prog_name: str) -> NoReturn:
    """Run a click command with vllm-hpc's error handling."""
    from launchers.errors import VllmHpcError

    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv or os.environ.get("VLLM_HPC_DEBUG") == "1"
    try:
        result = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except VllmHpcError as exc:
        if debug:
            raise
        _fail(exc.one_line(), exc.exit_code, exc.lines)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else prog_name
        _fail(f"{exc.format_message()} (see '{where} --help')", EXIT_BAD_INPUT)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        _fail("interrupted", EXIT_INTERRUPTED)
    except OSError as exc:
        if debug:
            raise
        # A file the user named (an output path, a key file) that cannot be used.
        what = exc.strerror or type(exc).__name__
        if exc.filename is None:
            _fail(f"{what} (rerun with --debug for the traceback)", EXIT_FAILURE)
        _fail(f"{exc.filename}: {what} (check the path and its permissions)", EXIT_BAD_INPUT)
    except Exception as exc:
        if debug:
            raise
        _fail(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            EXIT_FAILURE,
        )
    sys.exit(result if isinstance(result, int) else 0)


def main(args: Sequence[str] | None = None) -> NoReturn:
    run(cli, args, "vllm-hpc")
