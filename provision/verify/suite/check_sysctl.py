"""A.1 Kernel sysctls: the runtime value and the persisted (winning systemd-sysctl) value.

HN-SYS-00: a key passes only if both the running kernel and what the next boot applies agree
with the expectation. Expectations are the catalogue's, written here independently of the
renderer (`provision/baseline/hardening.py`), so a wrong value in the renderer is caught, not
copied.
A key the running kernel lacks is N/A (skipped with the reason), never a failure.
"""

from __future__ import annotations

from collections.abc import Collection

import pytest

from provision.verify.checks import case, check
from provision.verify.nodefacts import loaded_modules
from provision.verify.plugin import Facts, Profile
from provision.verify.snapshot import Snapshot

SYSCTL_FIX = (
    "Set it in /etc/sysctl.d/60-provision-hardening.conf (rendered from "
    "provision/baseline/hardening.py) "
    "and apply with /lib/systemd/systemd-sysctl; re-provision the node if the file is missing."
)


def _kernel(snap: Snapshot) -> str:
    return str(snap.output("uname-r"))


def expect(
    snap: Snapshot,
    facts: Facts,
    key: str,
    allowed: Collection[str],
    *,
    persisted: bool = True,
) -> None:
    """Runtime value in `allowed`, and the value the next boot applies: with `persisted` there
    must be one; without (the kernel's default is good), a persisted override must be good too."""
    runtime = facts.sysctl()
    if key not in runtime:
        pytest.skip(f"N/A: {key} does not exist on kernel {_kernel(snap)}")
    want = " or ".join(sorted(allowed))
    assert runtime[key] in allowed, f"{key} is {runtime[key]} at runtime, expected {want}"
    saved = facts.sysctl_persisted().get(key)
    if persisted:
        assert saved is not None, f"{key} is not persisted in any sysctl.d file"
    assert saved is None or saved in allowed, f"{key} is persisted as {saved}, expected {want}"


@check(
    "HN-SYS-01",
    "Ensure kernel.kptr_restrict is 2",
    level="L1",
    severity="med",
    remediation=SYSCTL_FIX,
)
def test_kptr_restrict(snap: Snapshot, facts: Facts) -> None:
    expect(snap, facts, "kernel.kptr_restrict", {"2"})


@check(
    "HN-SYS-02",
    "Ensure kernel.dmesg_restrict is 1",
    level="L1",
    severity="low",
    remediation=SYSCTL_FIX,
)
def test_dmesg_restrict(snap: Snapshot, facts: Facts) -> None:
    expect(snap, facts, "kernel.dmesg_restrict", {"1"})


@check(
    "HN-SYS-03",
    "Ensure net.core.bpf_jit_harden is 2",
    level="L1",
    severity="med",
    remediation=SYSCTL_FIX,
)
def test_bpf_jit_harden(snap: Snapshot, facts: Facts) -> None:
    expect(snap, facts, "net.core.bpf_jit_harden", {"2"})


@check(
    "HN-SYS-04",
    "Ensure net.ipv4.tcp_syncookies is 1 (host network namespace)",
    level="L1",
    severity="med",
    remediation=SYSCTL_FIX,
)
def test_tcp_syncookies(snap: Snapshot, facts: Facts) -> None:
    expect(snap, facts, "net.ipv4.tcp_syncookies", {"1"})


@check(
    "HN-SYS-05",
    "Ensure unprivileged BPF is disabled (kernel.unprivileged_bpf_disabled 1 or 2)",
    level="L1",
    severity="med",
    remediation=SYSCTL_FIX,
)
def test_unprivileged_bpf(snap: Snapshot, facts: Facts) -> None:
    expect(snap, facts, "kernel.unprivileged_bpf_disabled", {"1", "2"}, persisted=False)


@check(
    "HN-SYS-06",
    "Ensure kernel.yama.ptrace_scope is at least 2 (production profile)",
    level="L1",
    severity="med",
    remediation=SYSCTL_FIX,
)
def test_ptrace_scope(snap: Snapshot, facts: Facts) -> None:
    expect(snap, facts, "kernel.yama.ptrace_scope", {"2", "3"})


