"""A.12 logging and audit (provision/verify/suite/check_logging.py)."""

from __future__ import annotations

import json

from tests.mutations import Edit, answer, content, mutation, replace, stat
from tests.mutations.boot import command
from tests.recording import Recording


def audit_rule_lost(rule: str) -> Edit:
    return replace("verbs", "audit-rules", f"{rule}\n", "")


def leaked(path: str) -> Edit:
    """The helper's cloud-init-secrets names a log holding private key material."""

    def edit(rec: Recording) -> None:
        part = rec.part("verbs", "cloud-init-secrets")
        assert part["stdout"] == ""
        part["stdout"] = f"{path}\n"

    return edit


def cloud_init_error(rec: Recording) -> None:
    """A module failed at first boot: cloud-init's result.json lists it."""
    fact = rec.file("/var/lib/cloud/data/result.json")
    result = json.loads(fact["content"])
    assert result["v1"]["errors"] == []
    result["v1"]["errors"] = ["('scripts_user', RuntimeError('Runparts: 1 failures (part-001)'))"]
    fact["content"] = json.dumps(result, indent=1) + "\n"


MODULES = "-S init_module,delete_module,finit_module -F key=modules"
JOURNALD_DROPIN = "# /etc/systemd/journald.conf.d/60-provision.conf\n"

MUTATIONS = [
    mutation("HN-LOG-01", "auditd stopped", command("is-active auditd", "inactive\n", 3)),
    mutation(
        "HN-LOG-01",
        "auditd.conf rotates (max_log_file_action ROTATE)",
        replace(
            "verbs",
            "auditd-conf",
            "max_log_file_action = keep_logs",
            "max_log_file_action = ROTATE",
        ),
    ),
    mutation(
        "HN-LOG-02", "no watch on /etc/sudoers", audit_rule_lost("-w /etc/sudoers -p wa -k sudoers")
    ),
    mutation(
        "HN-LOG-02",
        "module syscalls audited for b32 only",
        audit_rule_lost(f"-a always,exit -F arch=b64 {MODULES}"),
    ),
    mutation(
        "HN-LOG-02",
        "the /etc/shadow watch reads only (-p r)",
        replace("verbs", "audit-rules", "-w /etc/shadow -p wa ", "-w /etc/shadow -p r "),
    ),
    mutation(
        "HN-LOG-02",
        "audit rules not immutable (enabled 1)",
        replace("verbs", "audit-status", "enabled 2\n", "enabled 1\n"),
    ),
    mutation(
        "HN-LOG-03",
        "a later drop-in sets Storage=volatile",
        replace(
            "commands",
            "journald-config",
            "Storage=persistent\n",
            "Storage=persistent\n\n# /etc/systemd/journald.conf.d/99-volatile.conf\n"
            "[Journal]\nStorage=volatile\n",
        ),
    ),
    mutation(
        "HN-LOG-03",
        "journald drop-in missing (Storage=auto)",
        replace(
            "commands",
            "journald-config",
            f"\n{JOURNALD_DROPIN}# Managed by provision (HN-LOG-03): keep the journal across "
            "reboots.\n[Journal]\nStorage=persistent\n",
            "",
        ),
    ),
    mutation("HN-LOG-05", "cloud-init finished with an error", cloud_init_error),
    mutation(
        "HN-LOG-05", "cloud-init.log world-readable", stat("/var/log/cloud-init.log", mode=0o644)
    ),
    mutation(
        "HN-LOG-05",
        "a private key in cloud-init-output.log",
        leaked("/var/log/cloud-init-output.log"),
    ),
    mutation(
        "HN-LOG-07",
        "process accounting stopped",
        answer("commands", "is-active acct", 3, "inactive\n"),
    ),
    mutation(
        "HN-LOG-07",
        "sysstat's collection disabled",
        content("/etc/default/sysstat", 'ENABLED="true"', 'ENABLED="false"'),
    ),
]
