"""The options of every command that plans, generated from ``SubmitRequest``.

``@request_options`` adds one click option per field that has a ``Flag`` (its type,
bounds and choices from the field's annotation) and hands the command one
``request: SubmitRequest`` instead of the loose values.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import annotated_types
import click

from launchers.spec.request import GROUPS, Flag, SubmitRequest, request_flags

if TYPE_CHECKING:
    from launchers.client import Client
    from launchers.plan.launch import LaunchPlan

F = TypeVar("F", bound=Callable[..., Any])


class _Size(click.FloatRange):
    """click's FloatRange lets ``nan`` through (every comparison with it is false)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value} is not a number", param, ctx)
        return number


def _bare(annotation: Any) -> tuple[Any, bool]:
    """``(type, optional)``: the annotation without ``| None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for meta in metadata:
        if isinstance(meta, annotated_types.Ge):
            out["min"] = meta.ge
        elif isinstance(meta, annotated_types.Gt):
            out.update(min=meta.gt, min_open=True)
        elif isinstance(meta, annotated_types.Le):
            out["max"] = meta.le
    return out


def _param(name: str, flag: Flag) -> Callable[[F], F]:
    info = SubmitRequest.model_fields[name]
    kind, optional = _bare(info.annotation)
    if flag.argument:
        return click.argument(name, nargs=-1, type=click.UNPROCESSED, metavar=f"[{flag.name}]...")
    if kind is bool:
        if optional:  # said, negated, or left to the registry
            toggle = "/".join(flag.names)
            return click.option(toggle, name, default=None, help=flag.help)
        return click.option(*flag.names, name, is_flag=True, help=flag.help)
    decls = (*flag.names, name)
    bounds = _bounds(info.metadata)
    if typing.get_origin(kind) is tuple:
        return click.option(*decls, multiple=True, type=click.Path(dir_okay=False), help=flag.help)
    param_type: Any
    if typing.get_origin(kind) is Literal:
        param_type = click.Choice(list(typing.get_args(kind)))
    elif kind is int:
        param_type = click.IntRange(**bounds) if bounds else int
    elif kind is float:
        param_type = _Size(**bounds)
    elif flag.file:
        param_type = click.Path(dir_okay=False)
    else:
        param_type = None
    return click.option(*decls, type=param_type, help=flag.help)


def _params() -> list[Callable[[F], F]]:
    return [_param(name, flag) for name, flag in request_flags().items()]


def request_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the request's options to a click command; it receives ``request``."""
    names = tuple(request_flags())

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in names}
        ctx = click.get_current_context()
        if isinstance(ctx.command, RequestCommand) and ctx.command.model_argument:
            given = _model_argument(given, ctx.meta.get(_AFTER_DASHES, 0))
        return func(request=SubmitRequest.checked(given), **kwargs)

    for param in reversed(_params()):
        command = param(command)
    return command


_AFTER_DASHES = "vllm_hpc.after_dashes"


def _model_argument(given: dict[str, Any], after: int) -> dict[str, Any]:
    """The first trailing argument is the model when it came before ``--`` and is no
    option; ``-m`` as well is an error."""
    extra = tuple(given["extra_args"])
    if len(extra) <= after or extra[0].startswith("-"):
        return given
    if given["model"] is not None:
        raise click.UsageError(
            f"the model is given twice ({given['model']!r} with -m/--model and {extra[0]!r}); "
            "give MODEL or -m, not both"
        )
    return {**given, "model": extra[0], "extra_args": extra[1:]}


class RequestCommand(click.Command):
    """A command with the request's options: ``--help`` lists them under their
    ``Flag.group`` headings, then the command's own options under ``heading``.
    ``model_argument``: the first trailing argument before ``--`` is the model."""

    def __init__(
        self,
        *args: Any,
        heading: str = "Output and waiting",
        model_argument: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.heading = heading
        self.model_argument = model_argument

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # click hands the arguments before and after ``--`` over as one tuple.
        ctx.meta[_AFTER_DASHES] = len(args) - args.index("--") - 1 if "--" in args else 0
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        if not self.model_argument:
            return pieces
        trailing = f"[{request_flags()['extra_args'].name}]..."
        return [f"[MODEL] [-- {p[1:]}" if p == trailing else p for p in pieces]

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        flags = request_flags()
        sections: dict[str, list[tuple[str, str]]] = {name: [] for name in (*GROUPS, self.heading)}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is None:
                continue
            flag = flags.get(param.name or "")
            sections[flag.group if flag else self.heading].append(record)
        for name, records in sections.items():
            if records:
                with formatter.section(name):
                    formatter.write_dl(records)


def client_of(request: SubmitRequest) -> Client:
    """The client a command plans and submits ``request`` with (its job root and site
    file are the request's; imported here: ``--help`` stays fast)."""
    from launchers.client import Client

    return Client(job_root=request.job_root, registries=request.registry)


def plan_of(request: SubmitRequest) -> LaunchPlan:
    """The plan of ``request``, as ``submit`` makes it."""
    return client_of(request).plan(request)


__all__ = ["RequestCommand", "client_of", "plan_of", "request_options"]
