"""``vllm-hpc stage``: copy a model into the model store for nodes without internet; a
thin printer of ``Client.stage``."""

from __future__ import annotations

import json
import shlex
import sys
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import BaseModel, ValidationError

from launchers.cli.exits import EXIT_FAILURE, EXIT_INTERRUPTED
from launchers.cli.jobs import json_option
from launchers.defaults import (
    DEFAULT_HF_ENDPOINT,
    DEFAULT_MODEL_STORE,
    DEFAULT_REVISION,
    STAGE_JOB_TIME,
)
from launchers.errors import InputError, clipped, shown

if TYPE_CHECKING:
    from launchers.client import Client
    from launchers.spec.staged import StageRequest, StageVia
    from launchers.stage.run import StageResult

M = TypeVar("M", bound=BaseModel)
_FLAGS = {"model": "MODEL", "revision": "--revision", "dest": "--dest",
          "endpoint": "--endpoint", "token_file": "--token-file", "partition": "--partition",
          "time": "--time"}  # fmt: skip


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


@click.command("stage")
@click.argument("model")
@click.option(
    "--revision",
    default=DEFAULT_REVISION,
    show_default=True,
    help="The branch, tag or commit to stage; the copy records the commit it was.",
)
@click.option(
    "--dest",
    metavar="DIR",
    help="The model store (shared storage the nodes read). Default: "
    f"$VLLM_HPC_MODEL_STORE, else the site file's model_store, else {DEFAULT_MODEL_STORE}.",
)
@click.option(
    "--endpoint",
    metavar="URL",
    help="The hub or the site's mirror. Default: the site file's hf_endpoint, else "
    f"$HF_ENDPOINT, else {DEFAULT_HF_ENDPOINT}.",
)
@click.option(
    "--token-file",
    metavar="FILE",
    help="A file holding your hub token, readable only by you (chmod 600), for "
    "gated and private models. Default: huggingface_hub's own token file "
    "($HF_TOKEN_PATH, else $HF_HOME/token, else ~/.cache/huggingface/token) when it "
    "exists. The token is never put on a command line, in a job or in the manifest.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="List the files that would be staged, their sizes and which are already "
    "there; download nothing.",
)
@click.option(
    "--no-hash",
    "no_hash",
    is_flag=True,
    help="Check the sizes only, not the sha256 of the weights (faster on a huge model).",
)
@click.option(
    "--no-kernels",
    "no_kernels",
    is_flag=True,
    help="Do not run the nodes' vLLM's `vllm download-kernels` (the kernels a GPU build "
    "fetches at its first start; run once per vLLM install, not per model).",
)
@click.option(
    "--via",
    type=click.Choice(["here", "sbatch"]),
    default="here",
    show_default=True,
    help="sbatch: run the same stage in a short job on a node that reaches the hub (a "
    "transfer partition), wait for it and print what it printed. The token stays in its "
    "0600 file: never in the job's script or environment.",
)
@click.option(
    "--partition",
    metavar="NAME",
    help="With --via sbatch: the job's partition. Default: the site file's "
    "transfer_partition, else SLURM's default.",
)
@click.option(
    "--time",
    "time_limit",
    metavar="TIME",
    help=f"With --via sbatch: the job's time limit (default {STAGE_JOB_TIME}).",
)
@click.option(
    "--registry",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="An extra registry file (for a registry id and the site settings).",
)
@json_option
def stage_cmd(model: str, revision: str, dest: str | None, endpoint: str | None,
              token_file: str | None, dry_run: bool, no_hash: bool, no_kernels: bool, via: str,
              partition: str | None, time_limit: str | None, registry: tuple[str, ...],
              as_json: bool) -> None:  # fmt: skip
    """Copy MODEL from the Hugging Face hub into the model store, for compute nodes that
    cannot reach the internet. Run it on the login node (or wherever the hub or the
    site's mirror is reachable).

    MODEL is a registry id (vllm-hpc models list) or a hub id (org/name). Only what vLLM
    loads is fetched: the weights in one format (safetensors when there are any, only
    the shards their index names), config.json, generation_config.json and the
    tokenizer's files; never original/** or consolidated duplicates.

    The copy goes to STORE/ORG--NAME/COMMIT/ as plain files. It is verified (every file
    and every shard the index names has the hub's size and, for the weights, its
    sha256), its config and tokenizer are loaded offline in the nodes' Python
    ($VLLM_HPC_PYTHON, else this one; said and skipped without Transformers), and it is
    recorded in vllm-hpc-staged.json beside the files;
    STORE/ORG--NAME/refs/REVISION is written last, so a copy cut short never counts as staged. An
    interrupted stage resumes: run the same command again.

    The nodes' vLLM's `vllm download-kernels` runs too (vLLM 0.32+, a GPU build: the
    kernels it would fetch at its first start go into that Python's environment); else
    one line says why nothing is fetched. Exit 1 when it fails (the copy is recorded).

    \b
    Examples:
      vllm-hpc stage meta-llama/Llama-3.2-3B-Instruct --dry-run
      vllm-hpc stage llama-3.2-3b-instruct --dest /shared/models
      vllm-hpc stage Qwen/Qwen3-8B --revision main --endpoint https://hf-mirror.example.org
    """
    from launchers.client import Client
    from launchers.spec.staged import StageRequest, StageVia

    fields = {
        "model": model, "revision": revision, "dest": dest, "endpoint": endpoint,
        "token_file": token_file, "dry_run": dry_run, "verify_hashes": not no_hash,
        "kernels": not no_kernels,
    }  # fmt: skip
    request = _checked(StageRequest, fields)
    if via == "sbatch":
        given = {"partition": partition, "time": time_limit}
        job = _checked(StageVia, {k: v for k, v in given.items() if v is not None})
        _via_sbatch(Client(registries=registry), request, job, as_json)
        return
    if partition is not None or time_limit is not None:
        raise InputError(
            f"{'--partition' if partition is not None else '--time'}: only with --via sbatch",
            fix="add --via sbatch to stage in a job, or drop it to stage here",
        )
    result = Client(registries=registry).stage(request)
    if as_json:
        click.echo(json.dumps(_as_dict(result), indent=2))
    else:
        _show(result, dest)
    if result.kernels is not None and result.kernels.status == "failed":
        sys.exit(EXIT_FAILURE)


