"""Pure parsers of what the node's tools print, tested on recorded outputs.

The suite (provision/verify/suite) reads a node through testinfra's `host` and the facts helper,
and what comes back is text: `stat` and `find` lines, /proc/mounts, systemd unit files, `key=value`
probes, `systemctl show`, `auditctl -l`, `ss`, /etc/subuid. The functions here turn that text
into values, or state the expected layout of a path, without a node: tests/test_verify_parsing.py
runs them on outputs recorded from a real node. The per-container rules over `docker inspect`
are in provision/verify/containers.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# --- stat, /proc/mounts, find (HN-FS) --------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    path: str
    owner: str
    group: str
    mode: int  # permission bits, including setuid/setgid/sticky

    def excess(self, allowed: int) -> int:
        """The permission bits this path has beyond `allowed` (0: as strict or stricter)."""
        return self.mode & ~allowed

    def describe(self) -> str:
        return f"{self.path} is {self.owner}:{self.group} {self.mode:o}"


def parse_stat(text: str) -> dict[str, Stat]:
    """The facts helper's `stat -c '%n %U:%G %a'` lines, by path."""
    out = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        path, ids, mode = line.rsplit(" ", 2)
        owner, _, group = ids.partition(":")
        out[path] = Stat(path, owner, group, int(mode, 8))
    return out


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    fstype: str
    options: frozenset[str]


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def parse_mounts(text: str) -> dict[str, Mount]:
    """/proc/mounts by mount point; the last line wins (a later mount hides an earlier one)."""
    out = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        target = _unescape(fields[1])
        out[target] = Mount(
            _unescape(fields[0]), target, fields[2], frozenset(fields[3].split(","))
        )
    return out


def mount_of(path: str, mounts: dict[str, Mount]) -> Mount:
    """The mount a path lives on: its longest mount-point prefix."""
    best = mounts["/"]
    for target, m in mounts.items():
        inside = path == target or path.startswith(target.rstrip("/") + "/")
        if inside and len(target) > len(best.target):
            best = m
    return best


def parse_world_writable(text: str) -> tuple[list[str], list[str]]:
    """`find-world-writable` lines: (directories without the sticky bit, world-writable files)."""
    dirs, files = [], []
    for line in text.splitlines():
        kind, _, path = line.partition(" ")
        if kind == "dir-nosticky":
            dirs.append(path)
        elif kind == "file":
            files.append(path)
    return dirs, files


# --- expected modes and module installs (HN-FS) ----------------------------------------------


def rootless_files(uid: int, home: str) -> list[tuple[str, int, bool]]:
    """(path, mode, required) per Docker's rootless paths; the owner is always the user."""
    return [
        (f"/run/user/{uid}", 0o700, True),
        (f"/run/user/{uid}/docker.sock", 0o755, True),  # not group/other writable
        (f"{home}/.config/docker", 0o700, False),
        (f"{home}/.config/docker/daemon.json", 0o600, False),
        (f"{home}/.local/share/docker", 0o710, True),
    ]


def k8s_expectation(path: str) -> int | None:
    """The strictest allowed mode of a file in the kubeadm layout (CIS Kubernetes 1.12)."""
    if path.startswith("/etc/kubernetes/pki/"):
        if path.endswith(".key"):
            return 0o600
        if path.endswith(".crt"):
            return 0o644
        return None
    if path.startswith(("/etc/kubernetes/manifests/", "/etc/cni/net.d/")):
        return 0o600
    return None


def install_commands(modprobe_output: str) -> list[str]:
    """The `install` commands `modprobe -n -v` would run instead of loading the module."""
    return [
        line.split(None, 1)[1].strip()
        for line in modprobe_output.splitlines()
        if line.startswith("install ") and len(line.split(None, 1)) == 2
    ]


# --- key=value, systemd units, the rootless probe (HN-DKRL) ----------------------------------


