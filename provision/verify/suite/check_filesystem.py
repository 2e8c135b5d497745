"""A.5 Filesystem, mounts, permissions: what the kernel has mounted and what `stat` says now.

Mount options come from /proc/mounts (the kernel's view, not fstab). Ownership and modes of
paths the verifier cannot reach come from the facts helper's `stat` verb, run as root. A mode
passes when it has no permission bit beyond the expected one ("644 or stricter", as CIS means it).
HN-FS-01 (separate filesystems) is a deviation in `provision/baseline/hardening.py` and has no
check here.
"""

from __future__ import annotations

import json

import pytest

from provision.verify.checks import Inconclusive, check
from provision.verify.nodefacts import (
    mounts,
    numeric_ids,
    stat_paths,
    workload_ids,
)
from provision.verify.parse import (
    Stat,
    k8s_expectation,
    parse_stat,
    parse_world_writable,
    rootless_files,
)
from provision.verify.plugin import Facts, Profile
from provision.verify.snapshot import Snapshot

REPROVISION = "Re-provision the node (`provision up`) so the seed files are written again."


# --- mode assertions -------------------------------------------------------------------------


def expect_stat(st: Stat, owner: str, group: str | tuple[str, ...], mode: int) -> None:
    groups = (group,) if isinstance(group, str) else group
    assert st.owner == owner and st.group in groups, (
        f"{st.describe()}, expected owner {owner}:{'|'.join(groups)}"
    )
    assert not st.excess(mode), (
        f"{st.describe()}, expected {mode:o} or stricter (extra bits {st.excess(mode):o})"
    )


# --- HN-FS-02 mount options ------------------------------------------------------------------

# DEVSEC linux-baseline os-14/15/16 (mount_exec/suid/dev_blocklist): the option each mount point
# must carry when it is a filesystem of its own.
NOEXEC = ("/boot", "/dev", "/dev/shm", "/tmp", "/var/log", "/var/log/audit", "/var/tmp")
NOSUID = (*NOEXEC, "/home", "/run", "/var")
NODEV = (
    "/boot",
    "/dev/shm",
    "/home",
    "/run",
    "/tmp",
    "/var",
    "/var/log",
    "/var/log/audit",
    "/var/tmp",
)
MOUNT_OPTIONS = sorted(
    {(mp, "noexec") for mp in NOEXEC}
    | {(mp, "nosuid") for mp in NOSUID}
    | {(mp, "nodev") for mp in NODEV}
)


@check(
    "HN-FS-02",
    "Ensure separate mounts carry DEVSEC's noexec, nosuid and nodev options",
    level="L1",
    severity="med",
    remediation=(
        "/tmp and /dev/shm get their options from the fstab lines cloudinit/harden.sh.j2 writes; "
        "/dev and /run are mounted by the initramfs and systemd. " + REPROVISION
    ),
)
@pytest.mark.parametrize("mountpoint,option", MOUNT_OPTIONS)
def test_mount_option(snap: Snapshot, mountpoint: str, option: str) -> None:
    found = mounts(snap).get(mountpoint)
    if found is None:
        pytest.skip(f"N/A: {mountpoint} is not a separate filesystem (deviation HN-FS-01)")
    assert option in found.options, (
        f"{mountpoint} ({found.fstype}) is mounted {','.join(sorted(found.options))}: no {option}"
    )


# --- HN-FS-03 /dev/shm and /proc -------------------------------------------------------------


@check(
    "HN-FS-03",
    "Ensure /dev/shm is nodev,nosuid,noexec and /proc is nosuid,nodev,noexec",
    level="L1",
    severity="low",
    remediation=(
        "/dev/shm is remounted from the fstab line cloudinit/harden.sh.j2 writes; /proc's options "
        "are systemd's defaults, so look for an fstab line or mount unit overriding them. "
        + REPROVISION
    ),
)
@pytest.mark.parametrize(
    "mountpoint,required",
    [("/dev/shm", ("nodev", "nosuid", "noexec")), ("/proc", ("rw", "nosuid", "nodev", "noexec"))],
)
def test_special_mount(snap: Snapshot, mountpoint: str, required: tuple[str, ...]) -> None:
    found = mounts(snap).get(mountpoint)
    assert found is not None, f"{mountpoint} is not mounted"
    missing = [o for o in required if o not in found.options]
    assert not missing, (
        f"{mountpoint} is mounted {','.join(sorted(found.options))}: missing {','.join(missing)}"
    )


# --- HN-FS-04 world-writable -----------------------------------------------------------------

FS_04 = check(
    "HN-FS-04",
    "Ensure world-writable directories are sticky and no file is world-writable",
    level="L1",
    severity="med",
    remediation="chmod +t the directories and o-w the files listed; find what created them.",
)


