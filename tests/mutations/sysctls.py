"""A.1 kernel sysctls (provision/verify/suite/check_sysctl.py): a runtime value, or the value
the next boot applies (`systemd-sysctl --cat-config`, the last assignment winning)."""

from __future__ import annotations

from tests.mutations import Edit, content, mutation, replace, sysctl
from tests.mutations.filesystem import WORKER, kubeadm_node
from tests.recording import Recording

OURS = "# /etc/sysctl.d/60-provision-hardening.conf\n"
SYSCTL_CONF = "# /etc/sysctl.d/99-sysctl.conf\n"  # /etc/sysctl.conf: read last, so it wins
PROTECT_LINKS = "# /etc/sysctl.d/99-protect-links.conf\n"


def persisted(key: str, old: str, new: str) -> Edit:
    """Change the value our sysctl.d file persists."""
    return replace("verbs", "sysctl-config", f"\n{key} = {old}\n", f"\n{key} = {new}\n")


def unpersisted(key: str, value: str) -> Edit:
    """Drop our sysctl.d file's line for the key (the runtime value stays)."""
    return replace("verbs", "sysctl-config", f"\n{key} = {value}\n", "\n")


def override(key: str, value: str, file: str = SYSCTL_CONF) -> Edit:
    """A later file assigns the key: it wins at the next boot."""
    return replace("verbs", "sysctl-config", file, f"{file}{key} = {value}\n")


# The recorded node made a Kubernetes worker (kubelet sysctls, containerd's CRI, its port).
k8s_node = kubeadm_node()
K8S = WORKER


def no_br_netfilter(rec: Recording) -> None:
    """br_netfilter not loaded: gone from /proc/modules, and its net.bridge.* keys with it."""
    rec.content("/proc/modules", "br_netfilter 36864 0 - Live 0x0000000000000000\n", "")
    rec.content("/proc/modules", "bridge 294912 1 br_netfilter, Live", "bridge 294912 0 - Live")
    part = rec.part("verbs", "sysctl")
    lines = part["stdout"].splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith("net.bridge.")]
    assert len(kept) < len(lines), "sysctl -a has no net.bridge keys"
    part["stdout"] = "".join(kept)


