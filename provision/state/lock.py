"""Locks on this machine: one run per inventory and hypervisor, and one storage-pool operation at
a time.

Both are flock(2) locks on files in the state directory: the kernel drops them when the holder
dies (even by SIGKILL), so a lock is never stale. flock locks belong to an open file, so two
threads of one process opening the same file exclude each other too, which is what the pool lock
relies on.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from provision.core.errors import ProvisionError

POLL_S = 0.5


class LockedError(ProvisionError):
    exit_code = 3  # distinct: a script can tell "busy, try later" from a failure


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _try(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def holder(path: Path) -> str:
    """Who holds a run lock, as recorded by the holder."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another provision run"
    if not info:
        return "another provision run"
    return f"pid {info.get('pid')} (`{info.get('command')}`, since {info.get('since')})"


@contextmanager
def hold(
    paths: Sequence[tuple[str, Path]],
    command: str,
    wait_s: float,
    on_wait: Callable[[str], None],
) -> Iterator[None]:
    """Take every (what, path) run lock, in path order so two runs never deadlock.

    Busy: refuse at once (wait_s 0) or wait up to wait_s, telling on_wait who holds it.
    """
    fds: list[int] = []
    try:
        for what, path in sorted(paths, key=lambda p: p[1]):
            fd = _open(path)
            fds.append(fd)
            if not _try(fd):
                who = holder(path)
                if wait_s <= 0:
                    raise LockedError(
                        f"{what} is locked by {who}",
                        hint="wait for that run to finish, or pass --wait-lock SECONDS",
                    )
                on_wait(f"waiting up to {wait_s:.0f}s for {what}, locked by {who}")
                deadline = time.monotonic() + wait_s
                while not _try(fd):
                    if time.monotonic() > deadline:
                        raise LockedError(
                            f"{what} is still locked by {holder(path)} after {wait_s:.0f}s",
                            hint="wait for that run to finish, or raise --wait-lock",
                        )
                    time.sleep(POLL_S)
            record = {
                "pid": os.getpid(),
                "command": command,
                "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            # The record only names this run to one that waits: a full disk must not stop a
            # run that needs no space (the flock above is the lock).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        for fd in fds:
            os.close(fd)  # closing the last descriptor releases the flock


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Block until this process (thread) alone holds path; for short critical sections."""
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
