"""A.2 kernel command line, boot and kernel runtime state (provision/verify/suite/check_boot.py).

The recorded profile's command line is the recorded /proc/cmdline (the domain's), so a word lost
or added at runtime also fails HN-BOOT-02's "the running kernel got exactly the domain's"."""

from __future__ import annotations

from tests.mutations import Edit, answer, both, content, mutation, replace
from tests.mutations.sysctls import K8S, k8s_node

CMDLINE = "/proc/cmdline"
TAIL = "audit_backlog_limit=8192\n"  # the recorded command line's last word


def appended(word: str) -> Edit:
    return content(CMDLINE, TAIL, f"{TAIL[:-1]} {word}\n")


def dropped(word: str) -> Edit:
    return content(CMDLINE, f" {word} ", " ")


def command(name: str, stdout: str, rc: int = 0) -> Edit:
    """A snapshot command's whole answer."""
    return answer("commands", name, rc, stdout)


LOCKDOWN = "/sys/kernel/security/lockdown"
NO_LOCKDOWN = content(
    LOCKDOWN, "none [integrity] confidentiality", "[none] integrity confidentiality"
)
SIG_ENFORCE = "/sys/module/module/parameters/sig_enforce"
APPARMOR = "/sys/module/apparmor/parameters/enabled"

MUTATIONS = [
    mutation("HN-BOOT-01", "mitigations=off", appended("mitigations=off"), also="HN-BOOT-02"),
    mutation("HN-BOOT-02", "init_on_free=1 lost", dropped("init_on_free=1")),
    mutation("HN-BOOT-02", "iommu.strict=0 overrides iommu.strict=1", appended("iommu.strict=0")),
    mutation("HN-BOOT-03", "lockdown none", NO_LOCKDOWN),
    mutation(
        "HN-BOOT-03",
        "booted without lockdown=integrity",
        both(dropped("lockdown=integrity"), NO_LOCKDOWN),
        also="HN-BOOT-02",
    ),
    mutation("HN-BOOT-04", "sig_enforce N", content(SIG_ENFORCE, "Y", "N")),
    mutation(
        "HN-BOOT-05",
        "audit_backlog_limit lost",
        content(CMDLINE, " audit_backlog_limit=8192", ""),
        also="HN-BOOT-02",
    ),
    mutation("HN-BOOT-06", "AppArmor enabled=N", content(APPARMOR, "Y", "N")),
    mutation(
        "HN-BOOT-06",
        "booted with apparmor=0",
        both(
            appended("apparmor=0"),
            content(APPARMOR, "Y", "N"),
            content("/sys/kernel/security/lsm", ",apparmor", ""),
        ),
        also="HN-BOOT-01 HN-BOOT-02",
    ),
    mutation(
        "HN-BOOT-08",
        "a newer kernel installed, not booted",
        command("newest-kernel", "6.1.0-51-cloud-amd64\n"),
    ),
    mutation("HN-BOOT-09", "running in an LXC container", command("virt-container", "lxc\n")),
    mutation(
        "HN-BOOT-10", "cgroup v1 (tmpfs at /sys/fs/cgroup)", command("cgroup-fstype", "tmpfs\n")
    ),
    mutation(
        "HN-BOOT-10",
        "swap on a Kubernetes node",
        content("/proc/swaps", "Priority\n", "Priority\n/swapfile\tfile\t1048572\t0\t-2\n"),
        also="HN-K8S-14",
        setup=k8s_node,
        roles=K8S,
    ),
    mutation(
        "HN-BOOT-12",
        "the firewall unit's sandboxing removed",
        replace(
            "commands",
            "unit-security provision-firewall",
            "provision-firewall.service: 1.8",
            "provision-firewall.service: 9.6",
        ),
    ),
]
