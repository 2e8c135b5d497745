"""A throwaway OpenSSH server on 127.0.0.1: the SSH boundary's tests (tests/test_ssh.py) log in to
it, and the remote-hypervisor tests use it as a hypervisor's sshd.

It runs as root on a free loopback port with its own generated ed25519 host key (plus, on
request, an ECDSA one that must never be accepted) and accepts only one generated client key, so
a login in its log proves a connection really went over SSH. Without root or openssh-server the
caller fails (never skips): CI's setup.sh installs openssh-server.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from provision.boundary.process import run
from provision.core import privfs
from provision.desired import hostkeys
from provision.desired.hostkeys import KeyPair

SSHD = Path("/usr/sbin/sshd")
HOST = "127.0.0.1"
# Not `Accepted key ...`: sshd logs that when a key is merely offered, before any signature.
_ACCEPTED = re.compile(r"^Accepted \S+ for ")


@dataclass(frozen=True)
class Sshd:
    port: int
    host_key: KeyPair  # the server's only host key: the one a known_hosts file pins
    identity: Path  # private half of the only authorized client key
    log: Path  # sshd's own log (-e: everything it would send to syslog)
    tmp: Path
    ecdsa_public: str | None = None  # a second real host key, never the pinned one

    def known_hosts(self, public: str | None = None, name: str = "known_hosts") -> Path:
        """A known_hosts file pinning `public` (default: the real host key) for this server."""
        key_type, blob = (public or self.host_key.public).split()[:2]
        path = self.tmp / name
        path.write_text(f"[{HOST}]:{self.port} {key_type} {blob}\n")
        return path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def accepted_logins(self) -> list[str]:
        """sshd's lines for completed logins, e.g. `Accepted publickey for root from ...`."""
        return [line for line in self.log_text().splitlines() if _ACCEPTED.search(line)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_banner(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until sshd answers with its protocol banner: listening alone is not yet serving."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited ({proc.returncode}):\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection((HOST, port), timeout=2) as s:
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"sshd did not answer on {HOST}:{port}:\n{log.read_text(errors='replace')}")


@contextmanager
def running_sshd(
    tmp: Path,
    *,
    ecdsa: bool = False,
    host_key: KeyPair | None = None,
    force_command: Path | None = None,
    authorized: str | None = None,
) -> Iterator[Sshd]:
    """Start sshd with everything (keys, config, pid file, log) under `tmp`; stop it afterwards.
    `host_key`: serve this one (default: a new one); `force_command`: every login runs it, with
    the client's command in $SSH_ORIGINAL_COMMAND (a stand-in node answering recorded output);
    `authorized`: the one client public key accepted (default: the generated one's)."""
    if os.geteuid() != 0:
        pytest.fail("the throwaway sshd must run as root (it logs in as root)")
    if not SSHD.exists():
        pytest.fail(f"{SSHD} not found: install openssh-server (setup.sh does)")
    # sshd refuses to start without its privilege separation directory, which its systemd unit
    # would normally create; this machine has no systemd.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    host_key = host_key or hostkeys.generate("throwaway-hypervisor")
    privfs.write_file(tmp / "host_ed25519", host_key.private.reveal().encode())
    client = hostkeys.generate("provision-test-operator")
    privfs.write_file(tmp / "client_ed25519", client.private.reveal().encode())
    (tmp / "authorized_keys").write_text((authorized or client.public) + "\n")
    host_keys = [tmp / "host_ed25519"]
    if ecdsa:
        run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", tmp / "host_ecdsa"])
        host_keys.append(tmp / "host_ecdsa")
    port = free_port()
    config = tmp / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        f"ListenAddress {HOST}\n"
        + "".join(f"HostKey {k}\n" for k in host_keys)
        + f"PidFile {tmp / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\n"
        "AuthenticationMethods publickey\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "AllowUsers root\n"
        "UsePAM no\n"
        # The keys live under pytest's tmp dir, below the world-writable /tmp: StrictModes would
        # refuse the authorized_keys file for that reason alone.
        "StrictModes no\n"
        "Subsystem sftp internal-sftp\n"
        "LogLevel VERBOSE\n" + (f"ForceCommand {force_command}\n" if force_command else "")
    )
    run([SSHD, "-t", "-f", config])  # a config mistake fails here, with sshd's own message
    log = tmp / "sshd.log"
    with log.open("w") as log_file:
        # A long-running daemon: process.run() waits for its child, so Popen is used here.
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", config], stderr=log_file)
    try:
        _wait_for_banner(port, proc, log)
        ecdsa_public = (tmp / "host_ecdsa.pub").read_text() if ecdsa else None
        yield Sshd(port, host_key, tmp / "client_ed25519", log, tmp, ecdsa_public)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
