"""A private site: a libvirtd of the test's own, in its own mount and network namespaces.

Nothing of it is the machine's: /run (so the pid files and libvirt's sockets), /var/lib/libvirt,
/var/cache/libvirt and /var/log/libvirt are fresh tmpfs mounts, and /etc/libvirt is a copy without
the machine's domain, network and pool definitions, so whatever the site defines stays private and
goes with it. The network namespace has only `lo`: the site is sealed from the machine's network.
The machine's libvirtd and guests never see it, and its daemon can be stopped (by the pid in its
own, private pid file) without touching theirs.

A holder process anchors the namespaces; every command of the test runs inside them through
`nsenter` (`run`, `popen`), and `path` reaches a file as the site sees it (/proc/PID/root). Mounts
made inside (a small tmpfs for a pool or a state dir) vanish with the site.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

UNSHARE = ("unshare", "--mount", "--net", "--propagation", "private", "--fork", "--")
PRIVATE_TMPFS = ("/run", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")
START_TIMEOUT_S = 120.0  # libvirtd probes QEMU's capabilities afresh: seconds, more when loaded
STOP_TIMEOUT_S = 60.0

# Runs inside the new namespaces: the mounts, `lo` up, then its pid on stdout; it lives until the
# test closes its stdin, and the namespaces as long as anything started in them.
_HOLDER = f"""
import os, subprocess, sys
etc = sys.argv[1]
def run(*argv):
    subprocess.run(argv, check=True)
run("mount", "--make-rprivate", "/")
for d in {PRIVATE_TMPFS!r}:
    os.makedirs(d, exist_ok=True)
    run("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", d)
run("mount", "--bind", etc, "/etc/libvirt")
run("ip", "link", "set", "lo", "up")
print(os.getpid(), flush=True)
sys.stdin.read()
"""


def _private_etc(dest: Path) -> None:
    """/etc/libvirt's configuration, without the machine's definitions of anything."""
    src = Path("/etc/libvirt")
    dest.mkdir(mode=0o755)
    for entry in src.iterdir():
        if entry.is_file():
            shutil.copy2(entry, dest / entry.name)
    for d in ("qemu", "qemu/networks", "qemu/networks/autostart", "storage", "storage/autostart"):
        (dest / d).mkdir(mode=0o755)
    (dest / "secrets").mkdir(mode=0o700)
    (dest / "hooks").mkdir(mode=0o755)


class Site:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.holder: subprocess.Popen[str] | None = None
        self.pid = 0  # the holder's: the target of every nsenter

    # --- the namespaces ----------------------------------------------------------------------

    def open(self) -> None:
        etc = self.workdir / "etc-libvirt"
        _private_etc(etc)
        self.holder = subprocess.Popen(
            [*UNSHARE, sys.executable, "-c", _HOLDER, str(etc)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if not line.strip().isdigit():
            self.holder.kill()
            raise RuntimeError(f"the site's namespaces were not made (holder said {line!r})")
        self.pid = int(line)

    def enter(self, argv: Sequence[str], cwd: Path | None = None) -> list[str]:
        # Entering a mount namespace moves the working directory to its root: --wd puts it back
        # (`python -m provision.cli` imports the checkout it runs in).
        wd = [f"--wd={cwd}"] if cwd is not None else []
        return ["nsenter", "--target", str(self.pid), "--mount", "--net", *wd, "--", *argv]

    def run(
        self, argv: Sequence[str], cwd: Path | None = None, timeout: float = 1800
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.enter(argv, cwd), capture_output=True, text=True, check=False, timeout=timeout
        )

    def popen(
        self, argv: Sequence[str], cwd: Path | None = None, **kw: Any
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(self.enter(argv, cwd), text=True, **kw)

    def path(self, inside: str | Path) -> Path:
        """A path as the site sees it (its mounts), for reading and writing from the test."""
        return Path(f"/proc/{self.pid}/root") / str(inside).lstrip("/")

    def check(self, argv: Sequence[str]) -> str:
        p = self.run(argv)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in the site: {p.returncode}: {p.stderr}")
        return p.stdout

    def links(self) -> list[str]:
        return [
            line.split(":")[1].strip().split("@")[0]
            for line in self.check(["ip", "-o", "link", "show"]).splitlines()
        ]

    def routes(self) -> str:
        return self.check(["ip", "route", "show", "table", "all"]) + self.check(
            ["ip", "-6", "route", "show", "table", "all"]
        )

    def mount_tmpfs(self, path: Path, size: str) -> None:
        self.check(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0711", "tmpfs", str(path)])

    def resize_tmpfs(self, path: Path, size: str) -> None:
        self.check(["mount", "-o", f"remount,size={size}", str(path)])

    # --- its libvirtd ------------------------------------------------------------------------

    def _pidfile(self, name: str) -> int | None:
        try:
            return int(self.path(f"/run/{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def libvirtd_pid(self) -> int | None:
        return self._pidfile("libvirtd")

    def start_libvirtd(self) -> None:
        if self._pidfile("virtlogd") is None:
            self.check(["virtlogd", "-d"])
        self.check(["libvirtd", "-d"])
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.run(["virsh", "-c", "qemu:///system", "version"]).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the site's libvirtd does not answer")
            time.sleep(0.5)

    def stop_libvirtd(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the site's own libvirtd (the pid in its private pid file) and wait for it."""
        pid = self.libvirtd_pid
        if pid is None:
            return
        _stop(pid, sig)

    def virsh(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(["virsh", "-q", "-c", "qemu:///system", *args])

    def close(self) -> None:
        """Power off whatever runs in the site, stop its daemons, release the namespaces."""
        if self.libvirtd_pid is not None:
            for name in self.virsh("list", "--name").stdout.split():
                self.virsh("destroy", name)
        for name in ("libvirtd", "virtlogd"):
            pid = self._pidfile(name)
            if pid is not None:
                _stop(pid, signal.SIGTERM)
        if self.holder is not None:
            assert self.holder.stdin is not None
            self.holder.stdin.close()
            self.holder.wait(timeout=STOP_TIMEOUT_S)


def _stop(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)


@contextmanager
def private_site(workdir: Path) -> Iterator[Site]:
    """A started site (namespaces and libvirtd), closed whatever happens."""
    site = Site(workdir)
    try:
        site.open()
        site.start_libvirtd()
        yield site
    finally:
        site.close()
