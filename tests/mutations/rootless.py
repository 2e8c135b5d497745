"""Rootless Docker (check_rootless.py): the workload user's daemon as it runs (`rootless-info`,
`rootless-service`, its processes, the rootless probe), its unit, packages and kernel prerequisites.

ROOTLESS_DOWN is `systemctl --user stop docker-rootless` as the facts helper then answers (the
integration run's third fault): its socket is gone, so every verb that needs the daemon exits 3;
HN-DKRL-03 FAILs, the facts that need the daemon WARN, and nothing of the rootful daemon changes.
HN-DKRL-05 judges a rootless-only node: ROOTLESS_ONLY brings the recording there first.
"""

from tests.mutations import (
    Edit,
    answer,
    both,
    content,
    mutation,
    probe,
    probe_exit,
    replace,
    stat,
    sysctl,
)
from tests.mutations.docker import DAEMON_DOWN, drop_lines
from tests.recording import Recording

SOCK = "/run/user/1001/docker.sock"
UNIT = "/etc/systemd/user/docker-rootless.service"
CONFIG = "/home/app/.config/docker/daemon.json"
INFO = ("verbs", "rootless-info")
DOWN = f"verify-facts: {SOCK} is absent: the rootless daemon of app is not running\n"
CONTRIB = "/usr/share/docker.io/contrib"
TTRPC = "u_str LISTEN 0      4096          /run/containerd/containerd.sock.ttrpc"
SOCKET_UNIT = "u_str LISTEN 0      4096   /run/docker.sock 12852   * 0"


def absent(path: str) -> Edit:
    def edit(rec: Recording) -> None:
        assert rec.file(path)["exists"], f"{path} is absent already"
        rec.doc["files"][path] = {"exists": False, "error": "No such file or directory"}

    return edit


def created(path: str, **fields: object) -> Edit:
    def edit(rec: Recording) -> None:
        assert not rec.file(path)["exists"], f"{path} exists already"
        rec.doc["files"][path] = {"exists": True, "is_directory": False, "is_symlink": False}
        rec.doc["files"][path] |= fields

    return edit


def as_recorded(path: str) -> Edit:
    """The file's fact as the recording has it (after a setup removed it)."""

    def edit(rec: Recording) -> None:
        rec.doc["files"][path] = Recording().file(path)

    return edit


def info(old: str, new: str) -> Edit:
    return replace(*INFO, old, new)


# The user's manager stops the unit: rootlesskit, its slirp4netns, dockerd and its containerd
# end, and dockerd removes its socket (the helper's require_rootless then exits 3).
ROOTLESS_DOWN = both(
    replace("verbs", "rootless-service", "active=active", "active=inactive"),
    answer(*INFO, 3, stderr=DOWN),
    answer("verbs", "docker-inspect rootless", 3, stderr=DOWN),
    probe_exit("rootless", 3, DOWN),
    absent(SOCK),
    drop_lines(
        ("commands", "ps-workload"), "rootlesskit", "/proc/self/exe", "slirp4netns", "dockerd"
    ),
    drop_lines(("commands", "ps-workload"), "containerd"),
    replace(
        "commands",
        "ps-comm",
        "rootlesskit\nexe\nslirp4netns\ndockerd\ncontainerd\n",
        "",
    ),
)
ROOTLESS_DOWN_WARNS = (
    "HN-DKRL-02 HN-DKRL-04 HN-DKRL-06 HN-DKRL-11 HN-FS-07 "
    "HN-CRT-01 HN-CRT-02 HN-CRT-03 HN-CRT-04 HN-CRT-05 HN-CRT-06 HN-CRT-07 HN-CRT-08 HN-CRT-09 "
    "HN-CRT-11 HN-CRT-12"
)

# A rootless-only node (inventory docker: rootless): the seed's runcmd ran `systemctl disable
# --now docker.service docker.socket`, so no system daemon, no socket unit, no /run/docker.sock;
# and the hardening sysctls keep forwarding off (HN-SYS-09: only rootful and k8s nodes route).
ROOTLESS_ONLY = both(
    sysctl("net.ipv4.ip_forward", "0"),
    replace("verbs", "sysctl-config", "net.ipv4.ip_forward = 1", "net.ipv4.ip_forward = 0"),
    DAEMON_DOWN,
    answer("commands", "is-enabled docker.service", 1, "disabled\n"),
    answer("commands", "is-enabled docker.socket", 1, "disabled\n"),
    answer("commands", "is-active docker.socket", 3, "inactive\n"),
    absent("/run/docker.sock"),
    drop_lines(("commands", "ss-listening"), "/run/docker.sock"),
)

