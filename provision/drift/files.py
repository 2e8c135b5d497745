"""The file layer of guest drift, the way AIDE and debsums see a host: pure functions.

Three sides: the golden image's file list (provision/image/files.py), what the seed wrote (the
rendered user-data), and the node's tree (the facts helper's `tree` verb, parsed here). An item
for each seed file whose content is not what was rendered, each image file that changed or is
gone, and each entry nobody accounts for, less ALLOW: what a running node legitimately creates.
Changes first boot makes on purpose (our hardening script's chmods, edits and links,
cloud-init's accounts and home directories) are expected (EXPECTED_MODES, FIRST_BOOT_EDITS,
EXPECTED_LINKS, /etc/skel copies), not allow-listed.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping

import yaml

from provision.core.errors import ProvisionError
from provision.core.model import DockerMode
from provision.desired.seed import SAFE_LOADER
from provision.drift.model import Fix, Item, Layer
from provision.image.files import TYPES, FileEntry

TREE_HEADER = "# provision-facts tree 1"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PATH = re.compile(r"/[\x20-\x7e]*")


class TreeError(ProvisionError):
    """The node's tree output is not what the facts helper prints."""


# Entries a running node creates that neither the image nor the seed accounts for, each with
# who creates it and why that is legitimate; found on a freshly provisioned node (the recording
# tests/data/snapshot/tree.txt). fnmatch patterns on the escaped path ("*" also matches "/"),
# kept precise: never a whole directory like /etc/*. The directories above an allowed entry are
# accounted for with it.
ALLOW: tuple[str, ...] = (
    # cloud-init writes the host key from the seed's ssh_keys; not compared by content here:
    # every SSH connection pins it (a changed key fails the connection before drift reads).
    "/etc/ssh/ssh_host_ed25519_key",
    # cloud-init renders the seed's network-config for ifupdown, and names the NIC in udev.
    "/etc/network/interfaces.d/50-cloud-init",
    "/etc/udev/rules.d/70-persistent-net.rules",
    # cloud-init's sudo rule for the admin (users[].sudo); its header carries the boot's date.
    # The sudo configuration itself is compared by the sudoers layer, not by hash.
    "/etc/sudoers.d/90-cloud-init-users",
    # useradd/usermod keep the previous subordinate id files (the other "-" files are in the
    # image already).
    "/etc/subuid-",
    "/etc/subgid-",
    # augenrules --load (provision-harden) keeps the rules it replaced.
    "/etc/audit/audit.rules.prev",
    # dockerd (rootful, and the workload user's rootless one) makes its identity key at first
    # start.
    "/etc/docker/key.json",
    "/home/*/.config/docker/key.json",
    # containerd's CRI plugin makes its (empty) CNI config directory when it starts.
    "/etc/cni/net.d",
    # The rootless daemon's data root: images, containers, volumes, its own databases.
    "/home/*/.local/share/docker",
    "/home/*/.local/share/docker/*",
    # provision-docker-rootless enables the workload user's daemon (systemctl --user enable).
    "/home/*/.config/systemd/user/default.target.wants/docker-rootless.service",
)

