"""Filesystem, mounts and permissions (check_filesystem.py): /proc/mounts, the find verbs,
root's stat of the fixed paths, and the module-loading answers of `modprobe -n -v`."""

import functools

from tests.mutations import Edit, both, content, mutation, replace, stat
from tests.recording import Recording


def a_file(
    path: str,
    mode: int,
    user: str = "root",
    group: str = "root",
    uid: int = 0,
    gid: int = 0,
    directory: bool = False,
) -> Edit:
    """Root's stat of a path that now exists, as the snapshot records one."""

    def edit(rec: Recording) -> None:
        rec.doc["files"][path] = {
            "exists": True,
            "is_directory": directory,
            "is_symlink": False,
            "user": user,
            "group": group,
            "uid": uid,
            "gid": gid,
            "mode": mode,
            "mtime": 1796120000,
        }

    return edit


def lists(section: str, key: str, text: str) -> Edit:
    """A part that answers nothing on the clean node (no match found) now lists `text`."""

    def edit(rec: Recording) -> None:
        part = rec.part(section, key)
        assert part["stdout"] == "", f"{section}/{key} is not empty"
        part["stdout"] = text

    return edit


# --- a Kubernetes node after `kubeadm join` (HN-FS-08) ---------------------------------------

K8S_TREES = "find-stat /etc/kubernetes/manifests /etc/kubernetes/pki /etc/cni/net.d"
KUBELET_UNIT = "/lib/systemd/system/kubelet.service"
KUBEADM_DROP_IN = "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"
# The kubelet's protectKernelDefaults values (HN-SYS-23/26), as 60-provision-hardening.conf
# carries them on Kubernetes nodes.
KUBELET_SYSCTLS = {
    "kernel.panic_on_oops": "1",
    "kernel.panic": "10",
    "vm.overcommit_memory": "1",
    "vm.panic_on_oom": "0",
    "kernel.keys.root_maxkeys": "1000000",
    "kernel.keys.root_maxbytes": "25000000",
}


@functools.cache  # one Edit per shape: the test caches the baseline run per setup
def kubeadm_node(control_plane: bool = False) -> Edit:
    """The recorded node as a hardened Kubernetes node once kubeadm has run: the kubelet's
    sysctls, containerd's CRI settings, the role's inbound ports, and kubeadm's files (root-only),
    so that every check a k8s profile adds passes. The snapshot stats the kubelet's unit files
    where `kubelet-units` (systemd) says they are, so their stat is given there."""

    def edit(rec: Recording) -> None:
        for key, value in KUBELET_SYSCTLS.items():
            rec.sysctl(key, value)
        rec.replace(
            "verbs",
            "sysctl-config",
            "# /etc/sysctl.d/99-protect-links.conf\n",
            "".join(f"{k} = {v}\n" for k, v in KUBELET_SYSCTLS.items())
            + "# /etc/sysctl.d/99-protect-links.conf\n",
        )
        rec.replace("verbs", "containerd-config", "SystemdCgroup = false", "SystemdCgroup = true")
        rec.replace("verbs", "containerd-config", '"/usr/lib/cni"', '"/opt/cni/bin"')
        ports = "22, 6443, 10250" if control_plane else "22, 10250"
        for verb in ("nft", "firewall-config"):
            rec.replace("verbs", verb, "tcp dport 22 accept", f"tcp dport {{ {ports} }} accept")
        confs = ["/etc/kubernetes/kubelet.conf", "/var/lib/kubelet/config.yaml"]
        if control_plane:
            confs += [
                "/etc/kubernetes/admin.conf",
                "/etc/kubernetes/super-admin.conf",
                "/etc/kubernetes/scheduler.conf",
                "/etc/kubernetes/controller-manager.conf",
            ]
            a_file("/var/lib/etcd", 0o700, directory=True)(rec)
        for path in [*confs, KUBELET_UNIT, KUBEADM_DROP_IN]:
            a_file(path, 0o600)(rec)
        units = rec.part("commands", "kubelet-units")
        assert not units["stdout"].strip(), "kubelet.service already has unit files"
        units["stdout"] = f"{KUBELET_UNIT}\n{KUBEADM_DROP_IN}\n"
        manifests = ["/etc/kubernetes/manifests root:root 700"]
        pki = ["/etc/kubernetes/pki root:root 755", "/etc/kubernetes/pki/ca.crt root:root 644"]
        if control_plane:
            manifests += [
                f"/etc/kubernetes/manifests/{m}.yaml root:root 600"
                for m in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
            ]
            pki += [
                "/etc/kubernetes/pki/ca.key root:root 600",
                "/etc/kubernetes/pki/apiserver.crt root:root 644",
                "/etc/kubernetes/pki/apiserver.key root:root 600",
            ]
        cni = ["/etc/cni/net.d root:root 700", "/etc/cni/net.d/10-flannel.conflist root:root 600"]
        rec.part("verbs", K8S_TREES)["stdout"] = "\n".join([*manifests, *pki, *cni]) + "\n"

    return edit


