"""A.7 Docker daemon, rootless: the workload user's own daemon, as it runs now.

The effective state comes from the daemon itself (`docker info` on the user's socket through the
facts helper), the process table, cgroupfs and a container the helper starts (`docker-probe`).
Config text is read only where it is the property (the unit's ExecStart). A daemon that is down
leaves the info-based checks without evidence: WARN, and HN-DKRL-03 says why.
"""

from __future__ import annotations

import json

import pytest

from provision.verify.checks import Inconclusive, check
from provision.verify.nodefacts import (
    builtin_module,
    installed_packages,
    loaded_modules,
    mounts,
    rootless_info,
    stat_paths,
    workload_ids,
)
from provision.verify.parse import (
    compare_versions,
    environment_path,
    mount_of,
    parse_kv,
    probe_failures,
    unit_values,
)
from provision.verify.plugin import Facts, Profile
from provision.verify.snapshot import FactsError, Snapshot

ROOTLESS_UNIT = "/etc/systemd/user/docker-rootless.service"
CONTRIB = "/usr/share/docker.io/contrib"
RESTART = (
    "As the workload user: `systemctl --user restart docker-rootless` (the unit is "
    "cloudinit/docker-rootless.service.j2, started by cloudinit/docker-rootless.sh.j2); "
    "re-provision the node if the files are missing."
)


# --- node helpers ----------------------------------------------------------------------------


def user_processes(snap: Snapshot, user: str) -> list[str]:
    """Command lines of the user's processes (the process table is public: no hidepid)."""
    out = snap.run("ps-workload")  # `ps -o args= -u USER`, USER the helper's workload user
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


# --- HN-DKRL-01 packages ---------------------------------------------------------------------

PACKAGES = ("docker.io", "rootlesskit", "slirp4netns", "uidmap", "dbus-user-session", "iptables")


@check(
    "HN-DKRL-01",
    "Ensure the rootless Docker packages are installed (rootlesskit, slirp4netns >= 0.4, ...)",
    level="L1",
    severity="high",
    roles="rootless",
    remediation="Add the package to provision/image.py BASE_PACKAGES and rebuild the golden image.",
)
@pytest.mark.parametrize("package", PACKAGES)
def test_rootless_package(snap: Snapshot, package: str) -> None:
    status, version = installed_packages(snap).get(package, ("", ""))
    assert status == "install ok installed", f"{package} is not installed ({status or 'unknown'})"
    if package == "slirp4netns":
        newer = compare_versions(version, "0.4") >= 0
        assert newer, f"slirp4netns {version} is older than 0.4"


# --- HN-DKRL-02 Debian script paths ----------------------------------------------------------

DKRL_02 = check(
    "HN-DKRL-02",
    "Ensure rootless Docker runs Debian's dockerd-rootless.sh with /usr/sbin on PATH",
    level="L1",
    severity="high",
    roles="rootless",
    remediation=(
        f"The user unit {ROOTLESS_UNIT} (cloudinit/docker-rootless.service.j2) must run "
        f"{CONTRIB}/dockerd-rootless.sh with PATH including {CONTRIB}, /usr/bin and /usr/sbin. "
        + RESTART
    ),
)


@DKRL_02
@pytest.mark.parametrize("script", ["dockerd-rootless.sh", "dockerd-rootless-setuptool.sh"])
def test_debian_rootless_scripts(snap: Snapshot, script: str) -> None:
    f = snap.file(f"{CONTRIB}/{script}")
    assert f.exists and f.mode & 0o111, f"{CONTRIB}/{script} is missing or not executable"


@DKRL_02
def test_rootless_unit_execstart(snap: Snapshot) -> None:
    f = snap.file(ROOTLESS_UNIT)
    assert f.exists, f"{ROOTLESS_UNIT} is missing"
    text = f.content_string
    assert unit_values(text, "ExecStart") == [f"{CONTRIB}/dockerd-rootless.sh"], (
        f"{ROOTLESS_UNIT} ExecStart is {unit_values(text, 'ExecStart')}, "
        f"expected {CONTRIB}/dockerd-rootless.sh"
    )
    path = environment_path(text)
    missing = [d for d in (CONTRIB, "/usr/bin", "/usr/sbin") if d not in path]
    assert not missing, f"{ROOTLESS_UNIT} PATH is {':'.join(path)}: lacks {', '.join(missing)}"


