"""The SSH boundary against a real OpenSSH server on 127.0.0.1 (no mocks).

A session-scoped sshd runs as root on a free loopback port with generated keys. These tests need
only root and openssh-server (which .ci/run installs): without them they fail, never skip.
"""

from __future__ import annotations

import io
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from provision.boundary import ssh
from provision.boundary.process import run
from provision.core import privfs
from provision.core.errors import CommandError, SSHError
from provision.desired import hostkeys
from provision.desired.hostkeys import KeyPair
from tests.sshd import HOST, free_port, running_sshd


@dataclass(frozen=True)
class Server:
    port: int
    host_key: KeyPair  # the ed25519 key we pin
    ecdsa_public: str  # a second, real host key of the same server that we must never accept
    identity: Path  # the authorized client key
    log: Path
    tmp: Path

    def known_hosts(self, public: str, name: str = "known_hosts") -> Path:
        path = self.tmp / name
        key_type, blob = public.split()[:2]
        path.write_text(f"[{HOST}]:{self.port} {key_type} {blob}\n")
        return path

    def target(self, known_hosts: Path | None = None, identity: Path | None = None) -> ssh.Target:
        return ssh.Target(
            host=HOST,
            port=self.port,
            user="root",
            identity=identity or self.identity,
            known_hosts=known_hosts or self.known_hosts(self.host_key.public),
        )


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_sshd(tmp_path_factory.mktemp("sshd"), ecdsa=True) as sshd:
        assert sshd.ecdsa_public is not None
        yield Server(sshd.port, sshd.host_key, sshd.ecdsa_public, sshd.identity, sshd.log, sshd.tmp)


# --- running commands ---------------------------------------------------------------------------


def test_pinned_key_runs_argv_and_returns_its_output(server: Server) -> None:
    with ssh.connect(server.target()) as s:
        result = s.run(["echo", "hi there"])
    assert result.stdout == "hi there\n"
    assert result.returncode == 0
    assert result.argv == ("echo", "hi there")


def test_every_argument_is_quoted_for_the_remote_shell(server: Server, tmp_path: Path) -> None:
    marker = tmp_path / "injected"
    with ssh.connect(server.target()) as s:
        assert s.run(["printf", "%s", "a b;c"]).stdout == "a b;c"
        assert s.run(["printf", "%s", f"$(touch {marker})"]).stdout == f"$(touch {marker})"
    assert not marker.exists()


def test_stdout_stderr_and_stdin_are_kept_apart(server: Server) -> None:
    with ssh.connect(server.target()) as s:
        both = s.run(["sh", "-c", "echo out; echo err >&2"])
        fed = s.run(["cat"], input="line 1\nline 2")
    assert (both.stdout, both.stderr) == ("out\n", "err\n")
    assert fed.stdout == "line 1\nline 2"


def test_a_command_without_input_reads_an_empty_stdin(server: Server) -> None:
    with ssh.connect(server.target()) as s:
        assert s.run(["cat"], timeout=20).stdout == ""  # no hang waiting for input


def test_many_quick_commands_at_once_keep_the_connection(server: Server) -> None:
    """Drift runs its verbs on channels of one connection at once. The race this guards
    against (an EOF sent as a quick command ended, arriving after paramiko's CLOSE: sshd drops
    the connection) showed in the drift benchmark about once a run of 50 nodes and does not
    reproduce reliably here; since commands without input send no EOF at all, it cannot occur."""
    with ssh.connect(server.target()) as s, ThreadPoolExecutor(8) as pool:
        codes = set(pool.map(lambda _: s.run(["true"], check=False).returncode, range(200)))
        assert codes == {0}
        assert s.run(["echo", "still here"]).stdout == "still here\n"


def test_a_flood_on_stderr_does_not_stall_the_command(server: Server) -> None:
    # More than paramiko's 2 MiB window: only reading stdout would deadlock here.
    with ssh.connect(server.target()) as s:
        result = s.run(["sh", "-c", "head -c 3000000 /dev/zero >&2; echo done"], timeout=60)
    assert result.stdout == "done\n"
    assert len(result.stderr) == 3_000_000


def test_failure_names_the_remote_command_and_host(server: Server) -> None:
    with ssh.connect(server.target()) as s:
        assert s.run(["sh", "-c", "exit 3"], check=False).returncode == 3
        with pytest.raises(CommandError) as exc:
            s.run(["sh", "-c", "echo broken >&2; exit 3"])
    message = str(exc.value)
    assert "exit 3" in message and "sh -c 'echo broken >&2; exit 3'" in message
    assert f"root@[{HOST}]:{server.port}" in message and "broken" in message


def test_a_command_killed_by_a_signal_fails_instead_of_hanging(server: Server) -> None:
    with ssh.connect(server.target()) as s:
        result = s.run(["sh", "-c", "echo before; kill -KILL $$"], check=False, timeout=30)
    assert result.stdout == "before\n" and result.returncode != 0


