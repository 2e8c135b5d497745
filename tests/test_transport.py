"""The effective libvirt URI of a hypervisor: pinned SSH host keys for every SSH transport.

Pure URI building plus the qemu+ssh wrapper script. The wrapper's quoting is checked by running it
(through a stand-in ssh that prints its argv, and through OpenSSH's `ssh -G`, which resolves its
options without connecting). The failure texts below were recorded from libvirt 9.0 against a
real sshd (see tests/integration/test_remote.py).
"""

from __future__ import annotations

import shlex
import shutil
import stat
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from provision.boundary import transport
from provision.core.errors import HypervisorError
from provision.core.model import Accel, Hypervisor

NASTY = "dir with space&'quote\"dq%d%%\\bs #hash"


def hv(
    uri: str,
    known_hosts: Path | None = Path("/etc/provision/known_hosts"),
    identity: Path | None = None,
    name: str = "kvm1",
) -> Hypervisor:
    return Hypervisor(name, uri, "pool", "/srv/pool", Accel.KVM, False, known_hosts, identity)


def params(uri: str) -> list[tuple[str, str]]:
    """The query as libvirt reads it: split on & and ;, each side URI-unescaped, no `+`."""
    query = urlsplit(uri).query
    pairs = [p.partition("=") for p in query.replace(";", "&").split("&") if p]
    return [(unquote(k), unquote(v)) for k, _, v in pairs]


# --- local and non-SSH URIs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "qemu:///system",
        "qemu:///session",
        "test:///default",
        "qemu+unix:///system?socket=/run/x.sock",
        "qemu+tls://kvm1/system",
        "qemu://kvm1/system",
    ],
)
def test_local_and_non_ssh_uris_are_returned_unchanged(uri: str, tmp_path: Path) -> None:
    h = hv(uri, known_hosts=None)
    assert transport.uri_for(h, None) == uri
    assert transport.libvirt_uri(h, tmp_path / "wrappers") == uri
    assert not (tmp_path / "wrappers").exists()  # nothing written for them


@pytest.mark.parametrize(
    "uri",
    [
        "qemu+tcp://kvm1/system",
        "qemu+tls://kvm1/system?no_verify=1",
        "qemu://kvm1/system?No_Verify=yes",
        "qemu+tls://kvm1/system?a=b;no%5Fverify=1",
    ],
)
def test_unencrypted_or_unverified_connections_are_refused_at_the_boundary_too(uri: str) -> None:
    """Issue #15: the inventory refuses them; a Hypervisor built any other way is refused here."""
    with pytest.raises(HypervisorError):
        transport.uri_for(hv(uri, known_hosts=None), None)


def test_transport_names_the_remote_transport() -> None:
    assert transport.transport("qemu+ssh://root@kvm1/system") == "ssh"
    assert transport.transport("qemu+libssh://kvm1/system") == "libssh"
    assert transport.transport("qemu://kvm1/system") == "tls"
    assert transport.transport("qemu:///system") is None


# --- libssh / libssh2 ----------------------------------------------------------------------------


def test_libssh_pins_the_known_hosts_file_with_strict_verification() -> None:
    uri = transport.uri_for(hv("qemu+libssh://root@kvm1:2222/system"), None)
    assert uri.startswith("qemu+libssh://root@kvm1:2222/system?")
    assert params(uri) == [
        ("known_hosts", "/etc/provision/known_hosts"),
        ("known_hosts_verify", "normal"),
    ]


def test_libssh_identity_adds_keyfile_and_privkey_auth() -> None:
    h = hv("qemu+libssh://root@kvm1/system", identity=Path("/keys/hv_ed25519"))
    assert dict(params(transport.uri_for(h, None))) == {
        "known_hosts": "/etc/provision/known_hosts",
        "known_hosts_verify": "normal",
        "keyfile": "/keys/hv_ed25519",
        "sshauth": "privkey",
    }


def test_existing_params_are_kept_as_written_and_in_order() -> None:
    h = hv("qemu+libssh://root@kvm1/system?mode=legacy&socket=/run/my%20sock;proxy=native")
    uri = transport.uri_for(h, None)
    assert urlsplit(uri).query.startswith("mode=legacy&socket=/run/my%20sock&proxy=native&")
    assert params(uri)[:3] == [("mode", "legacy"), ("socket", "/run/my sock"), ("proxy", "native")]


