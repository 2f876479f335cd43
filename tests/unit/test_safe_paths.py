"""jobdir.safe: what vllm-hpc trusts on shared storage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launchers.jobdir.safe import UnsafePathError, check_private, read_private_text
from launchers.spec.secretenv import split


def test_a_private_directory_is_trusted(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    assert check_private(tmp_path, "job root").st_uid == os.geteuid()


def test_a_group_writable_directory_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o770)
    with pytest.raises(UnsafePathError, match=r"job root: .* can be written by other users"):
        check_private(tmp_path, "job root")


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafePathError, match="is a symlink"):
        check_private(tmp_path / "link", "job directory")


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k\n")
    key.chmod(0o644)
    with pytest.raises(UnsafePathError, match=r"chmod 600"):
        read_private_text(key, "--api-key-file")
    key.chmod(0o600)
    assert read_private_text(key, "--api-key-file") == "k\n"


def test_a_key_through_a_symlink_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k\n")
    key.chmod(0o600)
    (tmp_path / "link").symlink_to(key)
    with pytest.raises(OSError):
        read_private_text(tmp_path / "link", "api key")


def test_secret_env_is_split_by_name() -> None:
    plain, secret = split({"HF_TOKEN": "t", "NCCL_DEBUG": "INFO", "WANDB_API_KEY": "w"})
    assert plain == {"NCCL_DEBUG": "INFO"}
    assert secret == {"HF_TOKEN": "t", "WANDB_API_KEY": "w"}
