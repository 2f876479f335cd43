"""How vLLM reads the checkpoint, from the file system that holds it: a pure decision.

vLLM (0.32, 0.33: ``safetensors_weights_iterator`` in
vllm/model_executor/model_loader/weight_utils.py) turns safetensors prefetch on by itself
only for NFS and Lustre, which it recognises by the mount type in /proc/mounts, and only
when the checkpoint fits in 90 % of the available RAM. The other parallel file systems
of HPC sites (GPFS / Spectrum Scale, BeeGFS, WekaFS, CephFS) get lazy memory-mapped
reads, the slow random-read pattern on them: for those the node passes
``--safetensors-load-strategy prefetch`` (the checkpoint read ahead into the page cache),
unless the user chose a strategy or a load format, or the target vLLM lacks the flag.

The node knows the file system (``runtime.fsprobe``); this module only decides, from the
statfs(2) ``f_type`` magic number and the mount's type name, the plan's target version
and the user's ``vllm serve`` arguments. ``ServeStart.loading`` carries the decision into
the argv (a typed update, never argv surgery).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from launchers.plan.commands import LOAD_STRATEGY_FLAG, LoadStrategy, first_release, supports

# statfs(2) f_type magic numbers. Kernel file systems: include/uapi/linux/magic.h of Linux
# (EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC, BTRFS_SUPER_MAGIC, TMPFS_MAGIC, OVERLAYFS_SUPER_MAGIC,
# NFS_SUPER_MAGIC, CEPH_SUPER_MAGIC, SQUASHFS_MAGIC, SMB2_SUPER_MAGIC, CIFS_SUPER_MAGIC) and
# fs/fuse/inode.c (FUSE_SUPER_MAGIC). Out-of-tree ones, as GNU coreutils' `stat -f` names
# them (src/stat.c, human_fstype): S_MAGIC_GPFS 0x47504653 (ASCII "GPFS", IBM Spectrum
# Scale), S_MAGIC_LUSTRE 0x0BD00BD0 (Lustre's LL_SUPER_MAGIC), S_MAGIC_FHGFS 0x19830326
# (BeeGFS, formerly FhGFS), S_MAGIC_ZFS 0x2FC12FC1. WekaFS publishes no magic number (its
# client is proprietary): it is recognised by its mount type, `wekafs` (`mount -t wekafs`).
GPFS_MAGIC = 0x47504653
CEPH_MAGIC = 0x00C36400
BEEGFS_MAGIC = 0x19830326
NFS_MAGIC = 0x6969
LUSTRE_MAGIC = 0x0BD00BD0
FUSE_MAGIC = 0x65735546
MAGIC_NAMES: dict[int, str] = {
    GPFS_MAGIC: "GPFS",
    CEPH_MAGIC: "CephFS",
    BEEGFS_MAGIC: "BeeGFS",
    NFS_MAGIC: "NFS",
    LUSTRE_MAGIC: "Lustre",
    FUSE_MAGIC: "FUSE",
    0xEF53: "ext2/ext3/ext4",
    0x58465342: "XFS",
    0x9123683E: "Btrfs",
    0x01021994: "tmpfs",
    0x794C7630: "overlay",
    0x73717368: "squashfs",
    0x2FC12FC1: "ZFS",
    0xFF534D42: "CIFS",
    0xFE534D42: "SMB2",
}
# Mount type names (/proc/self/mounts, third field) of the same file systems: what tells
# WekaFS, and CephFS or BeeGFS through FUSE (ceph-fuse, beegfs-fuse), apart.
MOUNT_NAMES: dict[str, str] = {
    "gpfs": "GPFS",
    "ceph": "CephFS",
    "fuse.ceph-fuse": "CephFS",
    "beegfs": "BeeGFS",
    "fhgfs": "BeeGFS",
    "wekafs": "WekaFS",
    "nfs": "NFS",
    "nfs4": "NFS",
    "lustre": "Lustre",
}
PREFETCH = frozenset({"GPFS", "CephFS", "BeeGFS", "WekaFS"})  # vLLM does not detect these
VLLM_DETECTS = frozenset({"NFS", "Lustre"})  # vLLM prefetches by itself (when it fits)
FITS_FRACTION = 0.9  # vLLM's own rule: the checkpoint within 90 % of the available RAM
SAFETENSORS_FORMATS = frozenset({"auto", "safetensors"})  # read by that iterator


@dataclass(frozen=True)
class FsFacts:
    """What the node found out about where the checkpoint is (``runtime.fsprobe``).
    ``where`` is None when the model is no local path (``why`` says so); ``magic`` is
    statfs's f_type, ``mount_type`` the mount's type name, each None when unknown."""

    where: str | None
    magic: int | None = None
    mount_type: str | None = None
    checkpoint_bytes: int | None = None
    available_bytes: int | None = None
    why: str = ""
    label: str = ""  # how the log names it: "model in <where>" unless given


@dataclass(frozen=True)
class LoadDecision:
    strategy: LoadStrategy | None
    reason: str


def fs_name(facts: FsFacts) -> str:
    """'GPFS (statfs 0x47504653)', 'WekaFS (mount type wekafs, statfs 0x...)'."""
    by_mount = MOUNT_NAMES.get(facts.mount_type or "")
    by_magic = MAGIC_NAMES.get(facts.magic) if facts.magic is not None else None
    magic = f"statfs 0x{facts.magic:08x}" if facts.magic is not None else "statfs unknown"
    if by_mount and by_mount != by_magic:
        return f"{by_mount} (mount type {facts.mount_type}, {magic})"
    name = by_magic or (facts.mount_type or "an unknown file system")
    return f"{name} ({magic})"


def kind(facts: FsFacts) -> str | None:
    """The file system's name when it is one this module knows, else None."""
    by_mount = MOUNT_NAMES.get(facts.mount_type or "")
    if by_mount:
        return by_mount
    return MAGIC_NAMES.get(facts.magic) if facts.magic is not None else None


