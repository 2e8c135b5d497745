"""A.6 Docker daemon, rootful with userns-remap: the system dockerd as it runs now.

The effective state comes from the daemon (`docker info` JSON through the facts helper), the
kernel (nftables, the process table, listening sockets) and a container the helper starts
(`docker-probe rootful`). /etc/docker/daemon.json is read where the property is config-only
(no-new-privileges, userland-proxy, log-level); HN-DKR-01 then proves the running daemon
started after the file last changed, so the file is what runs (catalogue C.6), and that
docker.service is active and enabled: a daemon that is down leaves the checks that ask it without
evidence (WARN), and HN-DKR-01 says why (FAIL), as HN-DKRL-03 does for the rootless daemon.
HN-DKR-01..08 (configuration) are here; check_docker_access.py has the daemon's exposure.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from provision.verify.checks import Inconclusive, check
from provision.verify.nodefacts import docker_info, numeric_ids, stat_paths
from provision.verify.parse import (
    KNOWN_KEYS,
    flag_keys,
    parse_execstart,
    parse_kv,
    subid_range,
)
from provision.verify.plugin import Facts
from provision.verify.snapshot import Snapshot

DAEMON_JSON = "/etc/docker/daemon.json"
RESTART = (
    "Fix /etc/docker/daemon.json (rendered from cloudinit/daemon.json.j2) and "
    "`systemctl restart docker`; re-provision the node if the file is not the rendered one."
)


# --- node helpers ----------------------------------------------------------------------------


def daemon_config(snap: Snapshot) -> dict[str, Any]:
    f = snap.file(DAEMON_JSON)
    assert f.exists, f"{DAEMON_JSON} is missing"
    try:
        config: dict[str, Any] = json.loads(f.content_string)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"{DAEMON_JSON} is not valid JSON: {exc}") from None
    assert isinstance(config, dict), f"{DAEMON_JSON} is not a JSON object"
    return config


def dockerd_argv(snap: Snapshot) -> list[str]:
    lines = parse_execstart(snap.output("docker-execstart"))
    assert lines, "docker.service has no ExecStart"
    return lines[0]


# --- HN-DKR-01 daemon.json valid, known, no flag clash, loaded --------------------------------

DKR_01 = check(
    "HN-DKR-01",
    "Ensure daemon.json is valid, has only known keys, no flag clash, and is what runs "
    "(docker.service active and enabled)",
    level="L1",
    severity="high",
    roles="rootful",
    remediation=(
        "Keys given as dockerd flags (docker.service ExecStart, e.g. -H fd://) must not also be in "
        "daemon.json: change flags with a drop-in. `systemctl enable --now docker.service` if it "
        "is stopped or disabled (`journalctl -u docker` says why it did not start). " + RESTART
    ),
)


@DKR_01
def test_daemon_json_known_keys(snap: Snapshot) -> None:
    unknown = sorted(set(daemon_config(snap)) - KNOWN_KEYS)
    assert not unknown, f"{DAEMON_JSON} has keys dockerd 20.10 does not know: {', '.join(unknown)}"


@DKR_01
def test_daemon_json_no_flag_clash(snap: Snapshot) -> None:
    clash = sorted(set(daemon_config(snap)) & flag_keys(dockerd_argv(snap)))
    assert not clash, f"set both as dockerd flags and in {DAEMON_JSON}: {', '.join(clash)}"


@DKR_01
@pytest.mark.parametrize("key,want", [("is-active", "active"), ("is-enabled", "enabled")])
def test_docker_service(snap: Snapshot, key: str, want: str) -> None:
    """The rootful role needs the daemon: down, it is a FAIL here, and a WARN (no evidence) in
    each check that asks it (the helper's exit 3), as HN-DKRL-03 is for the rootless daemon."""
    out = snap.run(f"{key} docker.service")  # `systemctl is-active|is-enabled docker.service`
    state = out.stdout.strip() or out.stderr.strip() or f"unknown (exit {out.rc})"
    assert state == want, f"docker.service is {state}, expected {want}"


@DKR_01
def test_daemon_runs_current_config(snap: Snapshot, facts: Facts) -> None:
    docker_info(facts)  # the daemon answers (Inconclusive if down: test_docker_service FAILs)
    # `pgrep -u 0 -o -x dockerd`, then "PID NOW MTIME ELAPSED" (date, stat -c %Y, ps etimes).
    age = snap.output("dockerd-age").split()
    if not age:
        raise Inconclusive("docker.service is active but no root dockerd process is visible")
    pid, now, mtime, elapsed = age
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
def test_userns_remap_configured(snap: Snapshot, facts: Facts) -> None:
    remap = daemon_config(snap).get("userns-remap")
    assert remap, f"{DAEMON_JSON} has no userns-remap"
    options = docker_info(facts).get("SecurityOptions") or []
    assert "name=userns" in options, f"SecurityOptions are {options}: userns-remap is not active"


@DKR_02
@pytest.mark.parametrize("db", ["/etc/subuid", "/etc/subgid"])
def test_dockremap_subids(snap: Snapshot, db: str) -> None:
    found = subid_range(snap.file(db).content_string, "dockremap")
    assert found is not None, f"{db} has no dockremap range"
    assert found[1] >= 65536, f"{db} gives dockremap {found[1]} ids, expected at least 65536"


@DKR_02
def test_remapped_root_dir(snap: Snapshot, facts: Facts) -> None:
    uid = subid_range(snap.file("/etc/subuid").content_string, "dockremap")
    gid = subid_range(snap.file("/etc/subgid").content_string, "dockremap")
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
def test_icc_configured(snap: Snapshot) -> None:
    assert daemon_config(snap).get("icc") is False, f'{DAEMON_JSON} lacks "icc": false'


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
def test_no_new_privileges(snap: Snapshot) -> None:
    value = daemon_config(snap).get("no-new-privileges")
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
def test_userland_proxy_off(snap: Snapshot) -> None:
    value = daemon_config(snap).get("userland-proxy")
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
def test_log_level(snap: Snapshot, facts: Facts) -> None:
    level = daemon_config(snap).get("log-level", "info")
    assert level == "info", f'{DAEMON_JSON} "log-level" is {level!r}, expected "info"'
    assert docker_info(facts).get("Debug") is False, "the daemon runs in debug mode"


@DKR_07
def test_log_driver(snap: Snapshot, facts: Facts) -> None:
    driver = docker_info(facts).get("LoggingDriver")
    assert driver in ("journald", "syslog", "local", "json-file"), (
        f"the log driver is {driver}: logs neither centralised nor rotated by the node"
    )
    if driver == "json-file":
        opts = daemon_config(snap).get("log-opts") or {}
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
def test_daemon_json_network_keys(snap: Snapshot) -> None:
    config = daemon_config(snap)
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
