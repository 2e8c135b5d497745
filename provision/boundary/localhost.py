"""Reads facts about this machine (the local hypervisor) for the pure checks in `facts`."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from provision.desired import facts

SYSFS = Path("/sys")


def cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def kvm_device() -> bool:
    return os.path.exists("/dev/kvm")


def nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def is_nvme(path: Path) -> tuple[bool, str]:
    st = os.stat(nearest_existing(path))
    return facts.block_device_is_nvme(SYSFS, os.major(st.st_dev), os.minor(st.st_dev))


def qemu_cannot_traverse(path: Path, user: str = "libvirt-qemu") -> Path | None:
    """The first directory on `path` the QEMU user cannot enter, or None."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None  # no such user here: libvirt runs QEMU as someone else, nothing to check
    gids = set(os.getgrouplist(user, pw.pw_gid))
    modes = {}
    for d in [*path.parents, path]:
        if d.exists():
            st = os.stat(d)
            modes[d] = (st.st_mode, st.st_uid, st.st_gid)
        else:
            modes[d] = (0o755, 0, 0)  # libvirt's pool build creates it
    return facts.untraversable(path, modes, pw.pw_uid, gids)
