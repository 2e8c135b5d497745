"""The golden image's file list (`files.json.gz`): what drift compares a node's tree against.

The build walks the finished rootfs once, the way AIDE or debsums see a host: for every entry
under ROOTS its type, mode, owner, size, mtime, sha256 (regular files) and link target. Paths
and link targets are escaped exactly as the node's facts helper escapes them (`escape`,
`tree` verb in cloudinit/verify-facts.sh.j2), so both sides compare as plain strings and a
newline or tab in a file name can never forge an entry. The artifact is deterministic: sorted
by path, compact JSON, gzip with mtime 0 and no file name.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.core.errors import ImageError

FILES_ARTIFACT = "files.json.gz"
FORMAT = 1
# The trees a node is checked under. /bin, /sbin, /lib and /lib64 are symlinks into /usr on
# bookworm (merged /usr): recorded as links, so one that became a directory is drift too.
ROOTS: tuple[str, ...] = ("/etc", "/root", "/home", "/usr")
MERGED_USR_LINKS: tuple[str, ...] = ("/bin", "/sbin", "/lib", "/lib64")

# f regular file, d directory, l symlink, o anything else (fifo, socket, device).
TYPES = ("f", "d", "l", "o")


@dataclass(frozen=True)
class FileEntry:
    """One entry of a tree. `sha256` is None where the side did not hash (a node hashes only
    part of /usr) and for anything but a regular file; `target` is a symlink's target."""

    path: str
    type: str
    mode: int  # permission bits with setuid/setgid/sticky (S_IMODE)
    uid: int
    gid: int
    size: int
    mtime: int  # whole seconds
    sha256: str | None = None
    target: str | None = None


def escape(name: bytes) -> str:
    """A path as printable ASCII: `\\` doubled, every other byte outside 0x20..0x7e as \\xHH.
    One escaping for the image list and the node's tree (the helper has the same rule)."""
    out = []
    for b in name:
        if b == 0x5C:
            out.append("\\\\")
        elif 0x20 <= b <= 0x7E:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def _type(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "f"
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISLNK(mode):
        return "l"
    return "o"


def _sha256(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _entry(rootfs: bytes, guest: bytes, st: os.stat_result) -> FileEntry:
    kind = _type(st.st_mode)
    host = rootfs + guest
    return FileEntry(
        path=escape(guest),
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size,
        mtime=int(st.st_mtime),
        sha256=_sha256(host) if kind == "f" else None,
        target=escape(os.readlink(host)) if kind == "l" else None,
    )


def walk(rootfs: Path) -> list[FileEntry]:
    """Every entry under ROOTS in `rootfs` (the roots included) and the merged-/usr links,
    by lstat: a link is never followed (absolute targets would point at the build host)."""
    base = os.fsencode(rootfs)
    entries: list[FileEntry] = []

    def visit(guest: bytes) -> None:
        try:
            st = os.lstat(base + guest)
        except FileNotFoundError:
            return
        entries.append(_entry(base, guest, st))
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(base + guest)):
                visit(guest + b"/" + name)

    for root in (*ROOTS, *MERGED_USR_LINKS):
        visit(os.fsencode(root))
    return sorted(entries, key=lambda e: e.path)


def to_bytes(entries: list[FileEntry]) -> bytes:
    """The artifact's bytes: the same entries always give the same bytes."""
    doc = {
        "format": FORMAT,
        "roots": list(ROOTS),
        "files": [
            {k: v for k, v in e.__dict__.items() if v is not None}
            for e in sorted(entries, key=lambda e: e.path)
        ],
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n"
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


def from_bytes(data: bytes, where: str) -> dict[str, FileEntry]:
    try:
        doc: dict[str, Any] = json.loads(gzip.decompress(data))
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, this provision reads {FORMAT}")
        entries = [FileEntry(**f) for f in doc["files"]]
        bad = [e.path for e in entries if e.type not in TYPES]
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise ImageError(f"{where} is corrupt: {exc}", hint="rebuild with --force") from exc
    if bad:
        raise ImageError(f"{where}: unknown entry type at {bad[0]}", hint="rebuild with --force")
    return {e.path: e for e in entries}


def write_files_list(rootfs: Path, out: Path) -> int:
    """Walk `rootfs` and write the artifact to `out`; the number of entries."""
    entries = walk(rootfs)
    out.write_bytes(to_bytes(entries))
    return len(entries)


def image_files(directory: Path) -> dict[str, FileEntry]:
    """The file list of the image in `directory`, by path."""
    path = directory / FILES_ARTIFACT
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(
            f"the image at {directory} has no file list ({FILES_ARTIFACT}): built by an older "
            "provision",
            hint="rebuild it with `provision image build --force`",
        ) from exc
    return from_bytes(data, str(path))
