"""A.12 Logging and audit."""

from __future__ import annotations

import itertools
import json

import pytest

from provision.verify.checks import check
from provision.verify.plugin import Facts
from provision.verify.snapshot import Snapshot

AUDIT_FIX = (
    "Rules come from /etc/audit/rules.d/60-provision.rules and auditd.conf from the seed; "
    "with `-e 2` they are immutable until reboot, so re-provision or reboot to change them."
)

AUDITD_CONF = {
    "log_file": "/var/log/audit/audit.log",
    "log_format": "RAW",
    "flush": "INCREMENTAL_ASYNC",
    "max_log_file_action": "keep_logs",
    "space_left": "75",
    "space_left_action": "SYSLOG",
    "admin_space_left": "50",
    "admin_space_left_action": "SUSPEND",
    "disk_full_action": "SUSPEND",
    "disk_error_action": "SUSPEND",
}

LOG_01 = check(
    "HN-LOG-01",
    "Ensure auditd runs with the catalogue's auditd.conf",
    level="L1",
    severity="med",
    remediation=AUDIT_FIX,
)


@LOG_01
def test_auditd_running(snap: Snapshot) -> None:
    assert snap.service("auditd").is_running, "auditd is not running"


@LOG_01
@pytest.mark.parametrize("key,value", sorted(AUDITD_CONF.items()))
def test_auditd_conf(facts: Facts, key: str, value: str) -> None:
    conf = {}
    for line in facts("auditd-conf").splitlines():
        k, sep, v = line.partition("=")
        if sep and not k.strip().startswith("#"):
            conf[k.strip()] = v.strip()
    assert conf.get(key, "").lower() == value.lower(), f"{key} = {conf.get(key)}, want {value}"


WATCHED = (
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/subuid",
    "/etc/subgid",
    "/usr/bin/newuidmap",
    "/usr/bin/newgidmap",
    "/etc/ssh/sshd_config",
    "/etc/ssh/sshd_config.d",
    "/var/log/sudo.log",
)

LOG_02 = check(
    "HN-LOG-02",
    "Ensure audit rules watch identity, privilege and module changes, and are immutable",
    level="L1",
    severity="med",
    remediation=AUDIT_FIX,
)


@LOG_02
@pytest.mark.parametrize("path", WATCHED)
def test_audit_watch(facts: Facts, path: str) -> None:
    # A watch records changes only with `w` (writes) and `a` (attribute changes) among its -p
    # permissions: `-w /etc/passwd -p r` would be a watch that misses every edit.
    perms = [
        words[words.index("-p") + 1] if "-p" in words[:-1] else "rwxa"  # no -p: all four
        for words in (r.split() for r in facts("audit-rules").splitlines())
        if words[:2] == ["-w", path]
    ]
    assert perms, f"no audit watch on {path}"
    assert any({"w", "a"} <= set(p) for p in perms), f"the watch on {path} has -p {perms}"


@LOG_02
def test_audit_module_syscalls(facts: Facts) -> None:
    """Per ABI: a b64 rule leaves a 32-bit process's init_module unaudited, and the reverse."""
    audited: dict[str, set[str]] = {"b64": set(), "b32": set()}
    for rule in facts("audit-rules").splitlines():
        words = rule.split()
        arch = next((w[5:] for w in words if w.startswith("arch=")), "")
        if words[:2] == ["-a", "always,exit"] and arch in audited:
            for flag, value in itertools.pairwise(words):
                if flag == "-S":
                    audited[arch] |= set(value.split(","))
    for arch, syscalls in audited.items():
        for syscall in ("init_module", "finit_module", "delete_module"):
            assert syscall in syscalls, f"module syscall {syscall} is not audited for {arch}"


@LOG_02
def test_audit_immutable(facts: Facts) -> None:
    status = dict(line.split(" ", 1) for line in facts("audit-status").splitlines() if " " in line)
    assert status.get("enabled") == "2", f"audit enabled={status.get('enabled')}, expected 2"


LOG_03 = check(
    "HN-LOG-03",
    "Ensure the journal is persistent (and shipped, where a log host is named)",
    level="L1",
    severity="med",
    remediation="Storage=persistent in /etc/systemd/journald.conf.d/ and /var/log/journal.",
)


@LOG_03
def test_journal_persistent(snap: Snapshot) -> None:
    assert snap.file("/var/log/journal").is_directory, "/var/log/journal is missing"
    conf = str(snap.output("journald-config"))
    storage = [
        line.split("=", 1)[1].strip() for line in conf.splitlines() if line.startswith("Storage=")
    ]
    assert storage[-1:] == ["persistent"], f"journald Storage={storage or 'auto'}"


@LOG_03
def test_remote_shipping() -> None:
    pytest.skip("N/A: the inventory names no log host to ship to")


@check(
    "HN-LOG-05",
    "Ensure cloud-init finished cleanly and its logs are private and hold no secrets",
    level="L1",
    severity="high",
    remediation="Inspect /var/log/cloud-init.log; keep secrets out of runcmd output; chmod 0640.",
)
def test_cloud_init_clean(snap: Snapshot, facts: Facts) -> None:
    result = json.loads(str(snap.file("/var/lib/cloud/data/result.json").content_string))
    errors = result["v1"]["errors"]
    assert not errors, f"cloud-init errors: {errors}"
    for path in ("/var/log/cloud-init.log", "/var/log/cloud-init-output.log"):
        f = snap.file(path)
        assert f.mode & 0o037 == 0, f"{path} is {f.mode:o}, expected 0640 or stricter"
    leaks = facts("cloud-init-secrets").split()
    assert not leaks, f"private key material in {leaks}"


@check(
    "HN-LOG-07",
    "Ensure process accounting and sysstat's activity history are collected",
    level="L2",
    severity="low",
    remediation="acct and sysstat are in the golden image; provision-harden sets "
    '/etc/default/sysstat ENABLED="true" and enables both services.',
)
@pytest.mark.parametrize("unit", ["acct", "sysstat"])
def test_accounting(snap: Snapshot, unit: str) -> None:
    service = snap.service(unit)
    assert service.is_enabled, f"{unit} is not enabled"
    assert service.is_running, f"{unit} is {snap.run(f'is-active {unit}').stdout.strip()}"
    if unit == "acct":
        assert snap.file("/var/log/account/pacct").exists, "acct writes no /var/log/account/pacct"
    else:
        lines = snap.file("/etc/default/sysstat").content_string.splitlines()
        enabled = [line.split("=", 1)[1].strip() for line in lines if line.startswith("ENABLED=")]
        assert enabled[-1:] == ['"true"'], f"/etc/default/sysstat ENABLED={enabled or 'unset'}"