# Image entries first boot changes on purpose, each with who and why: the mode set is the
# expected one (any other is drift).
EXPECTED_MODES: Mapping[str, int] = {
    "/etc/ssh/sshd_config": 0o600,  # provision-harden: only root reads sshd's configuration
    "/etc/sudoers.d": 0o750,  # cloud-init (ensure_sudo_dir) when it writes the admin's rule
    # provision-harden: cron files are root-only whether or not a cron daemon is installed
    **{f"/etc/cron.{d}": 0o700 for d in ("hourly", "daily", "weekly", "monthly", "yearly", "d")},
    "/etc/crontab": 0o600,
}
# Image files first boot rewrites: their new content is a function of the image's (which the
# file list holds only as a hash) and of the boot, so size, mtime and sha256 may differ; type,
# mode and owner may not. What they say is judged by the verification checks (accounts, mounts,
# login.defs, audit rules).
FIRST_BOOT_EDITS: Mapping[str, str] = {
    "/etc/fstab": "provision-harden: /tmp, /dev/shm and /dev mount options",
    "/etc/login.defs": "provision-harden: UMASK, password ageing, hashing rounds, HOME_MODE",
    "/etc/profile": "provision-harden: the idle-shell TMOUT block",
    "/etc/default/sysstat": 'provision-harden: ENABLED="true"',
    "/etc/audit/audit.rules": "provision-harden: augenrules --load from rules.d",
    "/etc/machine-id": "systemd: the node's own id (empty in the image)",
    "/etc/resolv.conf": "the DHCP client: the node's resolver (empty in the image)",
    "/etc/hosts": "cloud-init: manage_etc_hosts",
    **{
        f"/etc/{name}{suffix}": "cloud-init and provision-harden: the seed's users, chage, "
        "passwd -l root"
        for name in ("passwd", "group", "shadow", "gshadow", "subuid", "subgid")
        for suffix in ("", "-")
    },
}
# Symlinks provision-harden makes, with their targets.
EXPECTED_LINKS: Mapping[str, str] = {
    # masks Debian's 99-protect-links.conf, which would undo fs.protected_fifos
    "/etc/sysctl.d/99-protect-links.conf": "/dev/null",
    # systemctl enable provision-firewall.service
    "/etc/systemd/system/sysinit.target.wants/provision-firewall.service": (
        "/etc/systemd/system/provision-firewall.service"
    ),
}
# A node whose system Docker daemon does not run (docker: rootless or none): the seed's
# `systemctl disable --now docker.service docker.socket` removes the image's enablement links
# (and the directory only docker.socket's link was in) and turns the SysV start links into kill
# links (update-rc.d disable).
DOCKER_ENABLED = (
    "/etc/systemd/system/multi-user.target.wants/docker.service",
    "/etc/systemd/system/sockets.target.wants/docker.socket",
    "/etc/systemd/system/sockets.target.wants",
    *(f"/etc/rc{n}.d/S01docker" for n in (2, 3, 4, 5)),
)
DOCKER_DISABLED_LINKS: Mapping[str, str] = {
    f"/etc/rc{n}.d/K01docker": "../init.d/docker" for n in (2, 3, 4, 5)
}


def expected_links(docker: DockerMode) -> tuple[Mapping[str, str], frozenset[str]]:
    """(links first boot makes, image entries it removes) for a node's Docker mode."""
    if docker is DockerMode.ROOTFUL:
        return EXPECTED_LINKS, frozenset()
    return {**EXPECTED_LINKS, **DOCKER_DISABLED_LINKS}, frozenset(DOCKER_ENABLED)


SKEL = "/etc/skel"


def seed_contents(user_data: str) -> dict[str, str]:
    """Path -> content of every file cloud-init writes from the rendered user-data: write_files,
    and what it derives from other keys (hostname, the public host key, each user's
    authorized_keys, root's, the sshd drop-in for ssh_pwauth), in the form cloud-init 22.4
    writes them (checked against a real node by tests/test_drift_files.py)."""
    doc = yaml.load(user_data, Loader=SAFE_LOADER)
    found = {str(f["path"]): str(f.get("content", "")) for f in doc.get("write_files") or ()}
    if "hostname" in doc:
        found["/etc/hostname"] = f"{doc['hostname']}\n"
    public = (doc.get("ssh_keys") or {}).get("ed25519_public")
    if public:
        found["/etc/ssh/ssh_host_ed25519_key.pub"] = str(public)
    for user in doc.get("users") or ():
        if isinstance(user, dict):
            keys = user.get("ssh_authorized_keys") or ()
            found[f"/home/{user['name']}/.ssh/authorized_keys"] = "".join(f"{k}\n" for k in keys)
    if doc.get("disable_root"):
        found["/root/.ssh/authorized_keys"] = "".join(
            f"{k}\n" for k in doc.get("ssh_authorized_keys") or ()
        )
    if doc.get("ssh_pwauth") is False:
        found["/etc/ssh/sshd_config.d/50-cloud-init.conf"] = "PasswordAuthentication no\n"
    return found


def unescape(field: str) -> bytes:
    """The bytes of an escaped path (the inverse of provision.image.files.escape)."""
    return re.sub(
        rb"\\(\\|x([0-9a-f]{2}))",
        lambda m: b"\\" if m.group(2) is None else bytes([int(m.group(2), 16)]),
        field.encode("ascii"),
    )


def _body(text: str) -> list[str]:
    """The entry lines of the helper's `tree` output, after checking it is whole."""
    lines = text.split("\n")
    if not lines or lines[0] != TREE_HEADER:
        raise TreeError(f"the tree output does not start with {TREE_HEADER!r}")
    if lines[-1] == "":
        lines.pop()
    if not lines[-1].startswith("# end "):
        raise TreeError("the tree output has no end line: it was cut short")
    body = lines[1:-1]
    try:
        count = int(lines[-1].split()[2])
    except (IndexError, ValueError) as exc:
        raise TreeError(f"the tree's end line is malformed: {lines[-1]!r}") from exc
    if count != len(body):
        raise TreeError(f"the tree says {count} entries and has {len(body)}")
    return body