def _checked(model: type[M], fields: dict[str, Any]) -> M:
    """``model`` from the options, the first error as the CLI's one line."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = _FLAGS.get(str(err["loc"][0]) if err["loc"] else "", "stage")
        msg = clipped(err["msg"].removeprefix("Value error, "))
        raise InputError(f"{name}: {msg} (got {shown(err.get('input'))})") from None


def _via_sbatch(client: Client, request: StageRequest, via: StageVia, as_json: bool) -> None:
    """``--via sbatch``: the job's script (a dry run), or the job waited for and what
    its ``stage`` printed; its state changes on stderr."""
    from launchers.stage.hub import StageError

    try:
        run = client.stage_job(
            request, via, as_json=as_json, said=lambda line: click.echo(line, err=True)
        )
    except KeyboardInterrupt:
        click.echo("\nStopped waiting; the stage job keeps running (squeue --me).", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if run.end is None:
        click.echo(run.script, nl=False)
        return
    end = run.end
    click.echo(end.output, nl=False)
    if end.ok:
        return
    if end.state is None:
        why = f"stage job {end.job_id} ended and SLURM no longer knows how"
    else:
        why = f"stage job {end.job_id} ended {end.raw or end.state}"
    if end.last_error:
        why += f": {end.last_error.removeprefix('Error: ')}"
    raise StageError(why, fix=f"read {end.errors_path}")


def _as_dict(result: StageResult) -> dict[str, Any]:
    plan = result.plan
    out: dict[str, Any] = {
        "model": plan.repo_id, "revision": plan.revision, "commit": plan.commit,
        "endpoint": plan.endpoint, "path": plan.dest, "weights": plan.selection.weights,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256,
                   "present": f.path in plan.present} for f in plan.selection.files],
        "skipped": [{"path": p, "why": why} for p, why in plan.selection.skipped],
        "staged": result.copy is not None,
    }  # fmt: skip
    if result.copy is not None:
        out["verified"] = result.copy.manifest.verified
        out["tokenizer_checked"] = result.copy.manifest.tokenizer_checked
    if result.tokenizer is not None:
        out["tokenizer"] = result.tokenizer.detail
    step = plan.kernels
    out["kernels"] = (
        result.kernels.model_dump() if result.kernels is not None
        else {"would_run": list(step.argv) if step.argv else None, "detail": step.why}
    )  # fmt: skip
    return out


def _show(result: StageResult, dest: str | None) -> None:
    plan = result.plan
    sel = plan.selection
    head = f"{plan.repo_id} at {plan.revision} (commit {plan.commit}) from {plan.endpoint}"
    if result.copy is None:
        click.echo(f"would stage {head}")
        click.echo(f"into {plan.dest}")
        width = max((len(f.path) for f in sel.files), default=0)
        for f in sel.files:
            state = "there" if f.path in plan.present else "fetch"
            click.echo(f"  {state}  {f.path:<{width}}  {_size(f.size):>10}")
        for path, why in sel.skipped:
            click.echo(f"  skip   {path} ({why})")
        fetch = sum(f.size for f in plan.to_fetch)
        click.echo(f"{len(sel.files)} files, {_size(sel.total_bytes)} ({sel.weights} weights); "
                   f"to fetch: {len(plan.to_fetch)} files, {_size(fetch)}")  # fmt: skip
        step = plan.kernels
        would = f"kernels: would run {shlex.join(step.argv)}" if step.argv else step.why
        click.echo(would)
        return
    manifest = result.copy.manifest
    click.echo(f"staged {head}")
    click.echo(f"  {result.copy.path}")
    click.echo(f"  {len(manifest.files)} files, {_size(manifest.total_bytes)} "
               f"({manifest.weights} weights), verified: {manifest.verified}")  # fmt: skip
    if result.tokenizer is not None:
        checked = "" if manifest.tokenizer_checked else "not checked: "
        click.echo(f"  tokenizer: {checked}{result.tokenizer.detail}")
    if result.kernels is not None:
        click.echo(f"  {result.kernels.detail}")
    # The jobs of the hub id find this copy in the same store (input.resolve).
    words = [plan.repo_id]
    if plan.revision != DEFAULT_REVISION:
        words += ["--revision", plan.revision]
    if dest:
        words += ["--model-store", dest]
    shown_words = " ".join(shlex.quote(w) for w in words)
    click.echo(f"jobs serve it from there, offline: vllm-hpc submit -m {shown_words} ...")
