"""Files the provisioner trusts: it created them, or only it (and root) could have.

A private key or a pinned known_hosts line read from disk decides who gets `NOPASSWD:ALL` on every
node and whose host key is believed, so what is read must be beyond other local users' reach: the
file and every directory above it owned by us or root, none of them writable by anyone else (a
sticky directory such as /tmp counts as unwritable: others cannot rename our entries there), and
a secret readable by nobody else. What is written is written atomically through a fresh name
(`O_EXCL`, so never through a planted file or symlink) and renamed into place, so a full disk or
a crash leaves the old file whole, never a truncated one a later run would trust.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from provision.core.errors import ProvisionError

ROOT_UID = 0


class UnsafePathError(ProvisionError):
    """A path the provisioner would trust is reachable by other local users."""


def _owner_ok(st: os.stat_result) -> bool:
    return st.st_uid in (os.geteuid(), ROOT_UID)


def _describe(st: os.stat_result) -> str:
    return f"owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}"


def check_ancestors(path: Path) -> None:
    """Every directory leading to `path` (both as written and with symlinks resolved) is owned by
    us or root and not writable by others unless sticky."""
    for spelled in dict.fromkeys((Path(os.path.abspath(path)), Path(os.path.realpath(path)))):
        for parent in reversed(spelled.parents):
            try:
                st = parent.lstat()
            except FileNotFoundError:
                return  # created by us below, with our modes
            if not _owner_ok(st):
                raise UnsafePathError(
                    f"{parent} is not owned by root or by us ({_describe(st)}): "
                    f"another user could replace {path}",
                    hint=f"choose a path under directories only root and uid {os.geteuid()} own",
                )
            if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
                raise UnsafePathError(
                    f"{parent} is writable by others ({_describe(st)}): another user could "
                    f"replace {path}",
                    hint=f"chmod go-w {parent}",
                )


def ensure_dir(path: Path, mode: int = 0o700, parents_mode: int = 0o755) -> Path:
    """`path` as a directory of ours with at most `mode`, created (and missing parents with
    `parents_mode`: a pool may live below, and QEMU's user must traverse to it) if absent.

    An existing directory of ours that nobody else can write is tightened to `mode` (nothing in it
    can have come from anyone else); one that is a symlink, someone else's, or writable by others
    is refused, because whatever is already inside it may be planted.
    """
    check_ancestors(path)
    missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    for p in reversed(missing):
        # A concurrent run may make it first: it is then checked like any existing one.
        with contextlib.suppress(FileExistsError):
            p.mkdir(mode=mode if p == path else parents_mode)
    for p in missing[1:]:
        _check_dir(p, parents_mode, tighten=False)
    return _check_dir(path, mode, tighten=True)


def check_dir(path: Path) -> bool:
    """Whether `path` exists as a directory nobody but us (and root) could have put files in;
    refuses one that someone else could have. Changes nothing (the read-only verbs use it)."""
    check_ancestors(path)
    if not os.path.lexists(path):
        return False
    _check_dir(path, 0o7777, tighten=False)
    return True


def _check_dir(path: Path, mode: int, *, tighten: bool) -> Path:
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise UnsafePathError(
            f"{path} is {kind}: refusing to write inside it",
            hint=f"remove {path} (provision creates it as a directory)",
        )
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise UnsafePathError(
            f"{path} is not a private directory ({_describe(st)}): files in it may be planted",
            hint=f"inspect it, then `chown {os.geteuid()} {path} && chmod {mode:o} {path}`, or "
            "remove it",
        )
    if tighten and stat.S_IMODE(st.st_mode) & ~mode:
        os.chmod(path, stat.S_IMODE(st.st_mode) & mode)
    return path


def read_file(path: Path, *, secret: bool) -> bytes | None:
    """The content of a file of ours, None when there is none. A secret must be readable by us
    alone; nothing may be a symlink, be writable by others or belong to another user."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise UnsafePathError(
            f"cannot read {path}: {exc.strerror}",
            hint="run provision as the user that owns its state directory",
        ) from exc
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafePathError(
                f"{path} is a symlink: refusing to read it",
                hint="remove it; provision writes its own files in place",
            ) from exc
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        loose = 0o077 if secret else 0o022
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & loose:
            what = "secret " if secret else ""
            raise UnsafePathError(
                f"{what}{path} is not ours alone ({_describe(st)}): it may be planted"
                + (" or already read by others" if secret else ""),
                hint=f"inspect it; if it is ours, `chown {os.geteuid()} {path} && chmod "
                f"{600 if secret else 644} {path}`, otherwise remove it"
                + (" and treat the key as compromised" if secret else ""),
            )
        return f.read()


def write_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` atomically with `data`: a fresh file created with `mode` from the start."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