@FS_04
def test_world_writable_dirs_sticky(facts: Facts) -> None:
    dirs, _ = parse_world_writable(facts("find-world-writable"))
    assert not dirs, f"world-writable directories without the sticky bit: {', '.join(dirs)}"


@FS_04
def test_no_world_writable_files(facts: Facts) -> None:
    _, files = parse_world_writable(facts("find-world-writable"))
    assert not files, f"world-writable files: {', '.join(files)}"


# --- HN-FS-05 SUID/SGID ----------------------------------------------------------------------

# The setuid/setgid programs a Debian 12 node of this tool may have (golden image package set):
# each one is there for a login, password or mount path the node uses, plus the two id-mapping
# helpers rootless Docker needs (never strip them: Docker rootless "How it works").
SUID_ALLOWED: frozenset[str] = frozenset(
    {
        "/usr/bin/chfn",
        "/usr/bin/chsh",
        "/usr/bin/gpasswd",
        "/usr/bin/mount",
        "/usr/bin/newgrp",
        "/usr/bin/passwd",
        "/usr/bin/su",
        "/usr/bin/sudo",
        "/usr/bin/umount",
        "/usr/bin/newuidmap",
        "/usr/bin/newgidmap",
        "/usr/bin/chage",  # setgid shadow
        "/usr/bin/expiry",  # setgid shadow
        "/usr/sbin/unix_chkpwd",  # setgid shadow: pam_unix's password check
        "/usr/lib/dbus-1.0/dbus-daemon-launch-helper",
        "/usr/lib/openssh/ssh-keysign",
        "/usr/bin/ssh-agent",  # setgid _ssh (Debian 12): only so other processes cannot ptrace it
        # pam_tmpdir (HN-USR-10) makes each user's private /tmp/user/UID through this helper.
        "/usr/sbin/pam-tmpdir-helper",
        # setgid mail (liblockfile-bin, for aide-common's daily check): it may only create lock
        # files in /var/mail, which is empty (no mail system on a node).
        "/usr/bin/dotlockfile",
    }
)
ID_MAP_HELPERS = ("/usr/bin/newuidmap", "/usr/bin/newgidmap")
SUID_FIX = (
    "Remove the setuid/setgid bit (chmod u-s,g-s) from programs not on the allow-list in "
    "provision/verify/suite/check_filesystem.py, or add a reviewed one there; the golden image "
    "(provision/image.py BASE_PACKAGES) decides what is installed. Never strip newuidmap or "
    "newgidmap: rootless Docker needs them."
)
FS_05 = check(
    "HN-FS-05",
    "Ensure the SUID/SGID inventory is within the allow-list (newuidmap/newgidmap kept)",
    level="L1",
    severity="high",
    remediation=SUID_FIX,
)


@FS_05
def test_suid_inventory(facts: Facts) -> None:
    found = [p for p in facts("find-suid").splitlines() if p.strip()]
    unknown = sorted(set(found) - SUID_ALLOWED)
    assert not unknown, f"setuid/setgid files not on the allow-list: {', '.join(unknown)}"


@FS_05
@pytest.mark.parametrize("path", ID_MAP_HELPERS)
def test_id_map_helper_setuid(snap: Snapshot, node: Profile, path: str) -> None:
    if "rootless" not in node.roles:
        pytest.skip("N/A: no rootless Docker on this node")
    f = snap.file(path)
    assert f.exists, f"{path} is missing: rootless Docker cannot map its subordinate ids"
    assert (f.user, f.mode) == ("root", 0o4755), (
        f"{path} is {f.user} {f.mode:o}, expected root 4755 (rootlesskit needs it setuid)"
    )


# --- HN-FS-06 rootful Docker file modes ------------------------------------------------------

DOCKER_FILES = (
    # (path, owner, group, mode) after CIS Docker 1.6.0 section 3 on Debian's paths.
    ("/lib/systemd/system/docker.service", "root", "root", 0o644),
    ("/lib/systemd/system/docker.socket", "root", "root", 0o644),
    ("/etc/docker", "root", "root", 0o755),
    ("/etc/docker/daemon.json", "root", "root", 0o644),
    ("/etc/default/docker", "root", "root", 0o644),
    ("/run/docker.sock", "root", "docker", 0o660),
    ("/run/containerd/containerd.sock", "root", "root", 0o660),
)
DOCKER_FILES_FIX = (
    "chown/chmod the path as expected. daemon.json is written by cloud-init from "
    "cloudinit/daemon.json.j2; the units and /etc/default/docker come from the docker.io package "
    "(reinstall it); the sockets are created by dockerd and containerd. " + REPROVISION
)
FS_06 = check(
    "HN-FS-06",
    "Ensure rootful Docker files, directories and sockets have CIS owners and modes",
    level="L1",
    severity="high",
    roles="rootful",
    remediation=DOCKER_FILES_FIX,
)


