"""A.6 Docker daemon, rootful with userns-remap: the system dockerd as it runs now.

The effective state comes from the daemon (`docker info` JSON through the facts helper), the
kernel (nftables, the process table, listening sockets) and a container the helper starts
(`docker-probe rootful`). /etc/docker/daemon.json is read where the property is config-only
(no-new-privileges, userland-proxy, log-level); HN-DKR-01 then proves the running daemon
started after the file last changed, so the file is what runs (catalogue C.6).
HN-USR-07 (the docker group) lives here too: it is the socket's access control.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from testinfra.host import Host

from provision.verify.checks import Inconclusive, check
from provision.verify.nodefacts import docker_info, numeric_ids, stat_paths
from provision.verify.parse import (
    KNOWN_KEYS,
    audit_watches,
    flag_keys,
    listening_ports,
    parse_execstart,
    parse_kv,
    subid_range,
    watched,
)
from provision.verify.plugin import Facts, Profile

DAEMON_JSON = "/etc/docker/daemon.json"
RESTART = (
    "Fix /etc/docker/daemon.json (rendered from cloudinit/daemon.json.j2) and "
    "`systemctl restart docker`; re-provision the node if the file is not the rendered one."
)


# --- node helpers ----------------------------------------------------------------------------


def daemon_config(host: Host) -> dict[str, Any]:
    f = host.file(DAEMON_JSON)
    assert f.exists, f"{DAEMON_JSON} is missing"
    try:
        config: dict[str, Any] = json.loads(f.content_string)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"{DAEMON_JSON} is not valid JSON: {exc}") from None
    assert isinstance(config, dict), f"{DAEMON_JSON} is not a JSON object"
    return config


def dockerd_argv(host: Host) -> list[str]:
    lines = parse_execstart(host.check_output("systemctl show -p ExecStart --value docker.service"))
    assert lines, "docker.service has no ExecStart"
    return lines[0]


# --- HN-DKR-01 daemon.json valid, known, no flag clash, loaded --------------------------------

DKR_01 = check(
    "HN-DKR-01",
    "Ensure daemon.json is valid, has only known keys, no flag clash, and is what runs",
    level="L1",
    severity="high",
    roles="rootful",
    remediation=(
        "Keys given as dockerd flags (docker.service ExecStart, e.g. -H fd://) must not also be in "
        "daemon.json: change flags with a drop-in. " + RESTART
    ),
)


@DKR_01
def test_daemon_json_known_keys(host: Host) -> None:
    unknown = sorted(set(daemon_config(host)) - KNOWN_KEYS)
    assert not unknown, f"{DAEMON_JSON} has keys dockerd 20.10 does not know: {', '.join(unknown)}"


@DKR_01
def test_daemon_json_no_flag_clash(host: Host) -> None:
    clash = sorted(set(daemon_config(host)) & flag_keys(dockerd_argv(host)))
    assert not clash, f"set both as dockerd flags and in {DAEMON_JSON}: {', '.join(clash)}"


@DKR_01
def test_daemon_runs_current_config(host: Host, facts: Facts) -> None:
    docker_info(facts)  # the daemon answers (Inconclusive, a WARN, if docker.service is down)
    pid = host.run("pgrep -u 0 -o -x dockerd").stdout.strip()
    if not pid:
        raise Inconclusive("docker.service is active but no root dockerd process is visible")
    now, mtime, elapsed = host.check_output(
        f"echo $(date +%s) $(stat -c %Y {DAEMON_JSON}) $(ps -o etimes= -p {pid})"
    ).split()
    started = int(now) - int(elapsed)
    assert started >= int(mtime), (
        f"dockerd (pid {pid}) started {int(mtime) - started}s before {DAEMON_JSON} last changed: "
        "it runs an older configuration"
    )


# --- HN-DKR-02 userns-remap ------------------------------------------------------------------

DKR_02 = check(
    "HN-DKR-02",
    "Ensure userns-remap is active: container root is an unprivileged dockremap subordinate id",
    level="L1",
    severity="high",
    roles="rootful",
    remediation=(
        '"userns-remap": "default" in daemon.json creates the dockremap user and its '
        "/etc/subuid and /etc/subgid ranges on the next start. " + RESTART
    ),
)


@DKR_02
def test_userns_remap_configured(host: Host, facts: Facts) -> None:
    remap = daemon_config(host).get("userns-remap")
    assert remap, f"{DAEMON_JSON} has no userns-remap"
    options = docker_info(facts).get("SecurityOptions") or []
    assert "name=userns" in options, f"SecurityOptions are {options}: userns-remap is not active"


@DKR_02
@pytest.mark.parametrize("db", ["/etc/subuid", "/etc/subgid"])
def test_dockremap_subids(host: Host, db: str) -> None:
    found = subid_range(host.file(db).content_string, "dockremap")
    assert found is not None, f"{db} has no dockremap range"
    assert found[1] >= 65536, f"{db} gives dockremap {found[1]} ids, expected at least 65536"


@DKR_02
def test_remapped_root_dir(host: Host, facts: Facts) -> None:
    uid = subid_range(host.file("/etc/subuid").content_string, "dockremap")
    gid = subid_range(host.file("/etc/subgid").content_string, "dockremap")
    assert uid and gid, "dockremap has no subordinate ids"
    root = str(docker_info(facts).get("DockerRootDir", ""))
    want = f"/var/lib/docker/{uid[0]}.{gid[0]}"
    assert root == want, f"Docker Root Dir is {root}, expected {want}"
    st = stat_paths(facts, root).get(root)
    assert st is not None, f"{root} is missing"
    # dockerd 20.10.24 makes it root:<remapped gid> 0710: remapped root may enter, others not.
    assert not st.mode & 0o007, f"{st.describe()}, expected no access for others (0710)"
    ids = numeric_ids(facts, root)
    if ids is None:
        raise Inconclusive(
            f"{st.describe()}: the remapped ids have no names, and the node's helper has no "
            "stat-ids verb to show them"
        )
    assert ids[0] == uid[0] or ids[1] == gid[0], (
        f"{root} is {ids[0]}:{ids[1]}, expected the remapped ids {uid[0]}:{gid[0]}"
    )


@DKR_02
def test_rootful_probe_ids(facts: Facts) -> None:
    p = parse_kv(facts("docker-probe", "rootful"))
    assert p.get("container_uid") == "0", f"id -u in the container is {p.get('container_uid')}"
    start = p.get("subuid_start", "")
    assert start.isdigit() and int(start) > 0, f"no dockremap subuid range ({start!r})"
    assert p.get("host_uid") == start, (
        f"container root is host uid {p.get('host_uid')}, expected dockremap's {start}"
    )
    assert p.get("host_uid_user1000") == str(int(start) + 1000), (
        f"container uid 1000 is host uid {p.get('host_uid_user1000')}, expected {int(start) + 1000}"
    )


# --- HN-DKR-03 icc ---------------------------------------------------------------------------

DKR_03 = check(
    "HN-DKR-03",
    "Ensure inter-container communication on the default bridge is off (icc false)",
    level="L1",
    severity="med",
    roles="rootful",
    remediation='"icc": false in daemon.json. ' + RESTART,
)


@DKR_03
def test_icc_configured(host: Host) -> None:
    assert daemon_config(host).get("icc") is False, f'{DAEMON_JSON} lacks "icc": false'


ICC_DROP = re.compile(r'iifname "docker0" oifname "docker0"[^\n]*\bdrop\b')


@DKR_03
def test_icc_enforced(facts: Facts) -> None:
    docker_info(facts)  # the daemon runs: its rules should be loaded
    ruleset = facts("nft")
    assert ICC_DROP.search(ruleset), (
        "no nftables rule drops docker0-to-docker0 traffic: icc is not enforced "
        "(was the ruleset flushed after dockerd started?)"
    )


# --- HN-DKR-04..07 daemon defaults -----------------------------------------------------------


@check(
    "HN-DKR-04",
    "Ensure containers get no-new-privileges by default",
    level="L1",
    severity="high",
    roles="rootful",
    remediation='"no-new-privileges": true in daemon.json. ' + RESTART,
)
def test_no_new_privileges(host: Host) -> None:
    value = daemon_config(host).get("no-new-privileges")
    assert value is True, f'{DAEMON_JSON} "no-new-privileges" is {value}, expected true'


@check(
    "HN-DKR-05",
    "Ensure live-restore is enabled",
    level="L1",
    severity="med",
    roles="rootful",
    remediation='"live-restore": true in daemon.json. ' + RESTART,
)
def test_live_restore(facts: Facts) -> None:
    got = docker_info(facts).get("LiveRestoreEnabled")
    assert got is True, f"LiveRestoreEnabled is {got}, expected true"


@check(
    "HN-DKR-06",
    "Ensure the rootful daemon runs without the userland proxy",
    level="L2",
    severity="low",
    roles="rootful",
    remediation='"userland-proxy": false in daemon.json (rootful only, see HN-DKRL-06). ' + RESTART,
)
def test_userland_proxy_off(host: Host) -> None:
    value = daemon_config(host).get("userland-proxy")
    assert value is False, f'{DAEMON_JSON} "userland-proxy" is {value}, expected false'


DKR_07 = check(
    "HN-DKR-07",
    "Ensure log level info and a centralised or size-limited log driver",
    level="L1",
    severity="low",
    roles="rootful",
    remediation=(
        '"log-level": "info", and "log-driver": "journald" (or "local", or json-file with '
        'max-size and max-file in "log-opts") in daemon.json. ' + RESTART
    ),
)


@DKR_07
def test_log_level(host: Host, facts: Facts) -> None:
    level = daemon_config(host).get("log-level", "info")
    assert level == "info", f'{DAEMON_JSON} "log-level" is {level!r}, expected "info"'
    assert docker_info(facts).get("Debug") is False, "the daemon runs in debug mode"


@DKR_07
def test_log_driver(host: Host, facts: Facts) -> None:
    driver = docker_info(facts).get("LoggingDriver")
    assert driver in ("journald", "syslog", "local", "json-file"), (
        f"the log driver is {driver}: logs neither centralised nor rotated by the node"
    )
    if driver == "json-file":
        opts = daemon_config(host).get("log-opts") or {}
        missing = [k for k in ("max-size", "max-file") if k not in opts]
        assert not missing, f"json-file logs without {', '.join(missing)}: unbounded growth"


# --- HN-DKR-08 iptables, forwarding, registries, experimental, overlay2 ----------------------

DKR_08 = check(
    "HN-DKR-08",
    "Ensure iptables and ip-forward stay on, no insecure registries, no experimental, overlay2",
    level="L1",
    severity="med",
    roles="rootful",
    remediation="Remove the offending keys from daemon.json. " + RESTART,
)


@DKR_08
def test_daemon_json_network_keys(host: Host) -> None:
    config = daemon_config(host)
    bad = [k for k in ("iptables", "ip-forward") if config.get(k) is False]
    bad += [k for k in ("insecure-registries",) if config.get(k)]
    bad += [k for k in ("experimental",) if config.get(k) is True]
    assert not bad, f"{DAEMON_JSON} sets {', '.join(bad)}"


@DKR_08
def test_daemon_effective_registry_and_driver(facts: Facts) -> None:
    info = docker_info(facts)
    assert info.get("Driver") == "overlay2", f"storage driver is {info.get('Driver')}"
    assert info.get("ExperimentalBuild") is False, "the daemon runs with experimental features"
    assert info.get("IPv4Forwarding") is True, "the daemon reports IPv4 forwarding off"
    registry = info.get("RegistryConfig") or {}
    cidrs = set(registry.get("InsecureRegistryCIDRs") or []) - {"127.0.0.0/8", "::1/128"}
    insecure = sorted(
        name for name, idx in (registry.get("IndexConfigs") or {}).items() if not idx.get("Secure")
    )
    assert not cidrs and not insecure, f"insecure registries: {sorted(cidrs) + insecure}"


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
def test_no_plain_api_port(host: Host) -> None:
    ports = listening_ports(host.check_output("ss -Hltn"))
    assert 2375 not in ports, "something listens on TCP 2375, the plain-text Docker API port"


@DKR_09
def test_tcp_hosts_need_tlsverify(host: Host) -> None:
    config = daemon_config(host)
    argv = dockerd_argv(host)
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
def test_seccomp_default(host: Host, facts: Facts) -> None:
    options = docker_info(facts).get("SecurityOptions") or []
    assert "name=seccomp,profile=default" in options, f"SecurityOptions are {options}"
    profile = daemon_config(host).get("seccomp-profile")
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
def test_cgroup_parent_default(host: Host) -> None:
    value = daemon_config(host).get("cgroup-parent")
    assert not value, f'{DAEMON_JSON} sets "cgroup-parent" to {value!r}'


@DKR_11
def test_default_ulimits_bounded(host: Host) -> None:
    limits = daemon_config(host).get("default-ulimits") or {}
    unlimited = [name for name, v in limits.items() if -1 in (v.get("Soft"), v.get("Hard"))]
    assert not unlimited, f"default-ulimits without a bound: {', '.join(unlimited)}"


@DKR_11
def test_api_authorization(host: Host, facts: Facts) -> None:
    plugins = (docker_info(facts).get("Plugins") or {}).get("Authorization") or []
    if plugins:
        return
    members = docker_group_members(host)
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
def test_docker_io_patched(host: Host) -> None:
    version = host.check_output("dpkg-query -W -f='${Version}' docker.io")
    newer = host.run(f"dpkg --compare-versions {version} ge {DOCKER_IO_FLOOR}").rc == 0
    assert newer, f"docker.io {version} is older than the security update {DOCKER_IO_FLOOR}"


# --- HN-USR-07 docker group ------------------------------------------------------------------


def docker_group_members(host: Host) -> list[str]:
    """Members of the docker group, listed or by primary group."""
    entry = host.run("getent group docker")
    if entry.rc != 0:
        return []
    fields = entry.stdout.strip().split(":")
    members = [m for m in fields[3].split(",") if m] if len(fields) > 3 else []
    gid = fields[2]
    for line in host.check_output("getent passwd").splitlines():
        user = line.split(":")
        if len(user) > 3 and user[3] == gid and user[0] not in members:
            members.append(user[0])
    return members


@check(
    "HN-USR-07",
    "Ensure the docker group is empty (membership is root on the host)",
    level="L1",
    severity="crit",
    roles="rootless rootful",
    remediation=(
        "`gpasswd -d USER docker` for each member; the admin uses sudo and the workload user "
        "its own rootless daemon (cloudinit/harden.sh.j2 refuses a non-empty group)."
    ),
)
def test_docker_group_empty(host: Host, node: Profile) -> None:
    members = docker_group_members(host)
    assert not members, f"the docker group has {', '.join(members)}, expected nobody"
