"""A.6 Docker daemon, rootful: its exposure. Who can reach the API (TCP, the docker group), what
a container may do (seccomp, ulimits, authorization), what is audited, and whether the daemon is
patched and alone (no swarm). HN-USR-07 (the docker group) is here: it is the socket's access
control. The daemon's configuration (HN-DKR-01..08) is in check_docker.py.
"""

from __future__ import annotations

import pytest

from provision.verify.checks import check
from provision.verify.nodefacts import docker_info, installed_packages
from provision.verify.parse import (
    audit_watches,
    compare_versions,
    listening_ports,
    parse_kv,
    watched,
)
from provision.verify.plugin import Facts, Profile
from provision.verify.snapshot import Snapshot
from provision.verify.suite.check_docker import DAEMON_JSON, RESTART, daemon_config, dockerd_argv

# --- HN-DKR-09 no unauthenticated TCP API ----------------------------------------------------

DKR_09 = check(
    "HN-DKR-09",
    "Ensure the Docker API is not served over TCP without TLS client verification",
    level="L1",
    severity="crit",
    roles="rootful",
    remediation=(
        "Remove tcp:// hosts from daemon.json and docker.service flags, or add tlsverify with "
        "tlscacert/tlscert/tlskey. " + RESTART
    ),
)


@DKR_09
def test_no_plain_api_port(snap: Snapshot) -> None:
    ports = listening_ports(snap.output("ss-tln"))
    assert 2375 not in ports, "something listens on TCP 2375, the plain-text Docker API port"


@DKR_09
def test_tcp_hosts_need_tlsverify(snap: Snapshot) -> None:
    config = daemon_config(snap)
    argv = dockerd_argv(snap)
    hosts = list(config.get("hosts") or [])
    hosts += [
        argv[i + 1] if a in ("-H", "--host") else a.split("=", 1)[1]
        for i, a in enumerate(argv)
        if (a in ("-H", "--host") and i + 1 < len(argv)) or a.startswith(("-H=", "--host="))
    ]
    tcp = [h for h in hosts if h.startswith("tcp://")]
    tlsverify = config.get("tlsverify") is True or "--tlsverify" in argv
    assert not tcp or tlsverify, f"TCP API {', '.join(tcp)} without tlsverify"


# --- HN-DKR-10 seccomp -----------------------------------------------------------------------

DKR_10 = check(
    "HN-DKR-10",
    "Ensure the default seccomp profile is active and containers run under it",
    level="L1",
    severity="high",
    roles="rootful",
    remediation='Remove "seccomp-profile" (unconfined) from daemon.json. ' + RESTART,
)


@DKR_10
def test_seccomp_default(snap: Snapshot, facts: Facts) -> None:
    options = docker_info(facts).get("SecurityOptions") or []
    assert "name=seccomp,profile=default" in options, f"SecurityOptions are {options}"
    profile = daemon_config(snap).get("seccomp-profile")
    assert profile in (None, "", "builtin"), f'{DAEMON_JSON} "seccomp-profile" is {profile!r}'


@DKR_10
def test_rootful_probe_seccomp(facts: Facts) -> None:
    """The probe asks for no seccomp option: mode 2 is the daemon's default profile at work."""
    got = parse_kv(facts("docker-probe", "rootful")).get("seccomp")
    assert got == "2", f"the probe container's Seccomp is {got}, expected 2 (filter)"


# --- HN-DKR-11 ulimits, cgroup parent, authorization -----------------------------------------

DKR_11 = check(
    "HN-DKR-11",
    "Ensure default cgroup parent, sane default ulimits, and API access limited to root",
    level="L2",
    severity="low",
    roles="rootful",
    remediation=(
        'Remove "cgroup-parent" and unlimited "default-ulimits" from daemon.json; keep the '
        "docker group empty (no authorization plugin is configured, so socket access is the "
        "only control). " + RESTART
    ),
)


@DKR_11
def test_cgroup_parent_default(snap: Snapshot) -> None:
    value = daemon_config(snap).get("cgroup-parent")
    assert not value, f'{DAEMON_JSON} sets "cgroup-parent" to {value!r}'


@DKR_11
def test_default_ulimits_bounded(snap: Snapshot) -> None:
    limits = daemon_config(snap).get("default-ulimits") or {}
    unlimited = [name for name, v in limits.items() if -1 in (v.get("Soft"), v.get("Hard"))]
    assert not unlimited, f"default-ulimits without a bound: {', '.join(unlimited)}"