def user_choice(args: Sequence[str]) -> str | None:
    """The user's own choice among ``args`` that settles loading: their
    ``--safetensors-load-strategy``, or a ``--load-format`` that is not safetensors."""
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if not name.startswith("--"):
            continue
        name = "--" + name[2:].replace("_", "-")
        if not eq:
            value = args[i + 1] if i + 1 < len(args) else ""
        if name == LOAD_STRATEGY_FLAG:
            return f"{LOAD_STRATEGY_FLAG} {value}".rstrip()
        if name == "--load-format" and value not in SAFETENSORS_FORMATS:
            return f"--load-format {value}".rstrip()
    return None


def decide_loading(facts: FsFacts, version: str, args: Sequence[str]) -> LoadDecision:
    """Whether the node passes ``--safetensors-load-strategy prefetch``, and why (one
    line for the node's log)."""
    if facts.where is None:
        return LoadDecision(None, f"model {facts.why}: no change")
    where = f"{facts.label or f'model in {facts.where}'} on {fs_name(facts)}"
    found = kind(facts)
    if found in VLLM_DETECTS:
        return LoadDecision(None, f"{where}: vLLM prefetches there by itself: no change")
    if found not in PREFETCH:
        return LoadDecision(None, f"{where}: no change")
    chosen = user_choice(args)
    if chosen:
        return LoadDecision(None, f"{where}: the arguments choose {chosen}: no change")
    if not supports("safetensors_load_strategy", version):
        need = first_release("safetensors_load_strategy")
        return LoadDecision(
            None, f"{where}: vLLM {version} has no {LOAD_STRATEGY_FLAG} (>= {need}): no change"
        )
    size, free = facts.checkpoint_bytes, facts.available_bytes
    if size and free is not None and size > FITS_FRACTION * free:
        return LoadDecision(
            None,
            f"{where}: the checkpoint ({size / 2**30:.1f} GiB) exceeds 90% of the available "
            f"RAM ({free / 2**30:.1f} GiB): no change",
        )
    return LoadDecision("prefetch", f"{where}: {LOAD_STRATEGY_FLAG} prefetch")