def parse_kv(text: str) -> dict[str, str]:
    """`key=value` lines (the facts helper's probe and service verbs); the last one wins."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key:
            out[key] = value
    return out


def unit_values(text: str, key: str) -> list[str]:
    """Every value of `key` in a systemd unit file, in order (continuation lines joined)."""
    joined = text.replace("\\\n", " ")
    out = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line.startswith(("#", ";")):
            continue
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            out.append(value.strip())
    return out


def environment_path(unit_text: str) -> list[str]:
    """The PATH a unit's Environment= lines set (the last assignment wins), split on ':'."""
    path: list[str] = []
    for value in unit_values(unit_text, "Environment"):
        for assignment in value.split():
            name, _, val = assignment.strip('"').partition("=")
            if name == "PATH":
                path = val.split(":")
    return path


def probe_failures(p: dict[str, str]) -> list[str]:
    """What a rootless probe shows that rootless Docker must never allow (empty: all good)."""
    bad = []
    if p.get("container_uid") != "0":
        bad.append(f"id -u in the container is {p.get('container_uid')}, expected 0")
    if p.get("host_uid") != p.get("user_uid"):
        bad.append(
            f"container root is host uid {p.get('host_uid')}, not the user's {p.get('user_uid')}"
        )
    try:
        mapped = int(p["host_uid_user1000"]) == int(p["subuid_start"]) + 999
    except (KeyError, ValueError):
        mapped = False
    if not mapped:
        bad.append(
            f"container uid 1000 is host uid {p.get('host_uid_user1000')}, expected subuid "
            f"start {p.get('subuid_start')} + 999"
        )
    return bad


# --- dockerd: daemon.json keys and flags, audit, sockets, subids (HN-DKR) --------------------

# dockerd 20.10's daemon.json keys (docs "daemon configuration file", Linux).
KNOWN_KEYS = frozenset(
    {
        "allow-nondistributable-artifacts",
        "api-cors-header",
        "authorization-plugins",
        "bip",
        "bridge",
        "builder",
        "cgroup-parent",
        "cluster-advertise",
        "cluster-store",
        "cluster-store-opts",
        "containerd",
        "containerd-namespace",
        "containerd-plugin-namespace",
        "cpu-rt-period",
        "cpu-rt-runtime",
        "data-root",
        "debug",
        "default-address-pools",
        "default-cgroupns-mode",
        "default-gateway",
        "default-gateway-v6",
        "default-ipc-mode",
        "default-runtime",
        "default-shm-size",
        "default-ulimits",
        "dns",
        "dns-opts",
        "dns-search",
        "exec-opts",
        "exec-root",
        "experimental",
        "features",
        "fixed-cidr",
        "fixed-cidr-v6",
        "group",
        "hosts",
        "icc",
        "init",
        "init-path",
        "insecure-registries",
        "ip",
        "ip-forward",
        "ip-masq",
        "ip6tables",
        "iptables",
        "ipv6",
        "labels",
        "live-restore",
        "log-driver",
        "log-level",
        "log-opts",
        "max-concurrent-downloads",
        "max-concurrent-uploads",
        "max-download-attempts",
        "metrics-addr",
        "mtu",
        "no-new-privileges",
        "node-generic-resources",
        "oom-score-adjust",
        "pidfile",
        "raw-logs",
        "registry-mirrors",
        "rootless",
        "runtimes",
        "seccomp-profile",
        "selinux-enabled",
        "shutdown-timeout",
        "storage-driver",
        "storage-opts",
        "swarm-default-advertise-addr",
        "tls",
        "tlscacert",
        "tlscert",
        "tlskey",
        "tlsverify",
        "userland-proxy",
        "userland-proxy-path",
        "userns-remap",
    }
)


# Flags whose daemon.json key is not the flag's own name.
FLAG_KEY = {
    "-H": "hosts",
    "--host": "hosts",
    "-D": "debug",
    "-G": "group",
    "-l": "log-level",
    "-p": "pidfile",
    "-g": "data-root",
    "--graph": "data-root",
    "-b": "bridge",
    "-s": "storage-driver",
    "--label": "labels",
    "--storage-opt": "storage-opts",
    "--log-opt": "log-opts",
    "--insecure-registry": "insecure-registries",
    "--registry-mirror": "registry-mirrors",
    "--exec-opt": "exec-opts",
    "--add-runtime": "runtimes",
    "--authorization-plugin": "authorization-plugins",
    "--default-ulimit": "default-ulimits",
    "--dns-opt": "dns-opts",
    "--default-address-pool": "default-address-pools",
    "--cluster-store-opt": "cluster-store-opts",
    "--node-generic-resource": "node-generic-resources",
}


