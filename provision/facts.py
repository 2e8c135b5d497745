"""Facts about hosts, parsed by pure functions from text the boundaries read.

Tested on recorded outputs; the boundary modules only fetch the text.
"""

from __future__ import annotations

from dataclasses import dataclass

from provision.model import Accel


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