def test_an_inventory_cannot_weaken_host_key_checking() -> None:
    h = hv(
        "qemu+libssh://kvm1/system?known_hosts_verify=ignore&KNOWN_HOSTS=/tmp/other"
        "&no_verify=1&Known_Hosts_Verify=auto",
        identity=Path("/keys/k"),
    )
    got = params(transport.uri_for(h, None))
    names = [k.lower() for k, _ in got]
    assert names.count("known_hosts_verify") == 1 and names.count("known_hosts") == 1
    assert "no_verify" not in names
    assert ("known_hosts_verify", "normal") in got
    assert ("known_hosts", "/etc/provision/known_hosts") in got


def test_the_inventory_keyfile_stays_without_an_identity_file() -> None:
    h = hv("qemu+libssh://kvm1/system?keyfile=/keys/own&sshauth=agent,privkey")
    got = dict(params(transport.uri_for(h, None)))
    assert got["keyfile"] == "/keys/own" and got["sshauth"] == "agent,privkey"


def test_identity_file_replaces_the_inventory_keyfile() -> None:
    h = hv("qemu+libssh://kvm1/system?keyfile=/keys/own&sshauth=agent", identity=Path("/keys/k"))
    got = params(transport.uri_for(h, None))
    assert [v for k, v in got if k == "keyfile"] == ["/keys/k"]
    assert [v for k, v in got if k == "sshauth"] == ["privkey"]


@pytest.mark.parametrize(
    ("scheme", "want"),
    [
        # libssh expands %-escapes (%d, %u, ...) in the known_hosts path: %% is a literal %.
        ("qemu+libssh", f"/state/{NASTY.replace('%', '%%')}/known_hosts"),
        ("qemu+libssh2", f"/state/{NASTY}/known_hosts"),
    ],
)
def test_paths_are_uri_escaped_and_read_back_exactly(scheme: str, want: str) -> None:
    kh = Path(f"/state/{NASTY}/known_hosts")
    key = Path(f"/state/{NASTY}/id")
    uri = transport.uri_for(hv(f"{scheme}://root@kvm1/system", kh, key), None)
    query = urlsplit(uri).query
    assert " " not in query and "'" not in query and '"' not in query and "#" not in query
    got = dict(params(uri))
    assert got["known_hosts"] == want
    assert got["keyfile"] == str(key)  # read by libvirt itself: no expansion


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    h = hv("qemu+libssh://kvm1/system", Path("pins/kh"), Path("keys/id"))
    got = dict(params(transport.uri_for(h, None)))
    assert got["known_hosts"] == str(tmp_path / "pins/kh")
    assert got["keyfile"] == str(tmp_path / "keys/id")


@pytest.mark.parametrize("scheme", ["qemu+ssh", "qemu+libssh", "qemu+libssh2"])
def test_an_ssh_transport_without_a_pin_is_refused(scheme: str, tmp_path: Path) -> None:
    with pytest.raises(HypervisorError, match="known_hosts"):
        transport.libvirt_uri(hv(f"{scheme}://kvm1/system", known_hosts=None), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_paths_ssh_would_expand_are_refused(tmp_path: Path) -> None:
    for bad in (Path("/state/${HOME}/kh"), Path("/state/a\nb/kh")):
        with pytest.raises(HypervisorError, match="known_hosts path"):
            transport.libvirt_uri(hv("qemu+ssh://kvm1/system", bad), tmp_path)


def test_display_uri_drops_what_uri_for_added(tmp_path: Path) -> None:
    for scheme in ("qemu+ssh", "qemu+libssh"):
        h = hv(f"{scheme}://root@kvm1/system?mode=legacy", identity=Path("/keys/id"))
        effective = transport.libvirt_uri(h, tmp_path)
        assert transport.display_uri(effective) == f"{scheme}://root@kvm1/system?mode=legacy"
    assert transport.display_uri("qemu:///system") == "qemu:///system"


# --- qemu+ssh and its wrapper -------------------------------------------------------------------


def test_ssh_uri_runs_the_wrapper_and_drops_no_verify(tmp_path: Path) -> None:
    h = hv("qemu+ssh://root@kvm1/system?no_verify=1&command=/usr/bin/ssh&mode=legacy")
    uri = transport.libvirt_uri(h, tmp_path)
    wrapper = tmp_path / "libvirt-ssh-kvm1"
    assert uri.startswith("qemu+ssh://root@kvm1/system?")
    assert params(uri) == [("mode", "legacy"), ("command", str(wrapper))]


def test_ssh_identity_goes_into_the_wrapper_not_the_uri(tmp_path: Path) -> None:
    h = hv("qemu+ssh://root@kvm1/system?keyfile=/keys/own", identity=Path("/keys/id"))
    uri = transport.libvirt_uri(h, tmp_path)
    assert "keyfile" not in dict(params(uri))
    assert (
        "-o 'IdentityFile=\"/keys/id\"' -o IdentitiesOnly=yes"
        in (tmp_path / "libvirt-ssh-kvm1").read_text()
    )


def test_wrapper_execs_ssh_with_only_the_pinned_file_trusted() -> None:
    script = transport.wrapper_script(hv("qemu+ssh://root@kvm1/system"))
    assert script.startswith("#!/bin/sh\n")
    [exec_line] = [line for line in script.splitlines() if line.startswith("exec ")]
    argv = shlex.split(exec_line)
    assert argv[:2] == ["exec", "ssh"] and argv[-1] == "$@"
    options = argv[3:-1:2]
    assert all(flag == "-o" for flag in argv[2:-1:2])
    assert options == [
        'UserKnownHostsFile="/etc/provision/known_hosts"',
        "GlobalKnownHostsFile=/dev/null",
        "StrictHostKeyChecking=yes",
        "UpdateHostKeys=no",
        "BatchMode=yes",
        "KnownHostsCommand=none",
        "VerifyHostKeyDNS=no",
        "ControlMaster=no",
        "ControlPath=none",
    ]


def test_wrapper_wraps_the_inventory_ssh_command() -> None:
    script = transport.wrapper_script(hv("qemu+ssh://kvm1/system?command=/opt/my%20ssh/bin/ssh"))
    assert "exec '/opt/my ssh/bin/ssh' -o " in script


def test_wrapper_is_private_executable_and_written_once(tmp_path: Path) -> None:
    h = hv("qemu+ssh://root@kvm1/system")
    wrappers = tmp_path / "state" / "wrappers"
    first = transport.libvirt_uri(h, wrappers)
    path = wrappers / "libvirt-ssh-kvm1"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE(wrappers.stat().st_mode) == 0o700
    before = path.stat()
    assert transport.libvirt_uri(h, wrappers) == first
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in wrappers.iterdir()] == ["libvirt-ssh-kvm1"]  # no temp files left


