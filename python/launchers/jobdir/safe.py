"""Trusting a directory or file on shared storage: it is ours, private, and no symlink.

A job root, a job directory and everything in them are trusted only when they belong
to the user running vllm-hpc and nobody else can write them (a directory another user
can write lets them swap ``plan.json``, plant ``leader.json`` or a known key). Files with
secrets or state are opened with ``O_NOFOLLOW``, so a planted symlink is never followed.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from launchers.errors import InputError

EXISTS_FIX = "an earlier job's directory: remove it, or use another job root"


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


def make_dirs(path: str | Path) -> Path:
    """``mkdir -p`` with every directory it creates 0700 (``Path.mkdir`` gives the
    parents the umask's mode, group-writable under ``umask 002``)."""
    target = Path(path)
    missing: list[Path] = []
    for p in (target, *target.parents):
        if os.path.lexists(p):
            break
        missing.append(p)
    for p in reversed(missing):
        # Made meanwhile (another rank): checked by the caller where it matters.
        with contextlib.suppress(FileExistsError):
            os.mkdir(p, 0o700)
    return target


def private_dir(path: str | Path, what: str) -> Path:
    """A directory of ours only we can write: created 0700 when missing (parents too),
    checked (``check_private``) when it is there. An empty one of ours that others can
    write (a fresh volume, e.g. a Kubernetes emptyDir, is 0777; mount points in it do not
    count) is closed to 0700 first: empty after the chmod, nothing was planted in it."""
    target = make_dirs(path)
    _close_if_empty(target)
    info = check_private(target, what)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(
            f"{what}: {target} is not a directory", fix="remove it or use another path"
        )
    return target


def _close_if_empty(path: Path) -> None:
    try:
        fd = open_nofollow(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # a symlink or no directory: check_private says which
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return
        if _has_entries(fd, info.st_dev):
            return  # not ours alone: check_private refuses it
        os.fchmod(fd, 0o700)
        if _has_entries(fd, info.st_dev):  # written between the look and the chmod
            os.fchmod(fd, stat.S_IMODE(info.st_mode))
    finally:
        os.close(fd)


def _has_entries(fd: int, dev: int) -> bool:
    """Whether the directory holds anything but mount points (a Kubernetes Secret
    mounted into the volume is one: only root mounts, no other user plants one)."""
    with os.scandir(os.dup(fd)) as entries:
        return any(e.stat(follow_symlinks=False).st_dev == dev for e in entries)


def new_private_dir(path: str | Path, what: str, *, reuse: bool = False) -> Path:
    """A directory made now, 0700, for a new job: one that is already there is refused
    (an earlier job's, or planted), unless ``reuse`` (a requeued run of the same job,
    whose directory is ours) and it passes ``check_private``. Its parent is checked."""
    target = Path(path)
    private_dir(target.parent, "job root")
    try:
        os.mkdir(target, 0o700)
    except FileExistsError:
        if not reuse:
            raise UnsafePathError(
                f"{what}: {target} already exists for a new job",
                fix=EXISTS_FIX,
            ) from None
        return private_dir(target, what)
    return target


def create_private_file(path: str | Path, text: str) -> bool:
    """Write ``text`` to a new file (0600) made with ``O_EXCL|O_NOFOLLOW``; False when
    something is already at ``path`` (nothing written, nothing followed)."""
    try:
        fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return True


def write_output(path: str | Path, text: str, what: str) -> None:
    """Write a file the user named (``plan --out``, ``render -o``) without following a
    symlink planted at its name and without writing into another user's file (a
    directory others can write, such as /tmp, may hold either)."""
    try:
        fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafePathError(
                f"{what}: {path} is a symlink", fix="remove it, or write to another path"
            ) from None
        raise exc
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        info = os.fstat(fh.fileno())
        if info.st_uid != os.geteuid() or not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(
                f"{what}: {path} is not a file of yours (owned by uid {info.st_uid})",
                fix="remove it, or write to another path",
            )
        fh.truncate(0)
        fh.write(text)