@DKRL_02
def test_rootless_daemon_process(snap: Snapshot, node: Profile) -> None:
    """The daemon that runs is the one the unit starts (not a hand-started or other one)."""
    procs = user_processes(snap, node.workload_user)
    if not any("dockerd" in p for p in procs):
        # Whether it should run is HN-DKRL-03's verdict; here there is nothing to inspect.
        raise Inconclusive(f"no rootless daemon of {node.workload_user} is running")
    assert any(f"{CONTRIB}/dockerd-rootless.sh" in p for p in procs), (
        f"no process of {node.workload_user} runs {CONTRIB}/dockerd-rootless.sh"
    )
    assert any(p.split()[0] in ("dockerd", "/usr/sbin/dockerd") for p in procs), (
        f"no dockerd runs as {node.workload_user}"
    )


# --- HN-DKRL-03 service and linger -----------------------------------------------------------

DKRL_03 = check(
    "HN-DKRL-03",
    "Ensure the user service docker-rootless is active and enabled, with lingering on",
    level="L1",
    severity="high",
    roles="rootless",
    remediation=(
        "`loginctl enable-linger <user>` and, as the user, `systemctl --user enable --now "
        "docker-rootless` (cloudinit/docker-rootless.sh.j2 does both). " + RESTART
    ),
)


@DKRL_03
@pytest.mark.parametrize("key,want", [("active", "active"), ("enabled", "enabled")])
def test_rootless_service(facts: Facts, key: str, want: str) -> None:
    state = parse_kv(facts("rootless-service"))
    assert state.get(key) == want, f"docker-rootless.service is {state.get(key)}, expected {want}"


@DKRL_03
def test_linger(snap: Snapshot, node: Profile) -> None:
    user = node.workload_user
    out = snap.run("linger")  # `loginctl show-user USER -p Linger`: "Linger=yes"
    value = out.stdout.strip().removeprefix("Linger=")
    assert value == "yes", f"lingering for {user} is {value or out.stderr.strip()}, expected yes"


# --- HN-DKRL-04 docker info ------------------------------------------------------------------

DKRL_04 = check(
    "HN-DKRL-04",
    "Ensure the rootless daemon reports rootless, seccomp, systemd cgroup v2, overlay2, home root",
    level="L1",
    severity="high",
    roles="rootless",
    remediation=(
        "Rootless dockerd must run under the user's systemd manager with cgroup v2 delegation "
        "(HN-DKRL-07) and no storage-driver or data-root override in ~/.config/docker. " + RESTART
    ),
)


@DKRL_04
@pytest.mark.parametrize("option", ["name=rootless", "name=seccomp,profile=default"])
def test_rootless_security_options(facts: Facts, option: str) -> None:
    options = rootless_info(facts).get("SecurityOptions") or []
    assert option in options, f"SecurityOptions are {options}, expected {option}"


@DKRL_04
@pytest.mark.parametrize(
    "field,want",
    [("CgroupDriver", "systemd"), ("CgroupVersion", "2"), ("Driver", "overlay2")],
)
def test_rootless_info_field(facts: Facts, field: str, want: str) -> None:
    got = rootless_info(facts).get(field)
    assert got == want, f"rootless docker info {field} is {got!r}, expected {want!r}"


@DKRL_04
def test_rootless_data_root(snap: Snapshot, facts: Facts, node: Profile) -> None:
    _, home = workload_ids(snap, node.workload_user)
    root = str(rootless_info(facts).get("DockerRootDir", ""))
    want = f"{home}/.local/share/docker"
    assert root == want or root.startswith(want + "/"), (
        f"Docker Root Dir is {root}, expected {want}"
    )
    fs = mount_of(root, mounts(snap))
    assert not fs.fstype.startswith("nfs"), f"{root} is on {fs.fstype} ({fs.source})"


# --- HN-DKRL-05 no rootful daemon on rootless-only nodes -------------------------------------

