"""The one module that talks to a Hugging Face hub, through huggingface_hub: the
repository's listing at a revision, and downloads into a plain directory.

The endpoint and the token are always passed as arguments: huggingface_hub reads
``HF_ENDPOINT`` and ``HF_TOKEN`` from the environment when they are not, and vllm-hpc
decides both itself (``token=False``: no token, whatever the environment holds). Its
errors become vllm-hpc's one-line errors here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from launchers.errors import InputError, RuntimeFailure, clipped
from launchers.plan.staging import RemoteFile

GATED_FIX = (
    "request access on the model's page, then put your token in a 0600 file "
    "(~/.cache/huggingface/token, or --token-file); $HF_TOKEN is not read"
)


class StageError(RuntimeFailure):
    """Staging failed: the hub could not be reached, or the copy is not whole."""


def offline_mode() -> bool:
    """huggingface_hub's own offline switch (``HF_HUB_OFFLINE``, read when imported)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str, endpoint: str, token: bool) -> Iterator[None]:
    """huggingface_hub's errors as vllm-hpc's: one line naming the model and the fix."""
    import httpx2
    from huggingface_hub import errors

    where = f"model {repo_id}"
    try:
        yield
    except errors.GatedRepoError:
        raise InputError(
            f"{where} is gated and {'your token has no access' if token else 'no token was given'}",
            fix=GATED_FIX,
        ) from None
    except errors.RevisionNotFoundError:
        raise InputError(
            f"{where}: revision {revision!r} does not exist on {endpoint}",
            fix="give a branch, tag or commit of the repository with --revision",
        ) from None
    except errors.RepositoryNotFoundError:
        private = "" if token else " (or it is private or gated: a token is needed)"
        raise InputError(
            f"{where} was not found on {endpoint}{private}",
            fix=f"check the id; {GATED_FIX}" if not token else "check the id and your access",
        ) from None
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise StageError(
            f"{where}: {endpoint} answered HTTP {status}",
            fix="check --endpoint / the site's hf_endpoint and try again",
        ) from None
    except InputError:
        raise
    except (OSError, ValueError, httpx2.HTTPError) as exc:
        raise StageError(
            f"{where}: {clipped(f'{type(exc).__name__}: {exc}', 300)}",
            fix=f"check that {endpoint} is reachable from here; run the same command again "
            "to resume",
        ) from None


def _api(endpoint: str, token: str | None) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token if token else False, library_name="vllm-hpc")


def listing(
    repo_id: str, revision: str, endpoint: str, token: str | None
) -> tuple[str, list[RemoteFile]]:
    """The commit ``revision`` is at, and every file of the repository there."""
    from huggingface_hub.hf_api import RepoFile

    with hub_errors(repo_id, revision, endpoint, bool(token)):
        api = _api(endpoint, token)
        info = api.model_info(repo_id, revision=revision)
        commit = str(info.sha)
        files = [
            RemoteFile(
                path=item.path,
                size=int(item.lfs.size if item.lfs is not None else item.size),
                sha256=str(item.lfs.sha256) if item.lfs is not None else None,
            )
            for item in api.list_repo_tree(repo_id, recursive=True, revision=commit)
            if isinstance(item, RepoFile)
        ]
    return commit, files


def download(
    repo_id: str,
    commit: str,
    paths: Sequence[str],
    *,
    local_dir: str,
    cache_dir: str,
    endpoint: str,
    token: str | None,
    workers: int,
    progress: bool = True,
) -> None:
    """Download ``paths`` of ``repo_id`` at ``commit`` into ``local_dir`` as plain
    files. A file already there whole (huggingface_hub's own record of it) is kept, so
    a second run resumes where the first one stopped. ``progress``: huggingface_hub's
    progress bars (on a terminal)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils.tqdm import disable_progress_bars

    quiet = contextlib.nullcontext() if progress else disable_progress_bars()
    with quiet, hub_errors(repo_id, commit, endpoint, bool(token)):
        snapshot_download(
            repo_id,
            revision=commit,
            local_dir=local_dir,
            cache_dir=cache_dir,
            endpoint=endpoint,
            token=token if token else False,
            allow_patterns=[_literal(p) for p in paths],
            max_workers=workers,
            library_name="vllm-hpc",
        )


def _literal(path: str) -> str:
    """An fnmatch pattern matching ``path`` only (``[``, ``*``, ``?`` escaped)."""
    return "".join(f"[{c}]" if c in "[]*?" else c for c in path)
