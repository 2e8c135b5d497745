"""Hardening decisions in one place: kernel command line, sysctls per role, firewall ports, and
every deliberate deviation from KSPP/CIS/DEVSEC with its reason.

Pure data and small functions. The seed templates render what this module decides, and the
verification suite imports the same tables, so a value and its check cannot drift apart.
Check ids (HN-*) refer to the hardening catalogue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from provision.core.model import DockerMode, Network, NetworkMode, Node, Role

# The verifier's login: a locked account whose only sudo right is FACTS_HELPER.
VERIFIER_USER = "verifier"
# The read-only facts helper on the node (a fixed set of verbs; see cloudinit/verify-facts.sh.j2).
FACTS_HELPER = "/usr/local/libexec/provision/verify-facts"
# The only paths the helper's path verbs (`stat`, `stat-ids`, `exists`) answer for: the ones the
# suite can only name at run time (every other path it reads comes from the snapshot). An entry
# ending in "/" stands for everything below that directory; any other entry is one exact path.
FACTS_HELPER_PATHS: tuple[str, ...] = (
    "/var/lib/docker/",  # the rootful data root: /var/lib/docker/UID.GID under userns-remap
    "/etc/docker/",  # TLS files named in /etc/docker/daemon.json (tlscacert, tlscert, tlskey)
    # kubelet.service and its drop-ins (`systemctl show -p FragmentPath -p DropInPaths`): ours
    # in /etc, the package's in /lib (or /usr/lib, as some systemd versions report it).
    "/etc/systemd/system/kubelet.service",
    "/etc/systemd/system/kubelet.service.d/",
    "/lib/systemd/system/kubelet.service",
    "/lib/systemd/system/kubelet.service.d/",
    "/usr/lib/systemd/system/kubelet.service",
    "/usr/lib/systemd/system/kubelet.service.d/",
)
SSH_PORT = 22

# Direct kernel boot: the command line lives in the domain XML, there is no GRUB to protect.
# KSPP "kernel command line options" (HN-BOOT-02), audit from boot (HN-BOOT-05), and lockdown
# `integrity` rather than `confidentiality`, which would break eBPF security agents (HN-BOOT-03).
# module.sig_enforce=1 (HN-BOOT-04): Debian signs its modules, so overlay and br_netfilter load;
# only out-of-tree/DKMS modules are refused.
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
    "iommu.strict=1",
    "iommu.passthrough=0",
    "hardened_usercopy=1",
    "kfence.sample_interval=100",
    "module.sig_enforce=1",
    "lockdown=integrity",
    "audit=1",
    "audit_backlog_limit=8192",
)


def kernel_cmdline(node: Node) -> str:
    return " ".join((*KERNEL_CMDLINE, *node.cmdline_extra))


# --- node roles ------------------------------------------------------------------------------


def is_k8s(node: Node) -> bool:
    return any(r in (Role.K8S_CONTROL_PLANE, Role.K8S_WORKER) for r in node.roles)


def is_rootful(node: Node) -> bool:
    return node.docker is DockerMode.ROOTFUL


def has_rootless(node: Node) -> bool:
    """ROOTLESS and ROOTFUL both run a rootless daemon for the workload user."""
    return node.docker is not DockerMode.NONE


@dataclass(frozen=True)
class Feature:
    """Something a node runs that cannot work without sysctl values of its own: the role rows of
    SYSCTLS name the features they exist for, so an override that breaks one can be refused."""

    name: str
    present: Callable[[Node], bool]


ROOTLESS_DOCKER = Feature("rootless Docker", has_rootless)
USERNS_REMAP = Feature("the system Docker daemon's userns-remap", is_rootful)
DOCKER_BRIDGE = Feature("the system Docker daemon's bridge network", is_rootful)
KUBERNETES = Feature("Kubernetes", is_k8s)
KUBELET = Feature("the kubelet (protectKernelDefaults)", is_k8s)

# rootlesskit, userns-remap and container runtimes create user namespaces (HN-SYS-07/08).
USERNS_USERS = (ROOTLESS_DOCKER, USERNS_REMAP, KUBERNETES)
# Routed container/pod traffic: the system daemon's bridge or Kubernetes (HN-SYS-09).
FORWARD_USERS = (DOCKER_BRIDGE, KUBERNETES)


def _any(features: tuple[Feature, ...]) -> Callable[[Node], bool]:
    return lambda node: any(f.present(node) for f in features)


def needs_userns(node: Node) -> bool:
    return _any(USERNS_USERS)(node)


def forwards(node: Node) -> bool:
    return _any(FORWARD_USERS)(node)


def _all(node: Node) -> bool:
    return True


def _not(pred: Callable[[Node], bool]) -> Callable[[Node], bool]:
    return lambda node: not pred(node)


# --- sysctls ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sysctl:
    """One sysctl of the hardening set, rendered on the nodes `applies` selects.

    A leading "-" in `key` is systemd-sysctl syntax: the key may be absent on this kernel
    (Debian 12 runs 6.1) and is then skipped, never an error.

    A role row (`needed_by`, made by `_needed`) is not hardening but a requirement: the features
    it names fail without its value, so the inventory may not override it with another one
    (config.safety). `minimum`: any integer from it up works too.
    """

    key: str
    value: str
    applies: Callable[[Node], bool]
    check_id: str
    source: str
    needed_by: tuple[Feature, ...] = ()
    minimum: int | None = None

    @property
    def name(self) -> str:
        return self.key.removeprefix("-")


def _needed(
    key: str,
    value: str,
    features: tuple[Feature, ...],
    check_id: str,
    source: str,
    minimum: int | None = None,
) -> Sysctl:
    """A role row: on the nodes that run any of `features`, which need the value."""
    return Sysctl(key, value, _any(features), check_id, source, features, minimum)


def _both(family: str, leaf: str, value: str, check_id: str, source: str) -> tuple[Sysctl, ...]:
    """net.<family>.conf.{all,default}.<leaf>: existing and future interfaces."""
    return tuple(
        Sysctl(f"net.{family}.conf.{scope}.{leaf}", value, _all, check_id, source)
        for scope in ("all", "default")
    )


# Order matters once: writing net.ipv4.ip_forward resets net.ipv4.conf.all.accept_redirects
# (kernel inet_forward_change), so forwarding comes before the redirect settings.
SYSCTLS: tuple[Sysctl, ...] = (
    Sysctl("kernel.kptr_restrict", "2", _all, "HN-SYS-01", "KSPP"),
    Sysctl("kernel.dmesg_restrict", "1", _all, "HN-SYS-02", "KSPP"),
    Sysctl("net.core.bpf_jit_harden", "2", _all, "HN-SYS-03", "KSPP"),
    Sysctl("net.ipv4.tcp_syncookies", "1", _all, "HN-SYS-04", "DEVSEC-LNX:sysctl-11"),
    Sysctl("kernel.unprivileged_bpf_disabled", "1", _all, "HN-SYS-05", "KSPP"),
    # 2, not KSPP's 3: 3 cannot be undone without a reboot and blocks even root's debuggers.
    Sysctl("kernel.yama.ptrace_scope", "2", _all, "HN-SYS-06", "DEVSEC-LNX:sysctl-35"),
    # KSPP wants 0; rootless Docker and userns-remap cannot run without user namespaces.
    # Any positive limit keeps them working: 0 disables user namespaces even for root.
    _needed("user.max_user_namespaces", "28633", USERNS_USERS, "HN-SYS-07", "Docker docs", 1),
    Sysctl("user.max_user_namespaces", "0", _not(needs_userns), "HN-SYS-07", "KSPP"),
    # Debian-only key; rootlesskit fails with "operation not permitted" at 0.
    # Only unprivileged users need it (root's daemons create namespaces regardless): overriding
    # it breaks rootless Docker alone, wherever the row applies.
    Sysctl(
        "kernel.unprivileged_userns_clone",
        "1",
        needs_userns,
        "HN-SYS-08",
        "Docker docs",
        (ROOTLESS_DOCKER,),
    ),
    Sysctl("kernel.unprivileged_userns_clone", "0", _not(needs_userns), "HN-SYS-08", "KSPP"),
    # Forwarding: the system daemon's bridge and Kubernetes route; rootless forwards inside
    # RootlessKit's own network namespace, so those hosts keep 0.
    _needed("net.ipv4.ip_forward", "1", FORWARD_USERS, "HN-SYS-09", "K8s container-runtimes"),
    Sysctl("net.ipv4.ip_forward", "0", _not(forwards), "HN-SYS-09", "DEVSEC-LNX:sysctl-01"),
    _needed("net.ipv6.conf.all.forwarding", "1", (KUBERNETES,), "HN-SYS-09", "K8s dual-stack"),
    Sysctl("net.ipv6.conf.all.forwarding", "0", _not(is_k8s), "HN-SYS-09", "DEVSEC-LNX:sysctl-19"),
    # Present only once br_netfilter is loaded (modules-load.d; modprobe before applying).
    _needed("net.bridge.bridge-nf-call-iptables", "1", FORWARD_USERS, "HN-SYS-10", "kubeadm"),
    _needed("net.bridge.bridge-nf-call-ip6tables", "1", FORWARD_USERS, "HN-SYS-10", "kubeadm"),
    Sysctl("kernel.kexec_load_disabled", "1", _all, "HN-SYS-12", "KSPP"),
    Sysctl("kernel.perf_event_paranoid", "3", _all, "HN-SYS-13", "KSPP"),
    Sysctl("dev.tty.ldisc_autoload", "0", _all, "HN-SYS-14", "KSPP"),
    Sysctl("-dev.tty.legacy_tiocsti", "0", _all, "HN-SYS-15", "KSPP"),  # kernel >= 6.2
    Sysctl("-kernel.io_uring_disabled", "2", _all, "HN-SYS-16", "KHC/grsec"),  # kernel >= 6.6
    Sysctl("vm.unprivileged_userfaultfd", "0", _all, "HN-SYS-17", "KSPP"),
    Sysctl("kernel.randomize_va_space", "2", _all, "HN-SYS-18", "KSPP"),
    Sysctl("fs.protected_symlinks", "1", _all, "HN-SYS-19", "KSPP"),
    Sysctl("fs.protected_hardlinks", "1", _all, "HN-SYS-19", "KSPP"),
    Sysctl("fs.protected_fifos", "2", _all, "HN-SYS-20", "KSPP"),
    Sysctl("fs.protected_regular", "2", _all, "HN-SYS-20", "KSPP"),
    Sysctl("fs.suid_dumpable", "0", _all, "HN-SYS-21", "KSPP"),
    Sysctl("kernel.sysrq", "0", _all, "HN-SYS-22", "DEVSEC-LNX:sysctl-30"),
    Sysctl("vm.mmap_min_addr", "65536", _all, "HN-SYS-24", "KSPP"),
    *_both("ipv4", "accept_redirects", "0", "HN-SYS-25", "DEVSEC-LNX:sysctl-13"),
    *_both("ipv4", "secure_redirects", "0", "HN-SYS-25", "DEVSEC-LNX:sysctl-14"),
    *_both("ipv4", "send_redirects", "0", "HN-SYS-25", "DEVSEC-LNX:sysctl-15"),
    *_both("ipv4", "accept_source_route", "0", "HN-SYS-25", "DEVSEC-LNX:sysctl-16"),
    *_both("ipv6", "accept_redirects", "0", "HN-SYS-25", "DEVSEC-LNX:sysctl-20"),
    *_both("ipv6", "accept_source_route", "0", "HN-SYS-25", "DEVSEC-LNX:sysctl-20"),
    Sysctl("net.ipv4.icmp_echo_ignore_broadcasts", "1", _all, "HN-SYS-25", "DEVSEC-LNX:sysctl-03"),
    Sysctl(
        "net.ipv4.icmp_ignore_bogus_error_responses", "1", _all, "HN-SYS-25", "DEVSEC-LNX:sysctl-04"
    ),
    *_both("ipv4", "rp_filter", "1", "HN-SYS-27", "DEVSEC-LNX:sysctl-02"),
    *_both("ipv4", "log_martians", "1", "HN-SYS-28", "DEVSEC-LNX:sysctl-17"),
    *_both("ipv6", "accept_ra", "0", "HN-SYS-29", "DEVSEC-LNX:sysctl-21"),
    *_both("ipv6", "autoconf", "0", "HN-SYS-29", "DEVSEC-LNX:sysctl-27"),
    *_both("ipv6", "router_solicitations", "0", "HN-SYS-29", "DEVSEC-LNX:sysctl-26"),
    *_both("ipv6", "dad_transmits", "0", "HN-SYS-29", "DEVSEC-LNX:sysctl-28"),
    *_both("ipv6", "max_addresses", "1", "HN-SYS-29", "DEVSEC-LNX:sysctl-28"),
    # 1, not DEVSEC's 0: 0 disables PAWS and RTT measurement; LYNIS accepts 1.
    Sysctl("net.ipv4.tcp_timestamps", "1", _all, "HN-SYS-30", "LYNIS"),
    Sysctl("net.ipv4.tcp_rfc1337", "1", _all, "HN-SYS-30", "DEVSEC-LNX:sysctl-05"),
    *_both("ipv4", "arp_ignore", "1", "HN-SYS-30", "DEVSEC-LNX:sysctl-08"),
    *_both("ipv4", "arp_announce", "2", "HN-SYS-30", "DEVSEC-LNX:sysctl-09"),
    Sysctl("net.ipv4.icmp_ratelimit", "100", _all, "HN-SYS-30", "DEVSEC-LNX:sysctl-10"),
    Sysctl("net.ipv4.icmp_ratemask", "88089", _all, "HN-SYS-30", "DEVSEC-LNX:sysctl-12"),
    Sysctl("kernel.core_uses_pid", "1", _all, "HN-SYS-32", "OSH"),
    Sysctl("vm.mmap_rnd_bits", "32", _all, "HN-SYS-32", "KHC"),
    Sysctl("vm.mmap_rnd_compat_bits", "16", _all, "HN-SYS-32", "KHC"),
    # The kubelet's protectKernelDefaults (HN-K8S-11) refuses to start unless these equal its
    # own defaults (kubelet setupKernelTunables), so Kubernetes nodes carry exactly those values.
    # Resolved conflicts: panic_on_oops=1/panic=10 also suit KSPP (an oops reboots instead of
    # running on corrupted); overcommit_memory=1 replaces the kernel's heuristic 0, which no
    # hardening guide of ours sets; ip_forward=1 is HN-SYS-09's Kubernetes row above.
    _needed("kernel.panic_on_oops", "1", (KUBELET,), "HN-SYS-23", "kubelet protectKernelDefaults"),
    _needed("kernel.panic", "10", (KUBELET,), "HN-SYS-23", "kubelet protectKernelDefaults"),
    _needed("vm.overcommit_memory", "1", (KUBELET,), "HN-SYS-26", "kubelet protectKernelDefaults"),
    _needed("vm.panic_on_oom", "0", (KUBELET,), "HN-SYS-26", "kubelet protectKernelDefaults"),
    _needed("kernel.keys.root_maxkeys", "1000000", (KUBELET,), "HN-SYS-26", "kubelet"),
    _needed("kernel.keys.root_maxbytes", "25000000", (KUBELET,), "HN-SYS-26", "kubelet"),
    # kernel.modules_disabled is deliberately absent: see DEVIATIONS (HN-SYS-11).
)


def sysctl_rules(node: Node) -> tuple[Sysctl, ...]:
    """The rules of SYSCTLS that apply to this node, in table order."""
    return tuple(s for s in SYSCTLS if s.applies(node))


def sysctls(node: Node) -> tuple[tuple[str, str], ...]:
    """The node's sysctl set (key, value): the role's rules, then the inventory's overrides.

    An override keeps the position of the key it replaces; new keys come last.
    """
    merged = {s.key: s.value for s in sysctl_rules(node)}
    merged.update(node.sysctl)
    return tuple(merged.items())


def modules(node: Node) -> tuple[str, ...]:
    """Kernel modules loaded at boot (modules-load.d) and before the sysctls are applied."""
    return ("overlay", "br_netfilter") if forwards(node) else ()


# Filesystems, protocols and storage buses nobody on these nodes needs (HN-FS-09). Never
# overlay, br_netfilter, nf_conntrack or vxlan: Docker and CNIs load them. vfat is safe here:
# direct kernel boot, no EFI partition, and the NoCloud seed is an iso9660 `cidata` volume.
# USB and FireWire storage (Lynis USB-1000, STRG-1846): a virtual node has no such devices, so
# a driver that appears can only come from a passed-through device nobody asked for.
BLACKLISTED_MODULES: tuple[str, ...] = (
    "cramfs",
    "freevxfs",
    "jffs2",
    "hfs",
    "hfsplus",
    "squashfs",
    "udf",
    "vfat",
    "dccp",
    "rds",
    "sctp",
    "tipc",
    "usb-storage",
    "firewire-core",
)


# --- SSH brute force (HN-SSH-13) ------------------------------------------------------------

# QEMU user networking's gateway: every connection to a `mode: user` node arrives from it, so
# banning it would lock out the host that owns the node (and everyone reaching it).
USER_NET_GATEWAY = "10.0.2.2"


def fail2ban_ignore(network: Network) -> tuple[str, ...]:
    """Sources fail2ban never bans: loopback, and the user-mode gateway on such networks."""
    base = ("127.0.0.1/8", "::1")
    return (*base, USER_NET_GATEWAY) if network.mode is NetworkMode.USER else base


# --- firewall --------------------------------------------------------------------------------


def firewall_ports(node: Node) -> tuple[tuple[str, int], ...]:
    """(protocol, port) accepted inbound by the node's nftables input chain (HN-FW-02)."""
    ports = [("tcp", SSH_PORT)]
    if Role.K8S_CONTROL_PLANE in node.roles:
        ports.append(("tcp", K8S_API_PORT))  # etcd (2379-2380) is stacked: loopback only
    if is_k8s(node):
        # The API server reaches each kubelet; the CNI's own ports come with the CNI, which
        # the bootstrap does not install (see README).
        ports.append(("tcp", KUBELET_PORT))
    return tuple(ports)