DKRL_05 = check(
    "HN-DKRL-05",
    "Ensure no rootful dockerd runs on rootless-only nodes",
    level="L1",
    severity="high",
    roles="rootless",
    remediation=(
        "`systemctl disable --now docker.service docker.socket` (the seed's runcmd does it when "
        "the inventory says docker: rootless)."
    ),
)


def _rootless_only(node: Profile) -> None:
    if "rootful" in node.roles:
        pytest.skip("N/A: this node declares the rootful role: the system daemon belongs here")


@DKRL_05
@pytest.mark.parametrize("unit", ["docker.service", "docker.socket"])
def test_system_docker_unit_off(snap: Snapshot, node: Profile, unit: str) -> None:
    _rootless_only(node)
    enabled = snap.run(f"is-enabled {unit}").stdout.strip()
    active = snap.run(f"is-active {unit}").stdout.strip()
    assert enabled in ("disabled", "masked"), f"{unit} is {enabled}, expected disabled"
    assert active != "active", f"{unit} is active"


@DKRL_05
def test_no_root_dockerd(snap: Snapshot, node: Profile) -> None:
    _rootless_only(node)
    assert not snap.file("/run/docker.sock").exists, "/run/docker.sock exists"
    pids = snap.run("pgrep-root-dockerd").stdout.split()
    assert not pids, f"dockerd runs as root (pid {', '.join(pids)})"


# --- HN-DKRL-06 no userns-remap, no userland-proxy=false -------------------------------------

DKRL_06 = check(
    "HN-DKRL-06",
    "Ensure the rootless daemon has no userns-remap and keeps the userland proxy (20.10)",
    level="L1",
    severity="high",
    roles="rootless",
    remediation=(
        'Remove userns-remap and `"userland-proxy": false` from the user\'s '
        "~/.config/docker/daemon.json and from dockerd flags; /etc/docker/daemon.json does not "
        "apply to the rootless daemon. " + RESTART
    ),
)


@DKRL_06
def test_rootless_no_userns_remap(facts: Facts) -> None:
    options = rootless_info(facts).get("SecurityOptions") or []
    assert "name=userns" not in options, f"the rootless daemon runs with userns-remap: {options}"


@DKRL_06
def test_rootless_dockerd_flags(snap: Snapshot, node: Profile) -> None:
    daemons = [p for p in user_processes(snap, node.workload_user) if "dockerd" in p.split()[0]]
    if not daemons:
        raise Inconclusive(f"no dockerd of {node.workload_user} runs: its flags cannot be read")
    bad = [
        flag
        for p in daemons
        for flag in p.split()
        if flag.startswith("--userns-remap") or flag in ("--userland-proxy=false",)
    ]
    assert not bad, f"the rootless dockerd runs with {' '.join(bad)}"


@DKRL_06
def test_rootless_daemon_json(snap: Snapshot, facts: Facts, node: Profile) -> None:
    _, home = workload_ids(snap, node.workload_user)
    path = f"{home}/.config/docker/daemon.json"
    if path not in stat_paths(facts, path):
        return  # no file: nothing in it can set either key (the flags are checked above)
    # `rootless-config` (root): the workload user's ~/.config/docker/daemon.json, verbatim.
    config = json.loads(facts("rootless-config") or "{}")
    assert "userns-remap" not in config, f"{path} sets userns-remap {config['userns-remap']!r}"
    assert config.get("userland-proxy", True) is not False, f"{path} sets userland-proxy false"


# --- HN-DKRL-07 cgroup delegation ------------------------------------------------------------


@check(
    "HN-DKRL-07",
    "Ensure user managers get the cpu, cpuset, io, memory and pids controllers",
    level="L1",
    severity="med",
    roles="rootless",
    remediation=(
        "/etc/systemd/system/user@.service.d/delegate.conf (cloudinit/user-delegate.conf.j2) "
        "must say Delegate=cpu cpuset io memory pids; `systemctl daemon-reload` and restart "
        "user@<uid>.service (or reboot)."
    ),
)
@pytest.mark.parametrize("controller", ["cpu", "cpuset", "io", "memory", "pids"])
def test_delegated_controller(snap: Snapshot, node: Profile, controller: str) -> None:
    uid, _ = workload_ids(snap, node.workload_user)
    path = f"/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service/cgroup.controllers"
    f = snap.file(path)
    assert f.exists, f"{path} is missing: no user manager for {node.workload_user} (linger?)"
    have = f.content_string.split()
    assert controller in have, (
        f"user@{uid}.service has controllers {' '.join(have)}: no {controller}"
    )


