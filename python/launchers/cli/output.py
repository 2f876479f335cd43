"""The one writer of the files a user names (``--out``, ``--output``, ``--output-dir``)."""

from __future__ import annotations

import os


def write_file(flag: str, path: str, text: str, *, make_parent: bool = False) -> None:
    """Write an output file the user named; a path that cannot be written is bad input.
    ``make_parent``: make a missing directory (``plan --out``, which the batch templates
    point into a job directory); elsewhere a missing directory is the user's mistake."""
    from launchers.errors import InputError
    from launchers.jobdir import ensure_dir
    from launchers.jobdir.safe import write_output

    parent = os.path.dirname(os.path.abspath(path))
    try:
        # A parent that exists as a file is left to open(), which names it
        # ("Not a directory") where mkdir would only say "File exists".
        if make_parent and not os.path.lexists(parent):
            ensure_dir(parent)
        write_output(path, text, flag)  # never through a planted symlink
    except OSError as exc:
        raise InputError(
            f"{flag}: cannot write {path}: {exc.strerror or exc}", fix="choose a writable path"
        ) from None


__all__ = ["write_file"]