@FS_06
@pytest.mark.parametrize("path,owner,group,mode", DOCKER_FILES, ids=[p[0] for p in DOCKER_FILES])
def test_docker_file_mode(facts: Facts, path: str, owner: str, group: str, mode: int) -> None:
    st = stat_paths(facts, path).get(path)
    assert st is not None, f"{path} is missing"
    expect_stat(st, owner, group, mode)


@FS_06
def test_docker_unit_is_debians(snap: Snapshot) -> None:
    """The modes above are checked on Debian's unit path: make sure that is the unit in use."""
    unit = snap.output("docker-fragment")
    assert unit == "/lib/systemd/system/docker.service", (
        f"docker.service is loaded from {unit or 'nowhere'}, expected Debian's "
        "/lib/systemd/system/docker.service"
    )


@FS_06
@pytest.mark.parametrize("kind", ["tlscacert", "tlscert", "tlskey"])
def test_docker_tls_file_mode(snap: Snapshot, facts: Facts, kind: str) -> None:
    config = json.loads(snap.file("/etc/docker/daemon.json").content_string)
    path = config.get(kind)
    if not path:
        pytest.skip(f"N/A: no {kind} configured (the daemon has no TCP listener)")
    st = stat_paths(facts, path).get(path)
    assert st is not None, f"{kind} {path} is missing"
    expect_stat(st, "root", "root", 0o400 if kind == "tlskey" else 0o444)


# --- HN-FS-07 rootless Docker file modes -----------------------------------------------------


@check(
    "HN-FS-07",
    "Ensure rootless Docker's runtime dir, socket, config and data root are private to the user",
    level="L1",
    severity="high",
    roles="rootless",
    remediation=(
        "chown the path to the workload user and chmod it as expected (docker-rootless.service "
        "from cloudinit/docker-rootless.service.j2 creates them as the user); then restart it: "
        "`systemctl --user restart docker-rootless` as the user."
    ),
)
@pytest.mark.parametrize(
    "index", range(5), ids=["runtime-dir", "socket", "config", "daemon.json", "data-root"]
)
def test_rootless_file_mode(snap: Snapshot, facts: Facts, node: Profile, index: int) -> None:
    uid, home = workload_ids(snap, node.workload_user)
    path, mode, required = rootless_files(uid, home)[index]
    st = stat_paths(facts, path).get(path)
    if st is None and path.endswith("/docker.sock"):
        # The daemon makes its socket: without one there is no evidence (HN-DKRL-03 fails).
        raise Inconclusive(f"{path} is absent: the rootless daemon of {node.workload_user} is down")
    if st is None:
        assert not required, f"{path} is missing"
        pytest.skip(f"N/A: {path} does not exist")
    if path.endswith("/docker.sock") and st.group != node.workload_user:
        _expect_rootless_socket(snap, facts, node.workload_user, st)
        return
    expect_stat(st, node.workload_user, node.workload_user, mode)


def _expect_rootless_socket(snap: Snapshot, facts: Facts, user: str, st: Stat) -> None:
    """The rootless dockerd gives its socket the `docker` group *inside* its user namespace:
    on the host that is one of the user's own subordinate gids, so group access is the user's."""
    assert st.owner == user, f"{st.describe()}, expected owner {user}"
    assert not st.mode & 0o002, f"{st.describe()}: writable by everyone"
    if not st.mode & 0o020:
        return
    ids = numeric_ids(facts, st.path)
    if ids is None:
        raise Inconclusive(
            f"{st.describe()}: group-writable by a gid without a name, and the node's helper "
            "has no stat-ids verb to tell whether it is one of the user's subordinate gids"
        )
    subgid = next(
        (
            (int(f[1]), int(f[2]))
            for f in (
                line.split(":") for line in snap.file("/etc/subgid").content_string.splitlines()
            )
            if len(f) == 3 and f[0] == user
        ),
        None,
    )
    inside = subgid is not None and subgid[0] <= ids[1] < subgid[0] + subgid[1]
    assert inside, (
        f"{st.describe()} (gid {ids[1]}): group-writable by a gid outside {user}'s subgid range"
    )


# --- HN-FS-08 Kubernetes file modes ----------------------------------------------------------

K8S_CONF_FILES = (
    "/etc/kubernetes/admin.conf",
    "/etc/kubernetes/super-admin.conf",
    "/etc/kubernetes/scheduler.conf",
    "/etc/kubernetes/controller-manager.conf",
    "/etc/kubernetes/kubelet.conf",
    "/var/lib/kubelet/config.yaml",
)
# Trees listed through the helper's `find-stat` (their directories may be root-only).
K8S_TREES = ("/etc/kubernetes/manifests", "/etc/kubernetes/pki", "/etc/cni/net.d")