K8S_API_PORT = 6443
KUBELET_PORT = 10250


# --- deviations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deviation:
    """A deliberate departure from KSPP/CIS/DEVSEC: the verifier reports the check as waived."""

    check_id: str
    title: str
    reason: str
    # Where it holds: "all", or the roles whose nodes depart (elsewhere the id is judged, or
    # not applicable, as usual).
    roles: frozenset[str] = frozenset({"all"})


# Kubernetes nodes run registry images; nothing else the tool builds does (HN-SC-01..03).
REGISTRY_IMAGES = (
    "Kubernetes nodes run registry.k8s.io images named by tag: pause (containerd's sandbox "
    "image, from the airgap bundle, also the sample workload's image) and kubeadm's control "
    "plane. A digest cannot be checked from this build environment (no registry is "
    "reachable) and is never invented, so "
)

DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        "HN-SYS-06",
        "kernel.yama.ptrace_scope is 2, not KSPP's 3",
        "3 cannot be lowered without a reboot and blocks strace/gdb attach even for root, "
        "so node debugging and `kubectl debug` would need a reboot.",
    ),
    Deviation(
        "HN-SYS-07",
        "user.max_user_namespaces > 0 on Docker and Kubernetes nodes (KSPP: 0)",
        "Rootless Docker and userns-remap both create user namespaces, and 0 disables them for "
        "everyone including root, so the value is bounded at 28633 instead.",
    ),
    Deviation(
        "HN-SYS-08",
        "kernel.unprivileged_userns_clone = 1 on Docker and Kubernetes nodes",
        "rootlesskit runs as the unprivileged workload user and fails with `operation not "
        "permitted` when unprivileged user-namespace creation is off.",
    ),
    Deviation(
        "HN-SYS-09",
        "net.ipv4.ip_forward = 1 on rootful Docker and Kubernetes nodes (DEVSEC/LYNIS: 0)",
        "The system Docker bridge and pod networking route packets through the host; the "
        "nftables forward chain drops everything not explicitly accepted instead.",
    ),
    Deviation(
        "HN-SYS-11",
        "kernel.modules_disabled is not set (KSPP: 1)",
        "Docker, containerd and CNIs load netfilter, overlay and bridge modules on demand; "
        "module.sig_enforce=1 still limits loading to Debian-signed modules.",
    ),
    Deviation(
        "HN-SYS-30",
        "net.ipv4.tcp_timestamps = 1 (DEVSEC: 0)",
        "Timestamps give PAWS protection and accurate RTT estimates on busy API servers; "
        "LYNIS accepts 1.",
    ),
    Deviation(
        "HN-BOOT-03",
        "lockdown=integrity, not confidentiality",
        "Confidentiality mode forbids eBPF reads of kernel memory, which breaks eBPF security "
        "agents such as Falco modern_ebpf and Tetragon.",
    ),
    Deviation(
        "HN-SSH-08",
        "Only the ed25519 host key: no RSA or ECDSA HostKey lines",
        "The provisioner generates and pins one ed25519 host key per node, so RSA/ECDSA host "
        "keys (and DEVSEC's RSA >= 4096 check) would only add unpinned identities.",
    ),
    Deviation(
        "HN-SSH-09",
        "LYNIS's SSH values where DEVSEC and LYNIS disagree",
        "The node follows Lynis (SSH-7408: ClientAliveCountMax 2, PrintLastLog yes), so "
        "DEVSEC ssh-baseline's alternatives (ClientAliveCountMax 3, PrintLastLog no) are waived.",
    ),
    Deviation(
        "HN-SSH-05",
        "MaxSessions 4, not LYNIS's 2 (DEVSEC: 10)",
        "The verifier runs its snapshot and both Docker probes as channels of one pinned "
        "connection beside the check in progress, and drift its three verbs: 2 would refuse "
        "channels, and a second login per node costs a key exchange under TCG.",
    ),
    Deviation(
        "HN-FS-01",
        "Single root filesystem; only /tmp and /dev/shm are separate (tmpfs)",
        "The golden image is one ext4 filesystem on one virtio disk; separate /var, /var/log, "
        "/var/log/audit and /home filesystems need extra disks the image does not define yet.",
    ),
    Deviation(
        "HN-FS-02",
        "noexec/nosuid/nodev only on the separate mounts (/tmp, /dev/shm, /run)",
        "Mount options can only be set per filesystem, and /var, /var/log and /home are part "
        "of the single root filesystem (see HN-FS-01).",
    ),
    Deviation(
        "HN-DKRL-10",
        "Rootless Docker's known limitations are accepted",
        "Rootless Docker's known limitations are accepted: no AppArmor, no overlay network, "
        "no SCTP, host network namespaced inside RootlessKit (Engine < 29.5), cgroup limits "
        "need cgroup v2 plus delegation (HN-DKRL-07), published ports lose the source IP, and "
        "cap-add grants capabilities only inside the user namespace.",
    ),
    Deviation(
        "HN-DKR-06",
        "userland-proxy disabled on the rootful daemon only",
        "Rootless Docker 20.10 loses connectivity to published ports with userland-proxy "
        "false (moby#43090), so the workload user's rootless daemon keeps the proxy.",
    ),
    Deviation(
        "HN-LOG-01",
        "auditd disk_full_action is SUSPEND, not HALT",
        "A node that halts when its single root filesystem fills up takes its workloads down; "
        "SUSPEND stops auditing and auditd logs that to syslog instead.",
    ),
    Deviation(
        "HN-SC-01",
        "Kubernetes images are referenced by tag, not by digest",
        REGISTRY_IMAGES + "manifests and the bundle name tags; the bundle's own sha256 pins "
        "what is loaded.",
        frozenset({"k8s"}),
    ),
    Deviation(
        "HN-SC-02",
        "Kubernetes image signatures are not verified (no cosign, no admission policy)",
        REGISTRY_IMAGES + "there is no digest to verify a cosign signature of, and no "
        "policy-controller (HN-POL-06) is deployed yet.",
        frozenset({"k8s"}),
    ),
    Deviation(
        "HN-SC-03",
        "Kubernetes images carry no SBOM attestation",
        REGISTRY_IMAGES + "no SBOM attestation is attached or checked; the golden image's own "
        "SBOM covers the node's packages only.",
        frozenset({"k8s"}),
    ),
)
