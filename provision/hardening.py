"""Hardening decisions in one place: the kernel command line and the sysctl set.

The seed documents' four sysctls are the floor; the hardening issue completes the set and records
every deliberate deviation from KSPP/CIS here, next to the value.
"""

from __future__ import annotations

from provision.model import Node

# Direct kernel boot: the command line lives in the domain XML, there is no GRUB to protect.
# KSPP "kernel command line options" (HN-BOOT-02), audit from boot (HN-BOOT-05), and lockdown
# `integrity` rather than `confidentiality`, which would break eBPF security agents (HN-BOOT-03).
KERNEL_CMDLINE: tuple[str, ...] = (
    "root=/dev/vda",
    "ro",
    "rootfstype=ext4",
    "console=ttyS0,115200n8",
    "net.ifnames=0",
    "slab_nomerge",
    "init_on_alloc=1",
    "init_on_free=1",
    "page_alloc.shuffle=1",
    "pti=on",
    "randomize_kstack_offset=on",
    "vsyscall=none",
    "debugfs=off",
    "lockdown=integrity",
    "audit=1",
    "audit_backlog_limit=8192",
)

# name -> value. A leading "-" in the name (systemd-sysctl syntax) means "the kernel may lack it".
BASE_SYSCTLS: tuple[tuple[str, str], ...] = (
    ("kernel.kptr_restrict", "2"),
    ("kernel.dmesg_restrict", "1"),
    ("net.core.bpf_jit_harden", "2"),
    ("net.ipv4.tcp_syncookies", "1"),
)


def kernel_cmdline(node: Node) -> str:
    return " ".join((*KERNEL_CMDLINE, *node.cmdline_extra))


def sysctls(node: Node) -> tuple[tuple[str, str], ...]:
    """The node's sysctl set: the base set with the inventory's overrides applied, in order."""
    merged = dict(BASE_SYSCTLS)
    merged.update(node.sysctl)
    return tuple(merged.items())