def parse_tree(text: str) -> dict[str, FileEntry]:
    """The helper's `tree` output (format: the verb's comment in cloudinit/verify-facts.sh.j2),
    by path. Refuses output that was cut short or that it cannot read whole."""
    return parse_changed(text, frozenset())[0]


def parse_changed(
    text: str, unchanged: frozenset[str]
) -> tuple[dict[str, FileEntry], frozenset[str]]:
    """(the entries whose line is not in `unchanged`, parsed; the paths of those that are).

    With `unchanged` = image_lines(image), a node's ~17,000 lines cost a set lookup each and only
    the few dozen that differ from the image are parsed and compared (it was most of a node's
    judging time)."""
    tree: dict[str, FileEntry] = {}
    same: list[str] = []
    for n, line in enumerate(_body(text), start=2):
        if line in unchanged:
            same.append(line.split("\t", 1)[0])
            continue
        entry = _entry(line, n)
        if entry.path in tree:
            raise TreeError(f"tree line {n}: {entry.path} listed twice")
        tree[entry.path] = entry
    return tree, frozenset(same)


# The tree verb hashes regular files below these (its HASHED); the rest of /usr is stat only.
NODE_HASHED = ("/etc", "/root", "/home", "/usr/local", "/usr/lib/systemd")


def node_line(e: FileEntry) -> str:
    """The line the tree verb prints for this image entry on a node that left it untouched."""
    hashed = e.type == "f" and any(e.path == h or e.path.startswith(h + "/") for h in NODE_HASHED)
    sha = e.sha256 if hashed and e.sha256 else "-"
    target = e.target if e.type == "l" and e.target is not None else "-"
    fields = (e.path, e.type, f"{e.mode:o}", e.uid, e.gid, e.size, e.mtime, sha, target)
    return "\t".join(str(f) for f in fields)


def image_lines(image: Mapping[str, FileEntry]) -> frozenset[str]:
    return frozenset(node_line(e) for e in image.values())


def _entry(line: str, n: int) -> FileEntry:
    fields = line.split("\t")
    if len(fields) != 9:
        raise TreeError(f"tree line {n}: {len(fields)} fields, not 9")
    path, kind, mode, uid, gid, size, mtime, sha, target = fields
    if not _PATH.fullmatch(path) or kind not in TYPES:
        raise TreeError(f"tree line {n}: not a path and a type: {line[:120]!r}")
    hashed = sha not in ("-", "?")
    if hashed and not _HEX64.fullmatch(sha):
        raise TreeError(f"tree line {n}: {path}: bad sha256 field {sha[:70]!r}")
    try:
        return FileEntry(
            path=path,
            type=kind,
            mode=int(mode, 8),
            uid=int(uid),
            gid=int(gid),
            size=int(size),
            mtime=int(mtime),
            sha256=sha if hashed else None,
            target=None if kind != "l" else target,
        )
    except ValueError as exc:
        raise TreeError(f"tree line {n}: {path}: {exc}") from exc