FS_08 = check(
    "HN-FS-08",
    "Ensure Kubernetes manifests, kubeconfigs, kubelet config, PKI and CNI files are root-only",
    level="L1",
    severity="high",
    roles="k8s",
    remediation=(
        "chown root:root and chmod 600 (certificates 644, etcd data dir 700) as listed; the "
        "Kubernetes bootstrap (issue #7) must create them so."
    ),
)


def _require_kubernetes(facts: Facts) -> None:
    # /etc/kubernetes exists from first boot (the seed's cluster configuration): kubeadm has run
    # once the kubelet has its kubeconfig or config.
    if not stat_paths(facts, "/etc/kubernetes/kubelet.conf", "/var/lib/kubelet/config.yaml"):
        pytest.skip("N/A: kubeadm has not run on this node (no kubelet kubeconfig or config)")


@FS_08
def test_k8s_config_file_modes(facts: Facts) -> None:
    _require_kubernetes(facts)
    found = stat_paths(facts, *K8S_CONF_FILES)
    assert found, "none of the kubeadm kubeconfigs or the kubelet config exists"
    for st in found.values():
        expect_stat(st, "root", "root", 0o600)


@FS_08
def test_k8s_tree_modes(facts: Facts) -> None:
    _require_kubernetes(facts)
    # `find-stat DIR...` (root): `%p %u:%g %m` for everything under each directory.
    found = parse_stat(facts("find-stat", *K8S_TREES))
    bad = []
    for st in found.values():
        mode = k8s_expectation(st.path)
        if mode is None:
            continue  # directories, and files the benchmark says nothing about
        if (st.owner, st.group) != ("root", "root") or st.excess(mode):
            bad.append(f"{st.describe()} (expected root:root {mode:o} or stricter)")
    assert not bad, "; ".join(bad)


@FS_08
def test_k8s_etcd_data_dir(facts: Facts, node: Profile) -> None:
    _require_kubernetes(facts)
    if "cp" not in node.roles:
        pytest.skip("N/A: etcd runs on control-plane nodes only")
    st = stat_paths(facts, "/var/lib/etcd").get("/var/lib/etcd")
    assert st is not None, "/var/lib/etcd is missing on a control-plane node"
    assert not st.excess(0o700), f"{st.describe()}, expected 700 or stricter"


@FS_08
def test_k8s_kubelet_units(snap: Snapshot, facts: Facts) -> None:
    _require_kubernetes(facts)
    shown = snap.output("kubelet-units").split()
    assert shown, "kubelet.service has no unit file"
    for st in stat_paths(facts, *shown).values():
        expect_stat(st, "root", "root", 0o600)


# --- HN-FS-10 cron and /var/log ownership ----------------------------------------------------

CRON_PATHS = (
    "/etc/crontab",
    "/etc/cron.hourly",
    "/etc/cron.daily",
    "/etc/cron.weekly",
    "/etc/cron.monthly",
    "/etc/cron.yearly",
    "/etc/cron.d",
)
FS_10 = check(
    "HN-FS-10",
    "Ensure cron files are root-only and /var/log is root-owned",
    level="L1",
    severity="low",
    remediation=(
        "chown root:root and chmod og-rwx the cron paths (cloudinit/harden.sh.j2 does it at "
        "first boot); chown root:root /var/log (group syslog is accepted)."
    ),
)


CRON_DAEMONS = ("/usr/sbin/cron", "/usr/sbin/crond", "/usr/sbin/anacron", "/usr/bin/crontab")


@FS_10
@pytest.mark.parametrize("path", CRON_PATHS)
def test_cron_path_private(snap: Snapshot, path: str) -> None:
    if not any(snap.file(d).exists for d in CRON_DAEMONS):
        # Packages drop files in /etc/cron.d and /etc/cron.daily whether or not cron exists.
        pytest.skip("N/A: no cron daemon is installed: nothing runs the cron files")
    f = snap.file(path)
    if not f.exists:
        pytest.skip(f"N/A: {path} does not exist")
    assert (f.user, f.group) == ("root", "root"), (
        f"{path} is {f.user}:{f.group}, expected root:root"
    )
    assert not f.mode & 0o077, f"{path} is {f.mode:o}: group or others have access"


@FS_10
def test_var_log_owner(snap: Snapshot) -> None:
    f = snap.file("/var/log")
    assert f.user == "root" and f.group in ("root", "syslog"), (
        f"/var/log is {f.user}:{f.group}, expected root:root or root:syslog"
    )
    assert not f.mode & 0o002, f"/var/log is {f.mode:o}: writable by everyone"
