"""A.2 Kernel command line, boot and kernel runtime state.

The node boots its dedicated kernel directly from the domain XML (no bootloader), so the command
line is read from /proc/cmdline and compared with what the domain gives it.
"""

from __future__ import annotations

import re

import pytest

from provision.verify.checks import Inconclusive, check
from provision.verify.plugin import FactsError, Profile
from provision.verify.snapshot import Snapshot

CMDLINE_FIX = (
    "The command line lives in the domain XML (provision/baseline/hardening.py KERNEL_CMDLINE): "
    "`provision plan` shows the drift; `provision down` then `up` redefines the domain."
)

WEAKENING = (
    "nokaslr",
    "nosmep",
    "nosmap",
    "nopti",
    "pti=off",
    "mitigations=off",
    "nospectre_v1",
    "nospectre_v2",
    "spectre_v2=off",
    "nospec_store_bypass_disable",
    "no_hash_pointers",
    "iommu.passthrough=1",
    "norandmaps",
    "sysrq_always_enabled",
    "debugfs=on",
    "lockdown=none",
    "apparmor=0",
    "audit=0",
    "module.sig_enforce=0",
    "init_on_free=0",
)

KSPP = (
    "slab_nomerge",
    "init_on_alloc=1",
    "init_on_free=1",
    "page_alloc.shuffle=1",
    "pti=on",
    "iommu.strict=1",
    "iommu.passthrough=0",
    "hardened_usercopy=1",
    "randomize_kstack_offset=on",
    "kfence.sample_interval=100",
    "vsyscall=none",
)

BOOT_02 = check(
    "HN-BOOT-02",
    "Ensure the KSPP command-line parameters are present",
    level="L2",
    severity="med",
    remediation=CMDLINE_FIX,
)
BOOT_08 = check(
    "HN-BOOT-08",
    "Ensure the node runs its newest kernel and reports no vulnerable CPU findings",
    level="L1",
    severity="high",
    remediation="Rebuild the golden image (new kernel) and roll nodes onto it; on KVM use "
    "host-passthrough so mitigations are visible to the guest.",
)


def _cmdline(snap: Snapshot) -> list[str]:
    return str(snap.file("/proc/cmdline").content_string).split()


def _in_effect(param: str, words: list[str]) -> bool:
    """A flag holds when given; `key=value` when it is the key's last value, the one the kernel
    keeps (`iommu.strict=1 ... iommu.strict=0` is not strict)."""
    key, sep, _ = param.partition("=")
    if not sep:
        return param in words
    return [w for w in words if w.startswith(f"{key}=")][-1:] == [param]


@check(
    "HN-BOOT-01",
    "Ensure no parameter weakens the kernel's self-protection",
    level="L1",
    severity="high",
    remediation=CMDLINE_FIX,
)
def test_no_weakening_parameters(snap: Snapshot) -> None:
    found = [p for p in _cmdline(snap) if p in WEAKENING]
    assert not found, f"weakening parameters on the command line: {' '.join(found)}"


@BOOT_02
def test_kspp_parameters(snap: Snapshot) -> None:
    words = _cmdline(snap)
    missing = [p for p in KSPP if not _in_effect(p, words)]
    assert not missing, f"not in effect on /proc/cmdline: {' '.join(missing)}"


@BOOT_02
def test_cmdline_is_the_domains(snap: Snapshot, node: Profile) -> None:
    """The running kernel got exactly what the inventory renders (nothing lost or added)."""
    running = _cmdline(snap)
    missing = [p for p in node.cmdline if p not in running]
    assert not missing, f"the domain's parameters missing at runtime: {' '.join(missing)}"
    added = [p for p in running if p not in node.cmdline]
    assert not added, f"parameters at runtime the domain does not give: {' '.join(added)}"


@check(
    "HN-BOOT-03",
    "Ensure kernel lockdown is at least integrity",
    level="L2",
    severity="med",
    remediation=CMDLINE_FIX + " lockdown=integrity (confidentiality breaks eBPF agents).",
)
def test_lockdown(snap: Snapshot) -> None:
    text = str(snap.file("/sys/kernel/security/lockdown").content_string)
    active = text[text.index("[") + 1 : text.index("]")] if "[" in text else text.strip()
    assert active in ("integrity", "confidentiality"), f"lockdown is {active!r}"


@check(
    "HN-BOOT-04",
    "Ensure module signatures are enforced",
    level="L2",
    severity="med",
    remediation=CMDLINE_FIX + " module.sig_enforce=1.",
)
def test_module_sig_enforce(snap: Snapshot) -> None:
    value = str(snap.file("/sys/module/module/parameters/sig_enforce").content_string).strip()
    assert value == "Y", f"sig_enforce is {value}"