WORKER = "all k8s rootful"
CONTROL_PLANE = "all k8s cp rootful"


def find_stat(old: str, new: str) -> Edit:
    return replace("verbs", K8S_TREES, old, new)


# --- AIDE finds changes (HN-FS-11) ----------------------------------------------------------


def aide_reports(rc: int, entry: str) -> Edit:
    """`aide --check` exits rc (a bit each for added, removed, changed) listing one entry."""

    def edit(rec: Recording) -> None:
        rec.aide_exit = rc
        rec.aide = (
            "AIDE found differences between database and filesystem!!\n\n"
            "---------------------------------------------------\n"
            f"Changed entries:\n---------------------------------------------------\n\n{entry}\n"
        )

    return edit


# --- cron installed (HN-FS-10) ---------------------------------------------------------------


def cron_installed(rec: Recording) -> None:
    """cron installed and its paths made root-only, as cloudinit/harden.sh.j2 does then."""
    a_file("/usr/sbin/cron", 0o755)(rec)
    a_file("/etc/crontab", 0o600)(rec)
    for d in ("/etc/cron.d", "/etc/cron.daily"):
        stat(d, mode=0o700)(rec)


MOUNTS = "/proc/mounts"

MUTATIONS = [
    mutation(
        "HN-FS-02",
        "/tmp without noexec",
        content(MOUNTS, "/tmp tmpfs rw,nosuid,nodev,noexec,", "/tmp tmpfs rw,nosuid,nodev,"),
    ),
    mutation(
        "HN-FS-02",
        "a disk of its own for /var/log, mounted with the defaults",
        content(MOUNTS, "\ntmpfs /tmp ", "\n/dev/vdb /var/log ext4 rw,relatime 0 0\ntmpfs /tmp "),
    ),
    mutation(
        "HN-FS-03",
        "/proc without noexec",
        content(MOUNTS, "/proc proc rw,nosuid,nodev,noexec,", "/proc proc rw,nosuid,nodev,"),
    ),
    mutation(
        "HN-FS-03",
        "/dev/shm without noexec",
        content(
            MOUNTS, "/dev/shm tmpfs rw,nosuid,nodev,noexec,", "/dev/shm tmpfs rw,nosuid,nodev,"
        ),
        also="HN-FS-02",  # /dev/shm's noexec is one of DEVSEC's mount options too
    ),
    mutation(
        "HN-FS-04",
        "a world-writable file",
        lists("verbs", "find-world-writable", "file /usr/local/bin/backup.sh\n"),
    ),
    mutation(
        "HN-FS-04",
        "a world-writable directory without the sticky bit",
        lists("verbs", "find-world-writable", "dir-nosticky /srv/share\n"),
    ),
    mutation(
        "HN-FS-05",
        "fusermount3 setuid, not on the allow-list",
        replace(
            "verbs", "find-suid", "/usr/bin/expiry\n", "/usr/bin/expiry\n/usr/bin/fusermount3\n"
        ),
    ),
    mutation(
        "HN-FS-05",
        "newuidmap stripped of its setuid bit",
        both(
            replace("verbs", "find-suid", "/usr/bin/newuidmap\n", ""),
            stat("/usr/bin/newuidmap", mode=0o755),
        ),
        also="HN-DKRL-09",  # the same stat: rootless Docker's id-mapping helper
    ),
    mutation("HN-FS-06", "/run/docker.sock 666", stat("/run/docker.sock", mode=0o666)),
    mutation(
        "HN-FS-06",
        "daemon.json group-writable",
        stat("/etc/docker/daemon.json", mode=0o664),
    ),
    mutation(
        "HN-FS-06",
        "docker.service loaded from a local copy",
        replace(
            "commands",
            "docker-fragment",
            "/lib/systemd/system/docker.service",
            "/etc/systemd/system/docker.service",
        ),
    ),
    mutation(
        "HN-FS-07",
        "the rootless data root 755",
        stat("/home/app/.local/share/docker", mode=0o755),
    ),
    mutation("HN-FS-07", "the user's runtime dir 755", stat("/run/user/1001", mode=0o755)),
    mutation(
        "HN-FS-07",
        "the rootless socket group-writable by the host's docker group",
        stat("/run/user/1001/docker.sock", group="docker", gid=102),
    ),
    mutation(
        "HN-FS-08",
        "the kubelet config 644 (as kubeadm writes it)",
        stat("/var/lib/kubelet/config.yaml", mode=0o644),
        setup=kubeadm_node(),
        roles=WORKER,
    ),
    mutation(
        "HN-FS-08",
        "a CNI config 644",
        find_stat("10-flannel.conflist root:root 600", "10-flannel.conflist root:root 644"),
        setup=kubeadm_node(),
        roles=WORKER,
    ),
    mutation(
        "HN-FS-08",
        "kubeadm's kubelet drop-in 644 (the package's mode)",
        stat(KUBEADM_DROP_IN, mode=0o644),
        setup=kubeadm_node(),
        roles=WORKER,
    ),
    mutation(
        "HN-FS-08",
        "the cluster CA key 644",
        find_stat("ca.key root:root 600", "ca.key root:root 644"),
        setup=kubeadm_node(control_plane=True),
        roles=CONTROL_PLANE,
    ),
    mutation(
        "HN-FS-08",
        "admin.conf 644",
        stat("/etc/kubernetes/admin.conf", mode=0o644),
        setup=kubeadm_node(control_plane=True),
        roles=CONTROL_PLANE,
    ),
    mutation(
        "HN-FS-08",
        "the etcd data dir 755",
        stat("/var/lib/etcd", mode=0o755),
        setup=kubeadm_node(control_plane=True),
        roles=CONTROL_PLANE,
    ),
    mutation(
        "HN-FS-09",
        "cramfs loadable (no install line)",
        replace(
            "commands",
            "modprobe cramfs",
            "install /bin/true \n",
            "insmod /lib/modules/6.1.0-57-cloud-amd64/kernel/fs/cramfs/cramfs.ko \n",
        ),
    ),
    mutation(
        "HN-FS-09",
        "sctp loaded",
        content(
            "/proc/modules", "tun 61440 3 - Live", "sctp 434176 2 - Live 0x0\ntun 61440 3 - Live"
        ),
    ),
    mutation("HN-FS-10", "/var/log group adm", stat("/var/log", group="adm", gid=4)),
    mutation(
        "HN-FS-10",
        "/etc/crontab 644 (the package's mode)",
        stat("/etc/crontab", mode=0o644),
        setup=cron_installed,
    ),
    mutation(
        "HN-FS-11",
        "a binary below /usr changed since the image was built",
        aide_reports(4, "f   ...    . C: /usr/bin/sudo"),
    ),
    mutation(
        "HN-FS-11",
        "a file added below /usr",
        aide_reports(1, "f++++++++++++++++: /usr/lib/x86_64-linux-gnu/.hidden.so"),
    ),
    mutation("HN-FS-11", "aide.db readable by all", stat("/var/lib/aide/aide.db", mode=0o644)),
    mutation(
        "HN-FS-11",
        "aide.conf checks files without sha256",
        content("/etc/aide/aide.conf", "+sha256", ""),
    ),
]