def _sha(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def _short(sha: str | None) -> str:
    return "not hashed" if sha is None else f"sha256 {sha[:12]}"


def _describe(e: FileEntry, fields: Iterable[str]) -> str:
    parts = []
    for f in fields:
        value = getattr(e, f)
        if f == "mode":
            parts.append(f"mode {value:04o}")
        elif f == "sha256":
            parts.append(_short(value))
        elif f == "type":
            parts.append({"f": "file", "d": "directory", "l": "symlink"}.get(value, "other"))
        else:
            parts.append(f"{f} {value}")
    return " ".join(parts)


def _compared(image: FileEntry, node: FileEntry) -> tuple[str, ...]:
    """The attributes this pair is compared on: a directory's mtime and size change whenever an
    entry is added; a symlink's mode is always 0777; a hash only where both sides have one."""
    if image.type != node.type:
        return ("type",)
    if image.type == "d":
        return ("mode", "uid", "gid")
    if image.type == "l":
        return ("target", "uid", "gid")
    fields = ["mode", "uid", "gid", "size", "mtime"]
    if image.type == "f" and image.sha256 is not None and node.sha256 is not None:
        fields.append("sha256")
    if image.path in FIRST_BOOT_EDITS:
        fields = [f for f in fields if f not in ("size", "mtime", "sha256")]
    return tuple(fields)


def _expected(image: FileEntry) -> FileEntry:
    mode = EXPECTED_MODES.get(image.path)
    return image if mode is None else dataclasses.replace(image, mode=mode)


def _parents(path: str) -> Iterable[str]:
    parts = path.split("/")
    for i in range(2, len(parts)):
        yield "/".join(parts[:i])


def _content_hashes(
    image: Mapping[str, FileEntry], seed: Mapping[str, str]
) -> dict[str, tuple[str, str]]:
    """Path -> (sha256, where from) of the files whose content is known: the seed's, and the
    /etc/skel copies useradd puts in the home of each user the seed makes."""
    known = {p: (_sha(c), "rendered") for p, c in seed.items()}
    homes = {p.split("/.ssh/", 1)[0] for p in seed if p.startswith("/home/")}
    for entry in image.values():
        if entry.path.startswith(SKEL + "/") and entry.type == "f" and entry.sha256:
            for home in homes:
                known.setdefault(home + entry.path[len(SKEL) :], (entry.sha256, SKEL))
    return known


@functools.cache
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """One compiled regex for all the patterns: 17,000 paths against each pattern in turn took
    most of a node's file comparison."""
    regex = re.compile("|".join(fnmatch.translate(p) for p in patterns) or "(?!)")
    return lambda path: regex.match(path) is not None


def file_items(
    node: str,
    image: Mapping[str, FileEntry],
    seed: Mapping[str, str],
    tree: Mapping[str, FileEntry],
    allow: tuple[str, ...] = ALLOW,
    docker: DockerMode = DockerMode.ROOTFUL,
    same: frozenset[str] = frozenset(),
) -> list[Item]:
    """Every file-level difference of `node`, sorted by key. `seed`: path -> content of what
    the seed (seed_contents) and the playbooks wrote; `docker`: the node's Docker mode (what
    first boot enables and disables); `same`: image paths the node listed exactly as the image
    has them (parse_changed), left out of `tree`."""
    links, removed = expected_links(docker)

    def on_node(path: str) -> FileEntry | None:
        found = tree.get(path)
        return image[path] if found is None and path in same else found

    def item(path: str, expected: str, actual: str, fix: Fix, detail: str) -> Item:
        return Item(node, Layer.GUEST, f"file:{path}", expected, actual, fix, detail)

    items: list[Item] = []
    known = _content_hashes(image, seed)
    for path, (sha, source) in known.items():
        expected = f"sha256 {sha[:12]} ({source})"
        got = on_node(path)
        # A file the seed wrote comes back only with a new first boot.
        if got is None:
            items.append(item(path, expected, "missing", Fix.REPLACE, "written at first boot"))
        elif got.type != "f":
            actual = _describe(got, ("type",))
            items.append(item(path, expected, actual, Fix.REPLACE, "written at first boot"))
        elif got.sha256 != sha:
            actual = _short(got.sha256)
            items.append(item(path, expected, actual, Fix.REPLACE, "written at first boot"))
    for path, entry in image.items():
        if path in known:
            continue  # the seed overwrote it: compared with what was rendered
        if path in removed:
            present = on_node(path)
            if present is not None:
                shown = _describe(present, ("type",))
                items.append(item(path, "absent (disabled at first boot)", shown, Fix.REPLACE, ""))
            continue
        if path in same and path not in EXPECTED_MODES:
            continue  # listed exactly as the image has it
        want = _expected(entry)
        got = on_node(path)
        # An image file comes back only on a node made again from the image.
        if got is None:
            actual = "missing"
            items.append(item(path, _describe(want, ("type",)), actual, Fix.REPLACE, "image"))
            continue
        differ = [f for f in _compared(want, got) if getattr(want, f) != getattr(got, f)]
        if differ:
            expected, actual = _describe(want, differ), _describe(got, differ)
            items.append(item(path, expected, actual, Fix.REPLACE, "image"))
    for path, target in links.items():
        got = on_node(path)
        if got is None or got.type != "l" or got.target != target:
            actual = "missing" if got is None else _describe(got, ("type", "target"))
            items.append(item(path, f"symlink target {target}", actual, Fix.UP, "first boot"))
    allowed = set(filter(_matcher(allow), tree))
    accounted = {*image, *known, *links, *allowed}
    accounted |= {parent for p in (*known, *allowed) for parent in _parents(p)}
    reported: set[str] = set()  # unaccounted directories: what is below them is not listed again
    for path in sorted(tree):
        if path in accounted or any(p in reported for p in _parents(path)):
            continue
        got = tree[path]
        detail = ""
        if got.type == "d":
            reported.add(path)
            below = sum(1 for p in tree if p.startswith(path + "/"))
            detail = f"a directory with {below} entries below it"
        actual = f"unaccounted {_describe(got, ('type',))}"
        # Nothing of ours: whether it may stay is the operator's call.
        items.append(item(path, "absent", actual, Fix.MANUAL, detail))
    return sorted(items, key=lambda i: i.key)