def parse_execstart(text: str) -> list[list[str]]:
    """`systemctl show -p ExecStart --value`: the argv of each command line."""
    return [m.split() for m in re.findall(r"argv\[\]=([^;]*)", text)]


def flag_keys(argv: list[str]) -> set[str]:
    """The daemon.json keys that dockerd flags in `argv` also set."""
    keys = set()
    for arg in argv[1:]:
        if not arg.startswith("-"):
            continue
        name = arg.split("=", 1)[0]
        keys.add(FLAG_KEY.get(name, name.lstrip("-")))
    return keys


def audit_watches(rules: str) -> set[str]:
    """Paths `auditctl -l` watches: `-w PATH` and `-F path=`/`-F dir=` rules."""
    out = set()
    for line in rules.splitlines():
        fields = line.split()
        for i, f in enumerate(fields):
            if f == "-w" and i + 1 < len(fields):
                out.add(fields[i + 1].rstrip("/") or "/")
            elif f.startswith(("path=", "dir=")):
                out.add(f.split("=", 1)[1].rstrip("/") or "/")
    return out


def watched(path: str, watches: set[str]) -> bool:
    """A watch on a directory covers what is inside it."""
    return any(path == w or path.startswith(w + "/") for w in watches)


def listening_ports(ss_output: str) -> set[int]:
    """TCP ports in `ss -Hltn` output (local address is the fourth column)."""
    ports = set()
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3].rpartition(":")[2].isdigit():
            ports.add(int(fields[3].rpartition(":")[2]))
    return ports


def subid_range(text: str, user: str) -> tuple[int, int] | None:
    """(start, count) of `user`'s first /etc/subuid or /etc/subgid line."""
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        start, _, count = rest.partition(":")
        if name == user and start.isdigit() and count.isdigit():
            return int(start), int(count)
    return None


SudoDefault = str | bool  # `name=value`, or a flag: True when set, False when negated (`!name`)


def sudo_defaults(listing: str) -> dict[str, SudoDefault] | None:
    """The Defaults in force for the caller, from `sudo -l`: the "Matching Defaults entries"
    paragraph, entries split on unescaped commas, the last setting of a name winning (as sudo
    applies them). A negated flag (`!use_pty`) is False and a negated value (`!logfile`) unset,
    so neither passes for the setting it names. None: the listing has no such paragraph."""
    lines = listing.splitlines()
    start = next((i for i, x in enumerate(lines) if x.startswith("Matching Defaults entries")), -1)
    if start < 0:
        return None
    body = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        body.append(line.strip())
    out: dict[str, SudoDefault] = {}
    for entry in re.split(r"(?<!\\),\s*", " ".join(body)):
        if not entry:
            continue
        name, eq, value = entry.partition("=")
        name = name.strip()
        if name.startswith("!"):
            out[name[1:]] = False
        else:
            out[name] = value.strip() if eq else True
    return out


def compare_versions(a: str, b: str) -> int:
    """Debian version order, as `dpkg --compare-versions` (deb-version(7)): <0, 0 or >0."""
    ea, _, ra = a.rpartition(":") if ":" in a else ("0", "", a)
    eb, _, rb = b.rpartition(":") if ":" in b else ("0", "", b)
    if int(ea or 0) != int(eb or 0):
        return int(ea or 0) - int(eb or 0)
    ua, _, da = ra.rpartition("-") if "-" in ra else (ra, "", "0")
    ub, _, db = rb.rpartition("-") if "-" in rb else (rb, "", "0")
    return _compare_part(ua, ub) or _compare_part(da, db)


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """One upstream or revision string: alternating non-digit runs (letters sort before
    punctuation, `~` before everything, even the end) and digit runs compared as numbers."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ca = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            cb = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ca != cb:
                return ca - cb
            i += i < len(a) and not a[i].isdigit()
            j += j < len(b) and not b[j].isdigit()
        na = nb = ""
        while i < len(a) and a[i].isdigit():
            na, i = na + a[i], i + 1
        while j < len(b) and b[j].isdigit():
            nb, j = nb + b[j], j + 1
        if int(na or 0) != int(nb or 0):
            return int(na or 0) - int(nb or 0)
    return 0