@DKR_11
def test_api_authorization(snap: Snapshot, facts: Facts) -> None:
    plugins = (docker_info(facts).get("Plugins") or {}).get("Authorization") or []
    if plugins:
        return
    members = docker_group_members(snap)
    assert not members, (
        f"no authorization plugin, and the docker group gives {', '.join(members)} the full API"
    )


# --- HN-DKR-12 audit watches -----------------------------------------------------------------

DOCKER_AUDIT_PATHS = (
    "/usr/sbin/dockerd",
    "/usr/sbin/runc",
    "/usr/bin/containerd",
    "/usr/bin/containerd-shim-runc-v2",
    "/lib/systemd/system/docker.service",
    "/lib/systemd/system/docker.socket",
    "/etc/docker",
    "/etc/docker/daemon.json",
    "/etc/default/docker",
    "/etc/containerd/config.toml",
    "/run/containerd",
    "/var/lib/docker",
    "/run/containerd/containerd.sock",
)


@check(
    "HN-DKR-12",
    "Ensure auditd watches Docker's binaries, units, config and state on Debian's paths",
    level="L2",
    severity="med",
    roles="rootful",
    remediation=(
        "Add `-w PATH -p wa -k docker` to cloudinit/audit.rules.j2 "
        "(/etc/audit/rules.d/60-provision.rules); the rules are immutable (-e 2), so reboot "
        "after re-provisioning."
    ),
)
@pytest.mark.parametrize("path", DOCKER_AUDIT_PATHS)
def test_docker_audit_watch(facts: Facts, path: str) -> None:
    watches = audit_watches(facts("audit-rules"))
    assert watched(path, watches), f"auditctl -l has no watch covering {path}"


# --- HN-DKR-13..15 -------------------------------------------------------------------------


@check(
    "HN-DKR-13",
    "Ensure docker info reports no warnings",
    level="L1",
    severity="med",
    roles="rootful",
    remediation="Fix what each warning names (often HN-SYS-10's bridge sysctls).",
)
def test_docker_info_warnings(facts: Facts) -> None:
    warnings = docker_info(facts).get("Warnings") or []
    assert not warnings, "docker info warns: " + "; ".join(warnings)


@check(
    "HN-DKR-14",
    "Ensure Swarm mode is inactive",
    level="L1",
    severity="low",
    roles="rootful",
    remediation="`docker swarm leave --force`.",
)
def test_swarm_inactive(facts: Facts) -> None:
    state = (docker_info(facts).get("Swarm") or {}).get("LocalNodeState")
    assert state == "inactive", f"Swarm LocalNodeState is {state}, expected inactive"


# The newest Debian 12 security update of docker.io this verifier knows (DSA/DLA history):
# 20.10.24+dfsg1-1+deb12u1 (CVE-2024-41110 and others). Raise it with each new update.
DOCKER_IO_FLOOR = "20.10.24+dfsg1-1+deb12u1"


@check(
    "HN-DKR-15",
    "Ensure docker.io is at least the latest known Debian 12 security update",
    level="L1",
    severity="med",
    roles="rootful",
    remediation=(
        "Rebuild the golden image (provision image build) from current bookworm and "
        "bookworm-security, then re-provision; check the Debian security tracker for docker.io."
    ),
)
def test_docker_io_patched(snap: Snapshot) -> None:
    version = installed_packages(snap).get("docker.io", ("", ""))[1]
    assert version, "docker.io is not installed"
    newer = compare_versions(version, DOCKER_IO_FLOOR) >= 0
    assert newer, f"docker.io {version} is older than the security update {DOCKER_IO_FLOOR}"


# --- HN-USR-07 docker group ------------------------------------------------------------------


def docker_group_members(snap: Snapshot) -> list[str]:
    """Members of the docker group, listed or by primary group."""
    entry = snap.run("getent-group-docker")
    if entry.rc != 0:
        return []
    fields = entry.stdout.strip().split(":")
    members = [m for m in fields[3].split(",") if m] if len(fields) > 3 else []
    gid = fields[2]
    for line in snap.output("getent-passwd").splitlines():
        user = line.split(":")
        if len(user) > 3 and user[3] == gid and user[0] not in members:
            members.append(user[0])
    return members


@check(
    "HN-USR-07",
    "Ensure the docker group is empty (membership is root on the snap)",
    level="L1",
    severity="crit",
    roles="rootless rootful",
    remediation=(
        "`gpasswd -d USER docker` for each member; the admin uses sudo and the workload user "
        "its own rootless daemon (cloudinit/harden.sh.j2 refuses a non-empty group)."
    ),
)
def test_docker_group_empty(snap: Snapshot, node: Profile) -> None:
    members = docker_group_members(snap)
    assert not members, f"the docker group has {', '.join(members)}, expected nobody"