MUTATIONS = [
    # --- HN-DKRL-01 packages
    mutation(
        "HN-DKRL-01",
        "rootlesskit removed (apt remove)",
        replace(
            "commands",
            "dpkg",
            "rootlesskit\tinstall ok installed",
            "rootlesskit\tdeinstall ok config-files",
        ),
    ),
    # --- HN-DKRL-02 Debian script paths
    mutation(
        "HN-DKRL-02",
        "the unit's PATH without /usr/sbin (dockerd not found)",
        content(UNIT, ":/usr/bin:/bin:/usr/sbin:/sbin\n", ":/usr/bin:/bin\n"),
    ),
    mutation(
        "HN-DKRL-02",
        "the unit runs upstream's /usr/bin/dockerd-rootless.sh",
        content(UNIT, f"ExecStart={CONTRIB}/", "ExecStart=/usr/bin/"),
    ),
    mutation(
        "HN-DKRL-02",
        "dockerd-rootless-setuptool.sh not executable",
        stat(f"{CONTRIB}/dockerd-rootless-setuptool.sh", mode=0o644),
    ),
    mutation(
        "HN-DKRL-02",
        "the running daemon not started from Debian's dockerd-rootless.sh",
        replace("commands", "ps-workload", f" {CONTRIB}/dockerd-rootless.sh\n", " dockerd\n"),
    ),
    # --- HN-DKRL-03 service and linger
    mutation(
        "HN-DKRL-03",
        "lingering off",
        replace("commands", "linger", "=yes", "=no"),
        also="HN-USR-08",
    ),
    mutation(
        "HN-DKRL-03",
        "docker-rootless disabled",
        replace("verbs", "rootless-service", "enabled=enabled", "enabled=disabled"),
    ),
    mutation(
        "HN-DKRL-03",
        "docker-rootless stopped (the integration run's fault)",
        ROOTLESS_DOWN,
        warns=ROOTLESS_DOWN_WARNS,
    ),
    # --- HN-DKRL-04 docker info
    mutation(
        "HN-DKRL-04",
        "cgroupfs driver (not under the user's systemd)",
        info('"CgroupDriver":"systemd"', '"CgroupDriver":"cgroupfs"'),
    ),
    mutation(
        "HN-DKRL-04",
        "the daemon does not report rootless",
        info('"name=rootless",', ""),
    ),
    mutation(
        "HN-DKRL-04",
        "data root outside the user's home",
        info('"DockerRootDir":"/home/app/', '"DockerRootDir":"/srv/app/'),
    ),
    # --- HN-DKRL-05 no rootful daemon on a rootless-only node
    mutation(
        "HN-DKRL-05",
        "docker.socket left enabled and listening",
        both(
            answer("commands", "is-enabled docker.socket", 0, "enabled\n"),
            answer("commands", "is-active docker.socket", 0, "active\n"),
            as_recorded("/run/docker.sock"),  # root:docker 0660, made by the socket unit
            replace("commands", "ss-listening", TTRPC, f"{SOCKET_UNIT}\n{TTRPC}"),
        ),
        setup=ROOTLESS_ONLY,
        roles="all rootless",
    ),
    mutation(
        "HN-DKRL-05",
        "a dockerd runs as root (started by hand)",
        answer("commands", "pgrep-root-dockerd", 0, "2345\n"),
        setup=ROOTLESS_ONLY,
        roles="all rootless",
    ),
    # --- HN-DKRL-06 no userns-remap, no userland-proxy=false
    mutation(
        "HN-DKRL-06",
        '"userland-proxy": false in ~/.config/docker/daemon.json',
        both(
            created(
                CONFIG,
                user="app",
                group="app",
                uid=1001,
                gid=1001,
                mode=0o600,
                mtime=1796120567,
            ),
            answer("verbs", "rootless-config", 0, '{"userland-proxy": false}\n'),
        ),
    ),
    mutation(
        "HN-DKRL-06",
        "a user drop-in passes --userland-proxy=false",
        both(
            replace(
                "commands",
                "ps-workload",
                "dockerd-rootless.sh\n",
                "dockerd-rootless.sh --userland-proxy=false\n",
            ),
            replace("commands", "ps-workload", "\ndockerd\n", "\ndockerd --userland-proxy=false\n"),
        ),
    ),
    # --- HN-DKRL-07 cgroup delegation
    mutation(
        "HN-DKRL-07",
        "systemd's default delegation (memory pids)",
        content(
            "/sys/fs/cgroup/user.slice/user-1001.slice/user@1001.service/cgroup.controllers",
            "cpuset cpu io memory pids",
            "memory pids",
        ),
    ),
    # --- HN-DKRL-08 kernel prerequisites
    mutation(
        "HN-DKRL-08",
        "ip_tables neither loaded nor built in",
        both(
            content("/proc/modules", "ip_tables 36864 0 - Live 0x0000000000000000\n", ""),
            content("/proc/modules", "nft_compat,ip_tables,", "nft_compat,"),
        ),
    ),
    # --- HN-DKRL-09 id-mapping helpers
    mutation(
        "HN-DKRL-09",
        "newuidmap stripped of setuid (no file capabilities either)",
        both(
            stat("/usr/bin/newuidmap", mode=0o755),
            replace("verbs", "find-suid", "/usr/bin/newuidmap\n", ""),
        ),
        also="HN-FS-05",
    ),
    mutation(
        "HN-DKRL-09",
        "newgidmap group-writable",
        stat("/usr/bin/newgidmap", mode=0o4775),
        also="HN-FS-05",
    ),
    # --- HN-DKRL-11 behavioural smoke test
    mutation(
        "HN-DKRL-11",
        "container uid 1000 outside the user's subordinate range",
        probe("rootless", "host_uid_user1000", "1000"),
    ),
    mutation(
        "HN-DKRL-11",
        "the rootless probe's root filesystem writable",
        probe("rootless", "rootfs_write", "allowed"),
        also="HN-CRT-05",
    ),
]
