"""The only module that speaks SSH (paramiko): connections pinned to our known_hosts, nothing else.

Every connection checks the node's host key against the provisioner's own known_hosts file
(never the system's), accepts only ed25519 host keys, and authenticates with exactly one identity
file. A node that presents another key, or none we know, is refused before anything runs on it.
Remote commands are argv lists, quoted with shlex.join, because the remote side runs them through
the login user's shell.
"""

from __future__ import annotations

import contextlib
import io
import logging
import secrets
import select
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, NoReturn

import paramiko

from provision.boundary.process import Result
from provision.core.errors import CommandError, SSHError
from provision.desired import hostkeys

# paramiko logs transport-thread failures (e.g. no banner while a node boots) with tracebacks to
# stderr through logging's last-resort handler. We report every failure ourselves, once.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False

# Our nodes are pinned to the ed25519 key the provisioner generated. Disabling every other host
# key algorithm means paramiko never even negotiates another key type, so a known_hosts line of
# another type can never be what lets a connection through.
_OTHER_HOST_KEY_ALGORITHMS = (
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
    "ssh-dss",
)

# cloud-init creates the admin user a few seconds after sshd starts: an auth failure from a node
# that already showed the right host key is retried for this long, then it is a real failure.
AUTH_GRACE_S = 20.0
RETRY_INTERVAL_S = 1.0
_CHUNK = 32768


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    user: str
    identity: Path  # private key file
    known_hosts: Path  # our pinned known_hosts, never the system's

    @property
    def address(self) -> str:
        """The name OpenSSH and paramiko use in known_hosts for this host and port."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


class HostKeyError(SSHError):
    """The node presented a key we did not pin (or none is pinned): never retried."""


class AuthError(SSHError):
    """The node showed the pinned key but refused our identity."""


class UnreachableError(SSHError):
    """Nothing (or no SSH server yet) answered: worth retrying while a node boots."""


class _UnknownHostKey(paramiko.SSHException):
    """RejectPolicy only raises a bare SSHException for an unknown host, the same type as a
    banner timeout; this subclass keeps the presented key so the two can be told apart."""

    def __init__(self, key: paramiko.PKey) -> None:
        super().__init__("host key not in known_hosts")
        self.key = key


class _RejectUnknown(paramiko.RejectPolicy):
    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> NoReturn:
        raise _UnknownHostKey(key)


def _fingerprint(key: paramiko.PKey) -> str:
    return hostkeys.fingerprint(f"{key.get_name()} {key.get_base64()}")


NO_STDIN = " </dev/null"  # what a command without input gets (the remote shell reads it)


class Session:
    """An authenticated connection to one node; use as a context manager or call close()."""

    def __init__(self, target: Target, client: paramiko.SSHClient) -> None:
        self.target = target
        self._client = client

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    @property
    def server_version(self) -> str:
        """The identification string the server sent, e.g. "SSH-2.0-OpenSSH_9.2p1"."""
        transport = self._client.get_transport()
        return transport.remote_version if transport is not None else ""

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        input: str | None = None,
    ) -> Result:
        """Run argv on the node; raise CommandError naming the command and node on failure."""
        args = tuple(argv)
        command = shlex.join(args)
        where = f"{self.target.user}@{self.target.address}"
        try:
            transport = self._client.get_transport()
            if transport is None or not transport.is_active():
                raise SSHError(f"connection to {where} is closed", hint="reconnect")
            with transport.open_session() as chan:
                if input is None:
                    # The command's stdin is /dev/null on the node, and no EOF is sent: paramiko
                    # sends an EOF outside its channel lock, so one sent just as a quick command
                    # ends can follow our CLOSE, and sshd drops the whole connection (`ieof
                    # packet referred to nonexistent channel`), every other channel with it.
                    chan.exec_command(command + NO_STDIN)
                else:
                    chan.exec_command(command)
                    chan.sendall(input.encode())
                    chan.shutdown_write()
                out, err, code = _collect(chan, timeout)
        except TimeoutError as exc:
            raise CommandError(f"timed out after {timeout}s on {where}: {command}") from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHError(f"lost connection to {where} running: {command}: {exc}") from exc
        result = Result(args, code, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and code != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            detail = ("\n  " + "\n  ".join(tail)) if tail else ""
            raise CommandError(f"remote command failed (exit {code}) on {where}: {command}{detail}")
        return result

    def put(self, path: str, data: bytes, mode: int) -> None:
        """Write a file on the node atomically, never reachable by other node users on the way."""
        self._put(path, io.BytesIO(data), mode, f"could not write {path}", "")

    def put_file(self, path: str, source: Path, mode: int) -> None:
        """Like put, streaming a local file (no copy in memory)."""
        with source.open("rb") as src:
            self._put(path, src, mode, f"could not copy {source} to {path}", "the free space and ")

    def _put(self, path: str, src: BinaryIO, mode: int, what: str, check: str) -> None:
        # SFTP creates a file with the server's default mode (0644) and only then takes our chmod:
        # another user could open it in between and read what follows through that descriptor.
        # So the file is born in a fresh 0700 directory beside its target (mkdir carries the
        # mode itself; a name that already exists is refused, never reused), and renamed out of it
        # only once it is complete and has its mode.
        parent, _, name = path.rpartition("/")
        stage = f"{parent}/.provision-{secrets.token_hex(8)}"
        tmp = f"{stage}/{name}"
        try:
            with self._client.open_sftp() as sftp:
                sftp.mkdir(stage, 0o700)
                try:
                    with sftp.open(tmp, "wbx") as f:
                        f.chmod(mode)
                        f.set_pipelined(True)
                        while chunk := src.read(1 << 20):
                            f.write(chunk)
                    sftp.posix_rename(tmp, path)
                finally:
                    with contextlib.suppress(OSError):
                        sftp.remove(tmp)
                    sftp.rmdir(stage)
        except (paramiko.SSHException, OSError) as exc:
            raise SSHError(
                f"{what} on {self.target.address}: {exc}",
                hint=f"check {check}that {self.target.user} may write there",
            ) from exc

    def get(self, path: str) -> bytes:
        try:
            with self._client.open_sftp() as sftp, sftp.open(path, "rb") as f:
                return f.read()
        except (paramiko.SSHException, OSError) as exc:
            raise SSHError(f"could not read {path} on {self.target.address}: {exc}") from exc


def _collect(chan: paramiko.Channel, timeout: float | None) -> tuple[bytes, bytes, int]:
    """Read stdout and stderr as they arrive (both share one flow-control window, so reading
    only one could stall the command) until the exit status is in."""
    deadline = None if timeout is None else time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    while True:
        if chan.recv_ready():
            out += chan.recv(_CHUNK)
            continue
        if chan.recv_stderr_ready():
            err += chan.recv_stderr(_CHUNK)
            continue
        # Done once no more output can come (EOF) and the exit status is in: sshd may send the
        # status before the last output, so the status alone is not enough.
        ended = chan.eof_received or chan.closed
        if ended and chan.exit_status_ready():  # also set on close, e.g. after a signal
            return bytes(out), bytes(err), chan.recv_exit_status()
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError
        if ended:
            # The channel's fd stays readable after EOF: wait on the status, not the fd.
            chan.status_event.wait(left)
        else:
            select.select([chan], [], [], left)


def connect(target: Target, timeout: float = 10.0) -> Session:
    """A session with the node, after its host key matched our pin and our identity was accepted.

    Raises HostKeyError (mismatch or unknown key: nothing was run), AuthError or UnreachableError.
    """
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(str(target.known_hosts))  # ours only: no load_system_host_keys()
    except OSError as exc:
        raise HostKeyError(
            f"cannot read known_hosts {target.known_hosts}: {exc.strerror}",
            hint="`provision up` or `provision ssh-config` writes the pinned keys",
        ) from exc
    client.set_missing_host_key_policy(_RejectUnknown())
    identity = _load_identity(target.identity)
    try:
        client.connect(
            target.host,
            port=target.port,
            username=target.user,
            pkey=identity,
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            disabled_algorithms={"keys": _OTHER_HOST_KEY_ALGORITHMS},
        )
    except Exception as exc:
        client.close()
        raise _translate(target, exc) from exc
    return Session(target, client)


def _load_identity(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        # Not an AuthError: waiting for the node cannot fix a local file.
        raise SSHError(
            f"cannot load SSH identity {path}: {exc}",
            hint="set admin.identity_file to an unencrypted private key, or remove it to use "
            "the managed key",
        ) from exc


def _translate(target: Target, exc: Exception) -> SSHError:
    """Map a paramiko/socket failure to the error a person can act on."""
    where = target.address
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyError(
            f"host key mismatch for {where}: expected {_fingerprint(exc.expected_key)}, "
            f"got {_fingerprint(exc.key)} — refusing to run anything",
            hint="if the node was rebuilt outside provision, re-pin it by recreating it with its "
            "pinned key: `provision down --purge` then `provision up` of that node (its disks go "
            "too); if it was not, something else answers at that address (a man in the middle): "
            "run nothing on it until you know what; editing known_hosts cannot help (every run "
            "rewrites it from state_dir)",
        )
    if isinstance(exc, _UnknownHostKey):
        return HostKeyError(
            f"no pinned host key for {where} in {target.known_hosts} (it presented "
            f"{exc.key.get_name()} {_fingerprint(exc.key)}) — refusing to run anything",
            hint="`provision up` or `provision ssh-config` writes the pinned keys",
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return AuthError(
            f"{where} refused {target.user} with {target.identity}: {exc}",
            hint=f"check that the node's authorized_keys for {target.user} holds "
            f"{target.identity}.pub",
        )
    if isinstance(exc, (OSError, EOFError, paramiko.SSHException)):
        # OSError: refused, unreachable, TCP timeout. SSHException: the port answered but no SSH
        # banner or handshake came (e.g. QEMU's port forward accepts before the guest's sshd runs).
        return UnreachableError(
            f"cannot reach SSH at {where}: {_unreachable_reason(exc)}",
            hint="is the node running and its SSH port forwarded? `provision status` shows it",
        )
    return SSHError(f"SSH to {where} failed: {type(exc).__name__}: {exc}")


def _unreachable_reason(exc: BaseException) -> str:
    """What paramiko's many ways of failing to reach a server mean, in the user's words."""
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        if all(isinstance(e, ConnectionRefusedError) for e in exc.errors.values()):
            return "connection refused (nothing listens on that port)"
        return "; ".join(f"{e}" for e in exc.errors.values()) or str(exc)
    if isinstance(exc, TimeoutError):
        return "no answer: the connection timed out"
    text = str(exc)
    # Both mean the port accepted but no SSH server spoke in time: which one comes depends on
    # whether paramiko's banner wait or its handshake wait ran out first.
    if text.startswith("Error reading SSH protocol banner") or text == "No existing session":
        return "the port accepts connections but no SSH banner came (no sshd answering yet?)"
    return text or type(exc).__name__


def wait_for_ssh(
    target: Target,
    deadline_s: float,
    progress: Callable[[str], None] | None = None,
    *,
    auth_grace_s: float = AUTH_GRACE_S,
) -> Session:
    """Connect once the node's SSH answers, retrying for up to deadline_s while it boots.

    Refused connections, timeouts and missing banners are retried. A wrong or unknown host key
    fails at once. An auth failure is retried for auth_grace_s (cloud-init may still be creating
    the user), which only happens after the host key already matched.
    """
    deadline = time.monotonic() + deadline_s
    first_auth_failure: float | None = None
    last_reason = ""
    while True:
        left = deadline - time.monotonic()
        try:
            return connect(target, timeout=max(1.0, min(10.0, left)))
        except UnreachableError as exc:
            error: SSHError = exc
        except AuthError as exc:
            now = time.monotonic()
            if first_auth_failure is None:
                first_auth_failure = now
            if now - first_auth_failure >= auth_grace_s:
                raise
            error = exc
        left = deadline - time.monotonic()
        if left <= 0:
            raise type(error)(
                f"{error.message} (gave up after {deadline_s:.0f}s)", hint=error.hint
            ) from error
        if progress is not None and error.message != last_reason:
            progress(f"waiting: {error.message}")
        last_reason = error.message
        time.sleep(min(RETRY_INTERVAL_S, left))  # then one last try at the deadline


def ssh_config(entries: Mapping[str, Target]) -> str:
    """An OpenSSH client config with one pinned Host block per node (pure)."""
    blocks = []
    for name, t in entries.items():
        options = [
            ("HostName", t.host),
            ("Port", str(t.port)),
            ("User", t.user),
            ("IdentityFile", str(t.identity)),
            ("IdentitiesOnly", "yes"),
            ("UserKnownHostsFile", str(t.known_hosts)),
            # Only our file decides: no system-wide entry can vouch for a node.
            ("GlobalKnownHostsFile", "/dev/null"),
            ("StrictHostKeyChecking", "yes"),
            ("HostKeyAlgorithms", "ssh-ed25519"),
            # ssh must not add keys the node offers to our pinned file.
            ("UpdateHostKeys", "no"),
        ]
        lines = [f"Host {_config_value(name)}"]
        lines += [f"    {key} {_config_value(value)}" for key, value in options]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _config_value(value: str) -> str:
    # ssh_config splits arguments on whitespace; double quotes keep a path with spaces whole.
    if '"' in value or "\n" in value:
        raise ValueError(f"cannot write {value!r} into an ssh_config")
    return f'"{value}"' if any(c.isspace() for c in value) else value
