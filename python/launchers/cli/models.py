"""``vllm-hpc models list|show|schema``: the model registry."""

from __future__ import annotations

import click

from launchers.cli.jobs import json_option


@click.group("models")
def models_group() -> None:
    """The model registry: list, show, schema."""


@models_group.command("list")
@click.option("--registry", multiple=True, type=click.Path(dir_okay=False))
@json_option
def models_list(registry: tuple[str, ...], as_json: bool) -> None:
    """Registry entries with their layout and GPU count."""
    import json

    from launchers.input.registry import load_registry

    reg = load_registry(registry)
    rows = []
    for name, spec in sorted(reg.models.items()):
        tp = spec.tensor_parallel_size or 1
        pp = spec.pipeline_parallel_size or 1
        dp = spec.data_parallel_size or 1
        layout = f"TP={tp} PP={pp}" + (f" DP={dp}" if dp > 1 else "")
        layout += " EP" if spec.enable_expert_parallel else ""
        rows.append((name, layout, str(tp * pp * dp), spec.description))
    if as_json:
        keys = ("name", "layout", "gpus", "description")
        click.echo(json.dumps([dict(zip(keys, row, strict=True)) for row in rows], indent=2))
        return
    header = ("NAME", "LAYOUT", "GPUS", "DESCRIPTION")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        click.echo(
            "  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
        )


@models_group.command("show")
@click.argument("name")
@click.option("--registry", multiple=True, type=click.Path(dir_okay=False))
@json_option
def models_show(name: str, registry: tuple[str, ...], as_json: bool) -> None:
    """The merged entry NAME and the file each field came from."""
    import json

    from launchers.input.registry import load_registry

    reg = load_registry(registry)
    spec = reg.get(name)
    data = spec.model_dump(mode="json", exclude_defaults=False)
    sources = reg.sources.get(name, {})
    if as_json:
        click.echo(json.dumps({"name": name, "entry": data, "sources": sources}, indent=2))
        return
    click.echo(f"{name}")
    width = max(len(k) for k in data)
    for key, value in data.items():
        origin = sources.get(key, "default")
        click.echo(f"  {key.ljust(width)}  {json.dumps(value)}   [{origin}]")


@models_group.command("schema")
def models_schema() -> None:
    """JSON schema of registry files (point your editor's YAML plugin at it)."""
    import json

    from launchers.input.registry import schema

    click.echo(json.dumps(schema(), indent=2))