MUTATIONS = [
    mutation("HN-SYS-01", "kptr_restrict 1", sysctl("kernel.kptr_restrict", "1")),
    mutation(
        "HN-SYS-01", "kptr_restrict set but not persisted", unpersisted("kernel.kptr_restrict", "2")
    ),
    mutation("HN-SYS-02", "dmesg_restrict 0", sysctl("kernel.dmesg_restrict", "0")),
    mutation("HN-SYS-03", "bpf_jit_harden 1", sysctl("net.core.bpf_jit_harden", "1")),
    mutation(
        "HN-SYS-03", "bpf_jit_harden persisted 0", persisted("net.core.bpf_jit_harden", "2", "0")
    ),
    mutation("HN-SYS-04", "tcp_syncookies 0", sysctl("net.ipv4.tcp_syncookies", "0")),
    mutation(
        "HN-SYS-05", "unprivileged_bpf_disabled 0", sysctl("kernel.unprivileged_bpf_disabled", "0")
    ),
    mutation(
        "HN-SYS-05",
        "unprivileged_bpf_disabled 0 in a later file",
        override("kernel.unprivileged_bpf_disabled", "0"),
    ),
    mutation("HN-SYS-06", "ptrace_scope 1", sysctl("kernel.yama.ptrace_scope", "1")),
    mutation(
        "HN-SYS-07",
        "max_user_namespaces 0",
        sysctl("user.max_user_namespaces", "0"),
        also="HN-DKRL-08",
    ),
    mutation(
        "HN-SYS-07",
        "max_user_namespaces 0 in a later file (KSPP's)",
        override("user.max_user_namespaces", "0"),
    ),
    mutation(
        "HN-SYS-08",
        "unprivileged_userns_clone 0",
        sysctl("kernel.unprivileged_userns_clone", "0"),
        also="HN-DKRL-08",
    ),
    mutation(
        "HN-SYS-08",
        "unprivileged_userns_clone persisted 0",
        persisted("kernel.unprivileged_userns_clone", "1", "0"),
    ),
    mutation("HN-SYS-09", "ip_forward 0 on a rootful node", sysctl("net.ipv4.ip_forward", "0")),
    mutation(
        "HN-SYS-10",
        "bridge-nf-call-iptables 0",
        sysctl("net.bridge.bridge-nf-call-iptables", "0"),
    ),
    mutation("HN-SYS-10", "br_netfilter not loaded", no_br_netfilter),
    mutation(
        "HN-SYS-11",
        "modules_disabled 1 before overlay loaded",
        content("/proc/modules", "overlay 163840 0 - Live 0x0000000000000000\n", ""),
        setup=sysctl("kernel.modules_disabled", "1"),
    ),
    mutation("HN-SYS-12", "kexec_load_disabled 0", sysctl("kernel.kexec_load_disabled", "0")),
    mutation("HN-SYS-13", "perf_event_paranoid 1", sysctl("kernel.perf_event_paranoid", "1")),
    mutation(
        "HN-SYS-13",
        "perf_event_paranoid 1 in a later file",
        override("kernel.perf_event_paranoid", "1"),
    ),
    mutation("HN-SYS-14", "ldisc_autoload 1", sysctl("dev.tty.ldisc_autoload", "1")),
    mutation(
        "HN-SYS-15",
        "legacy_tiocsti 1 on a kernel that has it",
        sysctl("dev.tty.legacy_tiocsti", "1"),
        setup=sysctl("dev.tty.legacy_tiocsti", "0"),
    ),
    mutation(
        "HN-SYS-16",
        "io_uring_disabled 0 on a kernel that has it",
        sysctl("kernel.io_uring_disabled", "0"),
        setup=sysctl("kernel.io_uring_disabled", "2"),
    ),
    mutation("HN-SYS-17", "unprivileged_userfaultfd 1", sysctl("vm.unprivileged_userfaultfd", "1")),
    mutation("HN-SYS-18", "randomize_va_space 1", sysctl("kernel.randomize_va_space", "1")),
    mutation("HN-SYS-19", "protected_symlinks 0", sysctl("fs.protected_symlinks", "0")),
    mutation("HN-SYS-20", "protected_fifos 1", sysctl("fs.protected_fifos", "1")),
    mutation(
        "HN-SYS-20",
        "protected_fifos 1 from procps' 99-protect-links.conf",
        override("fs.protected_fifos", "1", PROTECT_LINKS),
    ),
    mutation("HN-SYS-21", "suid_dumpable 2", sysctl("fs.suid_dumpable", "2")),
    mutation("HN-SYS-22", "sysrq 438 (Debian's default)", sysctl("kernel.sysrq", "438")),
    mutation(
        "HN-SYS-22",
        "sysrq=438 uncommented in /etc/sysctl.conf",
        replace("verbs", "sysctl-config", "\n#kernel.sysrq=438\n", "\nkernel.sysrq=438\n"),
    ),
    mutation(
        "HN-SYS-23",
        "panic_on_oops 0",
        sysctl("kernel.panic_on_oops", "0"),
        also="HN-SYS-26",
        setup=k8s_node,
        roles=K8S,
    ),
    mutation(
        "HN-SYS-23",
        "panic persisted 0",
        persisted("kernel.panic", "10", "0"),
        also="HN-SYS-26",
        setup=k8s_node,
        roles=K8S,
    ),
    mutation("HN-SYS-24", "mmap_min_addr 4096", sysctl("vm.mmap_min_addr", "4096")),
    mutation(
        "HN-SYS-25",
        "accept_redirects 1",
        sysctl("net.ipv4.conf.all.accept_redirects", "1"),
    ),
    mutation(
        "HN-SYS-25",
        "secure_redirects=1 uncommented in /etc/sysctl.conf",
        replace(
            "verbs",
            "sysctl-config",
            "\n# net.ipv4.conf.all.secure_redirects = 1\n",
            "\nnet.ipv4.conf.all.secure_redirects = 1\n",
        ),
    ),
    mutation(
        "HN-SYS-26",
        "overcommit_memory 2",
        sysctl("vm.overcommit_memory", "2"),
        setup=k8s_node,
        roles=K8S,
    ),
    mutation(
        "HN-SYS-26",
        "root_maxkeys not persisted",
        unpersisted("kernel.keys.root_maxkeys", "1000000"),
        setup=k8s_node,
        roles=K8S,
    ),
    mutation("HN-SYS-27", "rp_filter 2 (loose)", sysctl("net.ipv4.conf.all.rp_filter", "2")),
    mutation(
        "HN-SYS-28",
        "log_martians 0 for new interfaces",
        sysctl("net.ipv4.conf.default.log_martians", "0"),
    ),
    mutation("HN-SYS-29", "accept_ra 1", sysctl("net.ipv6.conf.all.accept_ra", "1")),
    mutation("HN-SYS-30", "tcp_timestamps 0", sysctl("net.ipv4.tcp_timestamps", "0")),
    mutation(
        "HN-SYS-31",
        "ip_unprivileged_port_start 0",
        sysctl("net.ipv4.ip_unprivileged_port_start", "0"),
    ),
    mutation(
        "HN-SYS-31",
        "ping_group_range opened in /etc/sysctl.conf",
        override("net.ipv4.ping_group_range", "0 2147483647"),
    ),
    mutation("HN-SYS-32", "mmap_rnd_bits 28", sysctl("vm.mmap_rnd_bits", "28")),
]