def test_a_command_over_its_timeout_raises(server: Server) -> None:
    with ssh.connect(server.target()) as s:
        t0 = time.monotonic()
        with pytest.raises(CommandError, match=r"timed out after 0\.5s"):
            s.run(["sleep", "10"], timeout=0.5)
        assert time.monotonic() - t0 < 5
        assert s.run(["true"]).returncode == 0  # the session is still usable


def test_put_and_get_round_trip_with_mode(server: Server, tmp_path: Path) -> None:
    # The server is this machine, so the file the node got can be inspected directly too.
    path = tmp_path / "remote" / "secret.key"
    path.parent.mkdir()
    path.write_text("old")
    path.chmod(0o644)
    data = b"private\x00bytes\n"
    with ssh.connect(server.target()) as s:
        s.put(str(path), data, 0o600)
        assert s.get(str(path)) == data
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == data
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temporary file left


class _Watching(io.BytesIO):
    """A source that, each time the upload asks for data, looks at what the node has so far."""

    def __init__(self, data: bytes, look: Callable[[], None]) -> None:
        super().__init__(data)
        self._look = look

    def read(self, size: int | None = -1) -> bytes:
        self._look()
        return super().read(size)


def test_put_never_leaves_the_file_where_another_user_could_open_it(
    server: Server, tmp_path: Path
) -> None:
    """Issue #15: SFTP creates the temporary file 0644 and chmods it afterwards, so another user
    of the node could open it in between and read the secret through that descriptor later. Now
    it is born in a fresh 0700 directory: while data flows, the only way to the file is through
    a directory that user cannot enter (checked with a real unprivileged process)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /var/tmp: every node user may create names here
    target = shared / "bundle.tar"
    seen: list[Path] = []

    def look() -> None:
        staged = [p for p in shared.rglob("*") if p.is_file()]
        assert len(staged) == 1, staged
        f = staged[0]
        seen.append(f)
        assert f.parent != shared, "the file is reachable straight from the shared directory"
        assert stat.S_IMODE(f.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        other = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                     "cat", str(f)], check=False)  # fmt: skip
        assert other.returncode != 0 and "Permission denied" in other.stderr

    data = b"secret" * 400_000  # a few chunks: looked at before each of them
    with ssh.connect(server.target()) as s:
        s._put(str(target), _Watching(data, look), 0o600, "put", "")
    assert len(seen) >= 2
    assert target.read_bytes() == data and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in shared.iterdir()] == ["bundle.tar"]  # the stage is gone


def test_put_refuses_a_stage_name_that_exists_and_cleans_up_on_failure(
    server: Server, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir" / "file"
    with ssh.connect(server.target()) as s, pytest.raises(SSHError, match="could not write"):
        s.put(str(missing), b"x", 0o600)
    full = tmp_path / "dir-in-the-way"
    (full / "x").mkdir(parents=True)  # the rename onto a non-empty directory fails
    with ssh.connect(server.target()) as s, pytest.raises(SSHError):
        s.put(str(full), b"x", 0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir-in-the-way"]


def test_get_of_a_missing_file_is_an_ssh_error(server: Server, tmp_path: Path) -> None:
    with ssh.connect(server.target()) as s, pytest.raises(SSHError, match="could not read"):
        s.get(str(tmp_path / "absent"))


# --- host key pinning ---------------------------------------------------------------------------


def test_other_host_key_is_refused_and_nothing_runs(server: Server, tmp_path: Path) -> None:
    impostor = hostkeys.generate("impostor")
    marker = tmp_path / "ran"
    target = server.target(known_hosts=server.known_hosts(impostor.public, "impostor"))
    with pytest.raises(ssh.HostKeyError) as exc, ssh.connect(target) as s:
        s.run(["touch", str(marker)])
    assert str(exc.value).startswith(
        f"host key mismatch for [{HOST}]:{server.port}: expected {impostor.fingerprint}, "
        f"got {server.host_key.fingerprint} — refusing to run anything"
    )
    assert not marker.exists()


def test_unknown_host_is_refused_showing_what_it_presented(server: Server) -> None:
    empty = server.tmp / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(ssh.HostKeyError) as exc:
        ssh.connect(server.target(known_hosts=empty))
    message = str(exc.value)
    assert f"no pinned host key for [{HOST}]:{server.port}" in message
    assert server.host_key.fingerprint in message


def test_only_ed25519_host_keys_are_accepted(server: Server) -> None:
    # The pinned line is the server's own, genuine ECDSA key: still refused, because we never
    # negotiate anything but ssh-ed25519.
    target = server.target(known_hosts=server.known_hosts(server.ecdsa_public, "ecdsa"))
    with pytest.raises(ssh.HostKeyError, match="mismatch"):
        ssh.connect(target)


def test_system_known_hosts_are_not_consulted(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ssh.HostKeyError, match="cannot read known_hosts"):
        ssh.connect(server.target(known_hosts=tmp_path / "missing"))


# --- authentication and reachability ------------------------------------------------------------


def test_wrong_client_key_is_an_auth_error(server: Server, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    privfs.write_file(other, hostkeys.generate("stranger").private.reveal().encode())
    with pytest.raises(ssh.AuthError) as exc:
        ssh.connect(server.target(identity=other))
    assert exc.value.hint  # says what to check


def test_missing_identity_file_is_an_ssh_error(server: Server, tmp_path: Path) -> None:
    with pytest.raises(SSHError, match="cannot load SSH identity"):
        ssh.connect(server.target(identity=tmp_path / "nope"))


def test_wait_for_ssh_gives_up_on_a_closed_port_at_its_deadline(server: Server) -> None:
    closed = ssh.Target(HOST, free_port(), "root", server.identity, server.tmp / "known_hosts")
    progress: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(ssh.UnreachableError, match="gave up after 2s") as exc:
        ssh.wait_for_ssh(closed, 2.0, progress.append)
    assert 2.0 <= time.monotonic() - t0 < 6
    assert exc.value.hint
    assert progress and progress[0].startswith("waiting: cannot reach SSH")


def test_wait_for_ssh_returns_a_session_once_ssh_answers(server: Server) -> None:
    with ssh.wait_for_ssh(server.target(), 30.0) as s:
        assert s.run(["true"]).returncode == 0


def test_wait_for_ssh_fails_at_once_on_a_host_key_mismatch(server: Server) -> None:
    impostor = hostkeys.generate("impostor")
    target = server.target(known_hosts=server.known_hosts(impostor.public, "impostor2"))
    t0 = time.monotonic()
    with pytest.raises(ssh.HostKeyError, match="mismatch"):
        ssh.wait_for_ssh(target, 60.0)
    assert time.monotonic() - t0 < 5  # never retried


def test_wait_for_ssh_retries_auth_failures_only_for_the_grace_period(
    server: Server, tmp_path: Path
) -> None:
    other = tmp_path / "other_key"
    privfs.write_file(other, hostkeys.generate("stranger").private.reveal().encode())
    progress: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(ssh.AuthError):
        ssh.wait_for_ssh(server.target(identity=other), 60.0, progress.append, auth_grace_s=2.0)
    assert 2.0 <= time.monotonic() - t0 < 10  # retried, but far short of the deadline
    assert len(progress) == 1 and "refused root" in progress[0]  # reported once, not per try


# --- ssh_config for OpenSSH -----------------------------------------------------------------------


def _config(server: Server, known_hosts: Path) -> Path:
    path = known_hosts.with_name(known_hosts.name + ".ssh_config")
    path.write_text(ssh.ssh_config({"node1": server.target(known_hosts=known_hosts)}))
    return path


def test_ssh_config_is_read_by_openssh_as_pinned(server: Server, tmp_path: Path) -> None:
    known = tmp_path / "dir with space" / "known_hosts"
    known.parent.mkdir()
    known.write_text(server.known_hosts(server.host_key.public).read_text())
    options = run(["ssh", "-G", "-F", _config(server, known), "node1"]).stdout.splitlines()
    for expected in (
        f"hostname {HOST}",
        f"port {server.port}",
        "user root",
        f"identityfile {server.identity}",
        "identitiesonly yes",
        f"userknownhostsfile {known}",
        "globalknownhostsfile /dev/null",
        "stricthostkeychecking true",
        "hostkeyalgorithms ssh-ed25519",
        "updatehostkeys false",
    ):
        assert expected in options, expected


def test_openssh_with_our_config_connects_and_refuses_another_key(
    server: Server, tmp_path: Path
) -> None:
    known = tmp_path / "dir with space" / "known_hosts"  # the quoting must reach ssh intact
    known.parent.mkdir()
    known.write_text(server.known_hosts(server.host_key.public).read_text())
    good = _config(server, known)
    ok = run(["ssh", "-F", good, "-o", "BatchMode=yes", "node1", "echo", "pinned"], timeout=30)
    assert ok.stdout == "pinned\n"

    impostor = hostkeys.generate("impostor")
    bad = _config(server, server.known_hosts(impostor.public, "bad"))
    refused = run(["ssh", "-F", bad, "-o", "BatchMode=yes", "node1", "true"], check=False)
    assert refused.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr


def test_ssh_config_has_one_block_per_node() -> None:
    target = ssh.Target("10.0.0.5", 22, "admin", Path("/k/id"), Path("/k/known_hosts"))
    text = ssh.ssh_config({"a": target, "b": target})
    assert text.count("Host ") == 2 and text.startswith("Host a\n    HostName 10.0.0.5\n")
    with pytest.raises(ValueError):
        ssh.ssh_config({'bad"name': target})