@check(
    "HN-BOOT-05",
    "Ensure auditing starts at boot with a large backlog",
    level="L1",
    severity="med",
    remediation=CMDLINE_FIX + " audit=1 audit_backlog_limit=8192.",
)
@pytest.mark.parametrize("param", ["audit=1", "audit_backlog_limit=8192"])
def test_audit_at_boot(snap: Snapshot, param: str) -> None:
    assert param in _cmdline(snap), f"{param} missing from /proc/cmdline"


@check(
    "HN-BOOT-06",
    "Ensure AppArmor is enabled",
    level="L1",
    severity="med",
    remediation="Do not pass apparmor=0; the golden image carries the apparmor package.",
)
def test_apparmor(snap: Snapshot) -> None:
    value = str(snap.file("/sys/module/apparmor/parameters/enabled").content_string).strip()
    assert value == "Y", f"AppArmor enabled={value}"
    lsm = str(snap.file("/sys/kernel/security/lsm").content_string)
    assert "apparmor" in lsm.split(","), f"apparmor not among the active LSMs: {lsm}"


@BOOT_08
def test_newest_kernel(snap: Snapshot) -> None:
    running = str(snap.output("uname-r"))
    newest = snap.output("newest-kernel")  # `ls /lib/modules | sort -V | tail -1`
    assert running == newest, f"running {running}, newest installed {newest}"


@BOOT_08
def test_no_vulnerable_cpu(snap: Snapshot, node: Profile) -> None:
    out = snap.run("cpu-vulnerabilities")
    vulnerable = [line for line in out.stdout.splitlines() if "Vulnerable" in line]
    if vulnerable and node.accel == "qemu":
        raise Inconclusive(
            "TCG emulation: the CPU flags are QEMU's model, not a host CPU's: "
            + "; ".join(v.rsplit("/", 1)[-1] for v in vulnerable)
        )
    assert not vulnerable, "vulnerable: " + "; ".join(vulnerable)


@check(
    "HN-BOOT-09",
    "Ensure the node is a virtual machine with its own kernel, not a container",
    level="L1",
    severity="high",
    remediation="Nodes are libvirt guests booted from the golden image's kernel.",
)
def test_own_kernel(snap: Snapshot, node: Profile) -> None:
    container = snap.run("virt-container")
    assert container.stdout.strip() == "none", f"running in a container: {container.stdout}"
    vm = snap.run("virt-vm").stdout.strip()
    # Under TCG there is no KVM: QEMU itself is what the guest detects.
    want = "kvm" if node.accel == "kvm" else "qemu"
    assert vm == want, f"systemd-detect-virt --vm says {vm!r}, the domain runs on {want}"


@check(
    "HN-BOOT-10",
    "Ensure unified cgroup v2 under systemd (and no swap on Kubernetes nodes)",
    level="L1",
    severity="high",
    roles="k8s rootless",
    remediation="Debian 12 defaults to cgroup v2; do not pass systemd.unified_cgroup_hierarchy=0.",
)
def test_cgroup_v2(snap: Snapshot, node: Profile) -> None:
    fs = str(snap.output("cgroup-fstype"))
    assert fs == "cgroup2fs", f"/sys/fs/cgroup is {fs}"
    init = str(snap.file("/proc/1/comm").content_string).strip()
    assert init == "systemd", f"PID 1 is {init}"
    if "k8s" in node.roles:
        swaps = str(snap.file("/proc/swaps").content_string).splitlines()[1:]
        assert not swaps, f"swap is on: {swaps}"


# --- HN-BOOT-12 sandboxed units --------------------------------------------------------------

EXPOSURE = re.compile(r"Overall exposure level for (\S+): ([0-9.]+)")
MAX_EXPOSURE = 2.0  # systemd-analyze's "OK" band ends at 3.9; ours measured 1.8


@check(
    "HN-BOOT-12",
    "Ensure the units provision adds are sandboxed (systemd-analyze security exposure <= 2.0)",
    level="L2",
    severity="low",
    remediation="cloudinit/provision-firewall.service.j2 carries the sandboxing directives; "
    "re-provision the node, or restore the unit and `systemctl daemon-reload`.",
)
@pytest.mark.parametrize("unit", ["provision-firewall"])
def test_unit_sandboxed(snap: Snapshot, unit: str) -> None:
    part = snap.run(f"unit-security {unit}")
    found = EXPOSURE.search(part.stdout)
    if found is None:
        raise FactsError(f"systemd-analyze security {unit} gave no exposure: {part.stderr[-300:]}")
    level = float(found.group(2))
    assert level <= MAX_EXPOSURE, f"{unit}.service exposure {level} (at most {MAX_EXPOSURE})"