@check(
    "HN-SYS-07",
    "Ensure user.max_user_namespaces is positive where Docker needs user namespaces",
    level="L1",
    severity="high",
    roles="rootless rootful",
    remediation=SYSCTL_FIX + " KSPP's 0 breaks rootless Docker and userns-remap.",
)
def test_max_user_namespaces(snap: Snapshot, facts: Facts) -> None:
    runtime = facts.sysctl().get("user.max_user_namespaces", "0")
    assert int(runtime) > 0, f"user.max_user_namespaces is {runtime}: Docker cannot create userns"
    saved = facts.sysctl_persisted().get("user.max_user_namespaces")
    assert saved is None or int(saved) > 0, (
        f"user.max_user_namespaces is persisted as {saved}: the next boot disables userns"
    )


@check(
    "HN-SYS-08",
    "Ensure kernel.unprivileged_userns_clone is 1 on rootless Docker nodes",
    level="L1",
    severity="high",
    roles="rootless",
    remediation=SYSCTL_FIX + " 0 makes rootlesskit fail with 'operation not permitted'.",
)
def test_unprivileged_userns_clone(snap: Snapshot, facts: Facts) -> None:
    expect(snap, facts, "kernel.unprivileged_userns_clone", {"1"})


@check(
    "HN-SYS-09",
    "Ensure IPv4 forwarding matches the role (1 for Kubernetes and rootful Docker, else 0)",
    level="L1",
    severity="high",
    remediation=SYSCTL_FIX,
)
def test_ip_forward(snap: Snapshot, facts: Facts, node: Profile) -> None:
    want = "1" if node.roles & {"k8s", "rootful"} else "0"
    expect(snap, facts, "net.ipv4.ip_forward", {want})


@check(
    "HN-SYS-10",
    "Ensure br_netfilter is loaded and bridge-nf-call-iptables/ip6tables are 1",
    level="L1",
    severity="high",
    roles="k8s rootful",
    remediation="List br_netfilter in /etc/modules-load.d/ and set the bridge sysctls.",
)
@pytest.mark.parametrize(
    "key", ["net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"]
)
def test_bridge_netfilter(snap: Snapshot, facts: Facts, key: str) -> None:
    assert "br_netfilter" in loaded_modules(snap), "br_netfilter not loaded"
    expect(snap, facts, key, {"1"})


REQUIRED_MODULES = ("overlay", "br_netfilter", "nf_conntrack", "ip_tables")


@check(
    "HN-SYS-11",
    "Ensure kernel.modules_disabled is 0, or 1 only with every required module loaded",
    level="L2",
    severity="med",
    remediation="Preload the container networking modules before setting modules_disabled=1.",
)
def test_modules_disabled(snap: Snapshot, facts: Facts) -> None:
    value = facts.sysctl().get("kernel.modules_disabled", "0")
    if value == "0":
        return
    loaded = loaded_modules(snap)
    missing = [m for m in REQUIRED_MODULES if m not in loaded]
    assert not missing, f"modules_disabled=1 but {', '.join(missing)} never loaded"


@pytest.mark.parametrize(
    "key,value",
    [
        case(
            "HN-SYS-12",
            "Ensure kexec loading is disabled",
            "kernel.kexec_load_disabled",
            "1",
            level="L1",
            severity="med",
            remediation=SYSCTL_FIX,
        ),
        case(
            "HN-SYS-14",
            "Ensure line disciplines never autoload",
            "dev.tty.ldisc_autoload",
            "0",
            level="L1",
            severity="low",
            remediation=SYSCTL_FIX,
        ),
        case(
            "HN-SYS-17",
            "Ensure userfaultfd is root-only",
            "vm.unprivileged_userfaultfd",
            "0",
            level="L1",
            severity="low",
            remediation=SYSCTL_FIX,
        ),
        case(
            "HN-SYS-18",
            "Ensure full ASLR",
            "kernel.randomize_va_space",
            "2",
            level="L1",
            severity="high",
            remediation=SYSCTL_FIX,
        ),
        case(
            "HN-SYS-21",
            "Ensure setuid programs never dump core",
            "fs.suid_dumpable",
            "0",
            level="L1",
            severity="med",
            remediation=SYSCTL_FIX,
        ),
        case(
            "HN-SYS-22",
            "Ensure magic SysRq is off",
            "kernel.sysrq",
            "0",
            level="L1",
            severity="low",
            remediation=SYSCTL_FIX,
        ),
        case(
            "HN-SYS-24",
            "Ensure the lowest 64 KiB cannot be mapped",
            "vm.mmap_min_addr",
            "65536",
            level="L1",
            severity="low",
            remediation=SYSCTL_FIX,
        ),
    ],
)
def test_single_sysctl(snap: Snapshot, facts: Facts, key: str, value: str) -> None:
    expect(snap, facts, key, {value})


