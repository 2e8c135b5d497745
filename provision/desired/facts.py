"""Facts about hosts, parsed by pure functions from text the boundaries read.

Tested on recorded outputs; the boundary modules only fetch the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from provision.core.model import Accel


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel
    warning: str | None


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The CPU flags from /proc/cpuinfo (the first processor's `flags` line)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def choose_accel(requested: Accel, kvm_device: bool, flags: frozenset[str]) -> AccelChoice:
    """kvm only when /dev/kvm exists and the CPU has vmx or svm.

    A /dev/kvm without those flags (seen on nested cloud machines) hangs a stock guest kernel, so
    `auto` falls back to TCG there; an explicit `kvm` on such a host is an error for the caller.
    """
    usable = kvm_device and bool(flags & {"vmx", "svm"})
    if requested is Accel.KVM:
        return AccelChoice(Accel.KVM, None if usable else _why_not(kvm_device))
    if requested is Accel.QEMU:
        return AccelChoice(Accel.QEMU, None)
    if usable:
        return AccelChoice(Accel.KVM, None)
    return AccelChoice(Accel.QEMU, f"{_why_not(kvm_device)}: using TCG emulation (slow)")


def _why_not(kvm_device: bool) -> str:
    if not kvm_device:
        return "KVM is unusable: /dev/kvm is missing"
    return "KVM is unusable: the CPU flags show neither vmx nor svm"


def block_device_is_nvme(sysfs: Path, major: int, minor: int) -> tuple[bool, str]:
    """Whether the block device major:minor sits on NVMe, from a sysfs tree.

    Follows partitions to their disk and device-mapper/md devices to their slaves (LVM, LUKS,
    RAID): every underlying disk must be NVMe. Returns (answer, the device names seen).
    """
    start = sysfs / "dev" / "block" / f"{major}:{minor}"
    if not start.exists():
        return False, f"no sysfs entry for block device {major}:{minor}"
    names: list[str] = []
    ok = _nvme(start.resolve(), sysfs, names)
    return ok, ", ".join(names)


def _nvme(dev: Path, sysfs: Path, names: list[str]) -> bool:
    if (dev / "partition").exists():
        dev = dev.parent  # a partition's directory lives inside its disk's
    slaves = sorted((dev / "slaves").iterdir()) if (dev / "slaves").is_dir() else []
    if slaves:
        return all(
            _nvme((sysfs / "class" / "block" / s.name).resolve(), sysfs, names) for s in slaves
        )
    names.append(dev.name)
    transport = dev / "device" / "transport"
    if transport.exists() and transport.read_text().strip() in ("pcie", "tcp", "rdma", "fc"):
        return dev.name.startswith("nvme")
    return dev.name.startswith("nvme")


def untraversable(
    path: Path, modes: dict[Path, tuple[int, int, int]], uid: int, gids: set[int]
) -> Path | None:
    """The first directory on `path` that user uid (in gids) cannot traverse, or None.

    `modes` maps each ancestor to (st_mode, st_uid, st_gid), read by the caller.
    """
    for directory in [*reversed(path.parents), path]:
        mode, owner, group = modes[directory]
        if uid == 0:
            continue
        if owner == uid:
            bit = 0o100
        elif group in gids:
            bit = 0o010
        else:
            bit = 0o001
        if not mode & bit:
            return directory
    return None