def test_wrapper_is_rewritten_when_the_pin_changes(tmp_path: Path) -> None:
    transport.libvirt_uri(hv("qemu+ssh://kvm1/system", Path("/a/kh")), tmp_path)
    path = tmp_path / "libvirt-ssh-kvm1"
    path.chmod(0o755)
    transport.libvirt_uri(hv("qemu+ssh://kvm1/system", Path("/b/kh")), tmp_path)
    assert '"/b/kh"' in path.read_text() and '"/a/kh"' not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_a_wrapper_dir_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(HypervisorError, match="writable by others"):
        transport.libvirt_uri(hv("qemu+ssh://kvm1/system"), shared)


def _fake_ssh(tmp_path: Path) -> Path:
    fake = tmp_path / "fake-ssh"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done\n')
    fake.chmod(0o700)
    return fake


def test_wrapper_passes_nasty_paths_as_single_arguments(tmp_path: Path) -> None:
    nasty = tmp_path / NASTY
    h = hv(
        f"qemu+ssh://kvm1/system?command={_fake_ssh(tmp_path)}",
        nasty / "known_hosts",
        nasty / "id",
    )
    transport.libvirt_uri(h, tmp_path / "w")
    out = subprocess.run(
        [tmp_path / "w" / "libvirt-ssh-kvm1", "-p", "22", "--", "kvm1", "sh -c 'x'"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    argv = out.split("\0")[:-1]
    ssh_escaped = str(nasty).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    assert argv[:2] == ["-o", f'UserKnownHostsFile="{ssh_escaped}/known_hosts"']
    assert argv[-5:] == ["-p", "22", "--", "kvm1", "sh -c 'x'"]


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs openssh-client (setup.sh)")
def test_openssh_reads_the_pinned_path_back_exactly(tmp_path: Path) -> None:
    """`ssh -G` resolves its options (quotes, %-escapes) and prints them without connecting."""
    nasty = tmp_path / NASTY
    transport.libvirt_uri(hv("qemu+ssh://kvm1/system", nasty / "known_hosts"), tmp_path / "w")
    out = subprocess.run(
        [tmp_path / "w" / "libvirt-ssh-kvm1", "-G", "-p", "2222", "-l", "root", "kvm1"],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    ).stdout
    conf = dict(line.partition(" ")[::2] for line in out.splitlines())
    assert conf["userknownhostsfile"] == f"{nasty}/known_hosts"
    assert conf["globalknownhostsfile"] == "/dev/null"
    assert conf["stricthostkeychecking"] == "true"
    assert conf["batchmode"] == "yes"
    assert conf["updatehostkeys"] == "false"
    assert conf["verifyhostkeydns"] == "false"


# --- failures ------------------------------------------------------------------------------------

SSH_URI = "qemu+ssh://root@127.0.0.1:40022/system?command=/state/libvirt-ssh-kvm1"
LIBSSH_URI = (
    "qemu+libssh://root@127.0.0.1:40022/system?known_hosts=/pins/kh&known_hosts_verify=normal"
    "&keyfile=/keys/id&sshauth=privkey"
)
LIBSSH2_URI = LIBSSH_URI.replace("libssh", "libssh2", 1)

SSH_CHANGED = (
    "Cannot recv data: @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n"
    "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n"
    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n"
    "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\r\n"
    "The fingerprint for the ED25519 key sent by the remote host is\n"
    "SHA256:H5xIIrMIAM6Zs5o2KxCUFmSpCTF/41gOQe8X5HxEBEM.\r\n"
    "Please contact your system administrator.\r\n"
    "Add correct host key in /pins/kh to get rid of this message.\r\n"
    "Offending ED25519 key in /pins/kh:1\r\n"
    "Host key for [127.0.0.1]:40022 has changed and you have requested strict checking.\r\n"
    "Host key verification failed.: Connection reset by peer"
)
LIBSSH_CHANGED = (
    "authentication failed: !!! SSH HOST KEY VERIFICATION FAILED !!!: Identity of host "
    "'127.0.0.1:40022' differs from stored identity. Please verify the new host key "
    "'66:3e:a1:c1' to avoid possible man in the middle attack. The key is stored in '/pins/kh'."
)


@pytest.mark.parametrize(
    ("uri", "message", "want"),
    [
        (
            SSH_URI,
            SSH_CHANGED,
            "the SSH host key of 127.0.0.1:40022 does not match the one pinned in /pins/kh: ",
        ),
        (
            LIBSSH_URI,
            LIBSSH_CHANGED,
            "the SSH host key of 127.0.0.1:40022 does not match the one pinned in /pins/kh: ",
        ),
        (
            SSH_URI,
            "Cannot recv data: No ED25519 host key is known for [127.0.0.1]:40022 and you have "
            "requested strict checking.\r\nHost key verification failed.: Connection reset by peer",
            "the SSH host key of 127.0.0.1:40022 is not pinned in the hypervisor's known_hosts",
        ),
        (
            LIBSSH_URI,
            "libssh transport error: No user interaction callback provided: Can't verify the "
            "session host key",
            "the SSH host key of 127.0.0.1:40022 is not pinned in /pins/kh (or the file is ",
        ),
        (
            LIBSSH2_URI,
            "SSH transport error: No user interaction callback provided: Can't verify the "
            "session host key",
            "the SSH host key of 127.0.0.1:40022 is not pinned in /pins/kh (or the file is ",
        ),
        (
            SSH_URI,
            "Cannot recv data: root@127.0.0.1: Permission denied (publickey).: Connection reset",
            "127.0.0.1:40022 refused the SSH login as root: ",
        ),
        (
            LIBSSH_URI,
            "libssh transport error: failed to authenticate: Access denied for 'publickey'. "
            "Authentication that can continue: publickey",
            "127.0.0.1:40022 refused the SSH login as root: ",
        ),
        (
            LIBSSH2_URI,
            "authentication failed: authentication with private key '/keys/id' has failed: "
            "Username/PublicKey combination invalid",
            "127.0.0.1:40022 refused the SSH login as root: ",
        ),
        (
            SSH_URI,
            "Cannot recv data: no such identity: /keys/id: No such file or directory\r\n"
            "root@127.0.0.1: Permission denied (publickey).: Connection reset by peer",
            "cannot use the SSH identity file /keys/id: ",
        ),
        (
            LIBSSH_URI,
            "authentication failed: error while reading private key '/keys/id'",
            "cannot use the SSH identity file /keys/id: ",
        ),
        (
            LIBSSH2_URI,
            "SSH transport error: No user interaction callback provided: Can't retrieve private "
            "key passphrase",
            "cannot use the SSH identity file /keys/id: ",
        ),
        (
            SSH_URI,
            "Cannot recv data: ssh: connect to host 127.0.0.1 port 40022: Connection refused: "
            "Connection reset by peer",
            "cannot reach SSH on 127.0.0.1:40022: ",
        ),
    ],
)
def test_failures_map_to_one_line_saying_what_to_do(uri: str, message: str, want: str) -> None:
    line = transport.describe_failure(uri, message)
    assert line is not None and line.startswith(want), line
    assert "\n" not in line and "\r" not in line


def test_failures_of_other_transports_and_unknown_texts_are_not_described() -> None:
    assert transport.describe_failure("qemu:///system", "Permission denied (publickey)") is None
    assert transport.describe_failure(SSH_URI, "internal error: something else") is None
