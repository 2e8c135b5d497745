"""Accelerator choice from recorded /proc/cpuinfo text."""

from __future__ import annotations

from provision.core.model import Accel
from provision.desired.facts import choose_accel, cpu_flags

# Recorded from this CI machine: /dev/kvm exists but the CPU shows no vmx/svm.
NO_VMX = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep hypervisor\n"
WITH_VMX = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr vmx pae\n"


def test_flags_parsed() -> None:
    assert "hypervisor" in cpu_flags(NO_VMX) and "vmx" in cpu_flags(WITH_VMX)
    assert cpu_flags("") == frozenset()


def test_auto_picks_kvm_only_with_device_and_flags() -> None:
    assert choose_accel(Accel.AUTO, True, cpu_flags(WITH_VMX)).accel is Accel.KVM
    no_flags = choose_accel(Accel.AUTO, True, cpu_flags(NO_VMX))
    assert no_flags.accel is Accel.QEMU and no_flags.warning and "vmx" in no_flags.warning
    no_dev = choose_accel(Accel.AUTO, False, cpu_flags(WITH_VMX))
    assert no_dev.accel is Accel.QEMU and no_dev.warning and "/dev/kvm" in no_dev.warning


def test_explicit_kvm_on_unusable_host_warns_for_preflight() -> None:
    choice = choose_accel(Accel.KVM, True, cpu_flags(NO_VMX))
    assert choice.accel is Accel.KVM and choice.warning is not None
    assert choose_accel(Accel.QEMU, True, cpu_flags(WITH_VMX)).accel is Accel.QEMU