@check(
    "HN-SYS-13",
    "Ensure kernel.perf_event_paranoid is at least 2",
    level="L1",
    severity="low",
    remediation=SYSCTL_FIX,
)
def test_perf_event_paranoid(snap: Snapshot, facts: Facts) -> None:
    expect(snap, facts, "kernel.perf_event_paranoid", {"2", "3", "4"}, persisted=False)


@check(
    "HN-SYS-15",
    "Ensure dev.tty.legacy_tiocsti is 0 where the kernel has it",
    level="L2",
    severity="low",
    remediation=SYSCTL_FIX + " Write it with systemd-sysctl's '-' prefix (absent on 6.1).",
)
def test_legacy_tiocsti(snap: Snapshot, facts: Facts) -> None:
    expect(snap, facts, "dev.tty.legacy_tiocsti", {"0"})


@check(
    "HN-SYS-16",
    "Ensure kernel.io_uring_disabled is 2 where the kernel has it",
    level="L2",
    severity="low",
    remediation=SYSCTL_FIX + " Write it with systemd-sysctl's '-' prefix (absent on 6.1).",
)
def test_io_uring_disabled(snap: Snapshot, facts: Facts) -> None:
    expect(snap, facts, "kernel.io_uring_disabled", {"2"})


@check(
    "HN-SYS-19",
    "Ensure protected symlinks and hardlinks are on",
    level="L1",
    severity="med",
    remediation=SYSCTL_FIX,
)
@pytest.mark.parametrize("key", ["fs.protected_symlinks", "fs.protected_hardlinks"])
def test_protected_links(snap: Snapshot, facts: Facts, key: str) -> None:
    expect(snap, facts, key, {"1"})


@check(
    "HN-SYS-20",
    "Ensure protected FIFOs and regular files are 2",
    level="L1",
    severity="low",
    remediation=SYSCTL_FIX,
)
@pytest.mark.parametrize("key", ["fs.protected_fifos", "fs.protected_regular"])
def test_protected_fifos_regular(snap: Snapshot, facts: Facts, key: str) -> None:
    expect(snap, facts, key, {"2"})


@check(
    "HN-SYS-23",
    "Ensure the kernel panics on oops and reboots after 10 s (kubelet kernel defaults)",
    level="L1",
    severity="med",
    roles="k8s",
    remediation=SYSCTL_FIX,
)
@pytest.mark.parametrize("key,value", [("kernel.panic_on_oops", "1"), ("kernel.panic", "10")])
def test_panic_on_oops(snap: Snapshot, facts: Facts, key: str, value: str) -> None:
    expect(snap, facts, key, {value})


ICMP_ROUTE = (
    [
        (f"net.ipv4.conf.{scope}.{name}", "0")
        for scope in ("all", "default")
        for name in (
            "accept_redirects",
            "secure_redirects",
            "send_redirects",
            "accept_source_route",
        )
    ]
    + [
        (f"net.ipv6.conf.{scope}.{name}", "0")
        for scope in ("all", "default")
        for name in ("accept_redirects", "accept_source_route")
    ]
    + [
        ("net.ipv4.icmp_echo_ignore_broadcasts", "1"),
        ("net.ipv4.icmp_ignore_bogus_error_responses", "1"),
    ]
)


@check(
    "HN-SYS-25",
    "Ensure ICMP redirects and source routing are refused",
    level="L1",
    severity="med",
    remediation=SYSCTL_FIX,
)
@pytest.mark.parametrize("key,value", ICMP_ROUTE)
def test_icmp_route_hygiene(snap: Snapshot, facts: Facts, key: str, value: str) -> None:
    expect(snap, facts, key, {value})


