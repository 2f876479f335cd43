"""Trusting a directory or file on shared storage: it is ours, private, and no symlink.

A job root, a job directory and everything in them are trusted only when they belong
to the user running vllm-hpc and nobody else can write them (a directory another user
can write lets them swap ``plan.json``, plant ``leader.json`` or a known key). Files with
secrets or state are opened with ``O_NOFOLLOW``, so a planted symlink is never followed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from launchers.errors import InputError


class UnsafePathError(InputError):
    """A path on shared storage that another user owns or can change."""


def _describe(mode: int) -> str:
    return stat.filemode(mode)


def check_private(path: str | Path, what: str) -> os.stat_result:
    """The ``lstat`` of ``path`` when it is not a symlink, is owned by this user and is
    neither group- nor world-writable; else UnsafePathError naming ``what`` and the fix."""
    info = os.lstat(path)
    uid = os.geteuid()
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError(
            f"{what}: {path} is a symlink", fix="use the real path, owned by you (chmod 700)"
        )
    if info.st_uid != uid:
        raise UnsafePathError(
            f"{what}: {path} is owned by uid {info.st_uid}, not by you (uid {uid})",
            fix="use a directory of your own (mkdir -m 700)",
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePathError(
            f"{what}: {path} can be written by other users ({_describe(info.st_mode)})",
            fix=f"chmod go-w {path}",
        )
    return info


def open_nofollow(path: str | Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """``os.open`` that refuses to follow a symlink at the last component."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def read_private_text(path: str | Path, what: str) -> str:
    """The text of a file of ours that only we can read (a key, a token): a symlink, a
    file of another user, or one readable by group or others is refused."""
    fd = open_nofollow(path)
    with os.fdopen(fd, encoding="utf-8") as fh:
        info = os.fstat(fh.fileno())
        if info.st_uid != os.geteuid():
            raise UnsafePathError(
                f"{what}: {path} is owned by uid {info.st_uid}, not by you",
                fix="use a file of your own (chmod 600)",
            )
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UnsafePathError(
                f"{what}: {path} can be read by other users ({_describe(info.st_mode)})",
                fix=f"chmod 600 {path}",
            )
        return fh.read()