# --- HN-DKRL-08 kernel prerequisites ---------------------------------------------------------

DKRL_08 = check(
    "HN-DKRL-08",
    "Ensure the kernel allows unprivileged user namespaces and has ip_tables",
    level="L1",
    severity="high",
    roles="rootless",
    remediation=(
        "The sysctls come from /etc/sysctl.d/60-provision-hardening.conf "
        "(provision/baseline/hardening.py);"
        " ip_tables must be listed in /etc/modules-load.d/provision.conf "
        "(hardening.modules()). " + "Re-provision the node."
    ),
)


@DKRL_08
def test_userns_sysctls(facts: Facts) -> None:
    values = facts.sysctl()
    clone = values.get("kernel.unprivileged_userns_clone")
    assert clone in (None, "1"), f"kernel.unprivileged_userns_clone is {clone}, expected 1"
    max_ns = values.get("user.max_user_namespaces", "0")
    assert int(max_ns) > 0, f"user.max_user_namespaces is {max_ns}, expected > 0"


@DKRL_08
def test_ip_tables_available(snap: Snapshot) -> None:
    loaded = loaded_modules(snap)
    if "ip_tables" in loaded:
        return
    assert builtin_module(snap, "ip_tables"), "ip_tables is neither loaded nor built in"


# --- HN-DKRL-09 id-mapping helpers -----------------------------------------------------------


@check(
    "HN-DKRL-09",
    "Ensure newuidmap and newgidmap are setuid root (or carry file capabilities)",
    level="L1",
    severity="high",
    roles="rootless",
    remediation="`chmod 4755 /usr/bin/newuidmap /usr/bin/newgidmap` (package uidmap).",
)
@pytest.mark.parametrize("path", ["/usr/bin/newuidmap", "/usr/bin/newgidmap"])
def test_id_map_helper(snap: Snapshot, path: str) -> None:
    f = snap.file(path)
    assert f.exists, f"{path} is missing"
    assert not f.mode & 0o022, f"{path} is {f.user} {f.mode:o}: writable by group or others"
    if f.user == "root" and f.mode & 0o4000:
        return
    caps = snap.run(f"file-caps {path}")  # its security.capability xattr: rc 0 hex, 1 none
    if caps.rc not in (0, 1):
        raise FactsError(f"the file capabilities of {path} could not be read: {caps.stderr}")
    assert caps.rc == 0 and caps.stdout.strip(), (
        f"{path} is {f.user} {f.mode:o} without file capabilities: expected root 4755"
    )


# --- HN-DKRL-11 behavioural smoke test -------------------------------------------------------


DKRL_11 = check(
    "HN-DKRL-11",
    "Ensure a rootless container runs as the user's ids, with seccomp, no caps, read-only root",
    level="L1",
    severity="high",
    roles="rootless",
    remediation=(
        "Check HN-SYS-07/08, HN-DKRL-08/09 and the user's /etc/subuid range (HN-USR-08). " + RESTART
    ),
)


@DKRL_11
def test_rootless_probe_ids(facts: Facts) -> None:
    bad = probe_failures(parse_kv(facts("docker-probe", "rootless")))
    assert not bad, "; ".join(bad)


@DKRL_11
@pytest.mark.parametrize(
    "key,want",
    [
        ("seccomp", "2"),
        ("capeff", "0000000000000000"),
        ("nonewprivs", "1"),
        ("rootfs_write", "denied"),
    ],
)
def test_rootless_probe_confinement(facts: Facts, key: str, want: str) -> None:
    got = parse_kv(facts("docker-probe", "rootless")).get(key)
    assert got == want, f"the rootless probe container has {key}={got}, expected {want}"