@check(
    "HN-SYS-26",
    "Ensure the kubelet's protected kernel defaults are set",
    level="L2",
    severity="med",
    roles="k8s",
    remediation=SYSCTL_FIX + " The kubelet refuses to start with protectKernelDefaults otherwise.",
)
@pytest.mark.parametrize(
    "key,value",
    [
        ("vm.overcommit_memory", "1"),
        ("vm.panic_on_oom", "0"),
        ("kernel.panic", "10"),
        ("kernel.panic_on_oops", "1"),
        ("kernel.keys.root_maxkeys", "1000000"),
        ("kernel.keys.root_maxbytes", "25000000"),
    ],
)
def test_kubelet_kernel_defaults(snap: Snapshot, facts: Facts, key: str, value: str) -> None:
    expect(snap, facts, key, {value})


@check(
    "HN-SYS-27",
    "Ensure strict reverse-path filtering (rp_filter 1) globally",
    level="L1",
    severity="med",
    remediation=SYSCTL_FIX,
)
@pytest.mark.parametrize("scope", ["all", "default"])
def test_rp_filter(snap: Snapshot, facts: Facts, scope: str) -> None:
    expect(snap, facts, f"net.ipv4.conf.{scope}.rp_filter", {"1"})


@check(
    "HN-SYS-28",
    "Ensure martian packets are logged",
    level="L2",
    severity="low",
    remediation=SYSCTL_FIX,
)
@pytest.mark.parametrize("scope", ["all", "default"])
def test_log_martians(snap: Snapshot, facts: Facts, scope: str) -> None:
    expect(snap, facts, f"net.ipv4.conf.{scope}.log_martians", {"1"})


IPV6_RA = [
    (f"net.ipv6.conf.{scope}.{name}", value)
    for scope in ("all", "default")
    for name, value in (
        ("accept_ra", "0"),
        ("autoconf", "0"),
        ("router_solicitations", "0"),
        ("dad_transmits", "0"),
        ("max_addresses", "1"),
    )
]


@check(
    "HN-SYS-29",
    "Ensure IPv6 router advertisements and autoconfiguration are off",
    level="L2",
    severity="low",
    remediation=SYSCTL_FIX,
)
@pytest.mark.parametrize("key,value", IPV6_RA)
def test_ipv6_ra(snap: Snapshot, facts: Facts, key: str, value: str) -> None:
    expect(snap, facts, key, {value})


@check(
    "HN-SYS-30",
    "Ensure TCP/ARP/ICMP network tuning (timestamps kept on: LYNIS accepts 1)",
    level="L2",
    severity="low",
    remediation=SYSCTL_FIX,
)
@pytest.mark.parametrize(
    "key,allowed",
    [
        ("net.ipv4.tcp_timestamps", "1"),
        ("net.ipv4.tcp_rfc1337", "1"),
        ("net.ipv4.conf.all.arp_ignore", "1 2"),
        ("net.ipv4.conf.all.arp_announce", "2"),
        ("net.ipv4.icmp_ratelimit", "100"),
        ("net.ipv4.icmp_ratemask", "88089"),
    ],
)
def test_network_tuning(snap: Snapshot, facts: Facts, key: str, allowed: str) -> None:
    expect(snap, facts, key, set(allowed.split()))


@check(
    "HN-SYS-31",
    "Ensure rootless extras stay at their defaults (privileged ports, ping group)",
    level="L2",
    severity="low",
    roles="rootless",
    remediation="Remove overrides of these keys unless the inventory declares the need.",
)
@pytest.mark.parametrize(
    "key,value",
    [("net.ipv4.ip_unprivileged_port_start", "1024"), ("net.ipv4.ping_group_range", "1 0")],
)
def test_rootless_defaults(snap: Snapshot, facts: Facts, key: str, value: str) -> None:
    expect(snap, facts, key, {value}, persisted=False)


@check(
    "HN-SYS-32",
    "Ensure core_uses_pid and maximal mmap randomisation",
    level="L2",
    severity="low",
    remediation=SYSCTL_FIX,
)
@pytest.mark.parametrize(
    "key,value",
    [
        ("kernel.core_uses_pid", "1"),
        ("vm.mmap_rnd_bits", "32"),
        ("vm.mmap_rnd_compat_bits", "16"),
    ],
)
def test_mmap_randomisation(snap: Snapshot, facts: Facts, key: str, value: str) -> None:
    expect(snap, facts, key, {value})
