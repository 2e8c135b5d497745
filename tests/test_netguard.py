"""No traffic off this machine, enforced (issue #15): the suite's network guard (tests/netguard/)
refuses and reports what a test or its Python children try to reach or look up off this machine,
and lets loopback, non-IP sockets and a namespace the test made through.

Inner pytest runs (pytester) that attempt off-machine traffic run in a network namespace of their
own with only `lo` up: the guard is what must catch the attempt, and if it ever stops doing so,
the connect fails there (no route) instead of leaving the machine.
"""

from __future__ import annotations

import ast
import contextlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.netguard import netguard

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
OFF = "10.40.0.1"  # the address the tests use: a private address, never on this machine
# Run inside a fresh network namespace: only `lo`, up, and no route at all. Checked before any
# test runs in it, so an inner attempt that slipped past the guard has nowhere to go.
_ISOLATED = (
    "set -e; ip link set lo up; "
    'test "$(ip -o link show | wc -l)" = 1; test -z "$(ip route show)"; '
    'test -z "$(ip -6 route show | grep -v "^::1 ")"; exec "$0" "$@"'
)


def _inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, body: str) -> str:
    """Run `body` as a test module under the guard's plugin, isolated; its output."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ["PYTHONPATH"]]))
    test = pytester.makepyfile(test_inner=textwrap.dedent(body))
    result = pytester.run(
        "unshare",
        "--net",
        "sh",
        "-c",
        _ISOLATED,
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "tests.netguard.plugin",
        "-p",
        "no:cacheprovider",
        "-q",
        str(test),
        timeout=300,
    )
    return "\n".join(result.outlines + result.errlines)


def test_a_connect_off_the_machine_fails_the_test_even_when_it_catches_the_refusal(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _inner(
        pytester,
        monkeypatch,
        f"""
        import socket

        def test_swallows() -> None:
            s = socket.socket()
            try:
                s.connect(("{OFF}", 22))
            except BaseException:
                pass
            finally:
                s.close()
        """,
    )
    assert "1 failed" in out, out
    assert f"connect to {OFF}:22: {OFF} is not a loopback address" in out, out
    assert "test test_inner.py::test_swallows (call)" in out, out


def test_a_lookup_of_a_public_name_fails_the_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _inner(
        pytester,
        monkeypatch,
        """
        import socket
        import urllib.request

        def test_resolves() -> None:
            try:
                socket.gethostbyname("example.org")
            except Exception:
                pass

        def test_fetches() -> None:
            try:
                urllib.request.urlopen("http://example.org/", timeout=5)
            except Exception:
                pass
        """,
    )
    assert "2 failed" in out, out
    assert "gethostbyname of 'example.org': lookup of the name 'example.org'" in out, out
    assert "getaddrinfo of 'example.org'" in out, out  # urllib, through create_connection


def test_a_cli_child_that_connects_off_the_machine_fails_its_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The child swallows the refusal and exits 0, as a CLI that maps errors to a message would
    # not (exit 0 here is the worst case): only the log tells.
    out = _inner(
        pytester,
        monkeypatch,
        f"""
        import subprocess
        import sys

        CHILD = '''
        import socket
        try:
            socket.create_connection(("{OFF}", 22), timeout=5)
        except Exception as exc:
            print("child:", exc)
        '''

        def test_runs_a_child() -> None:
            done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            assert "netguard:" in done.stdout, done.stdout + done.stderr
        """,
    )
    assert "1 failed" in out, out
    assert f"getaddrinfo of '{OFF}': {OFF} is not a loopback address" in out, out
    assert "argv ['" in out and "'-c'" in out, out  # which process: the child's argv


def test_an_xfail_or_a_fixture_does_not_hide_an_attempt(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _inner(
        pytester,
        monkeypatch,
        f"""
        import socket
        import pytest

        @pytest.fixture
        def reaches_out():
            yield
            try:
                socket.getaddrinfo("{OFF}", 22)
            except Exception:
                pass

        @pytest.mark.xfail(reason="expected to fail")
        def test_expected_to_fail() -> None:
            try:
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("{OFF}", 53))
            except Exception:
                pass
            assert False

        def test_clean_body(reaches_out: None) -> None:
            pass
        """,
    )
    assert "1 failed, 1 passed, 1 error" in out, out
    assert f"sendto to {OFF}:53" in out, out
    assert "test test_inner.py::test_clean_body (teardown)" in out, out


def test_loopback_and_unix_sockets_pass(tmp_path: Path) -> None:
    # In this process, under the session's guard: a refusal here fails this test.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        for host in ("127.0.0.1", "localhost", "127.1.2.3"):
            try:
                socket.create_connection((host, port), timeout=5).close()
            except ConnectionRefusedError:
                assert host == "127.1.2.3"  # reachable, nothing listens there
        # This machine may have no IPv6: any outcome but the guard's refusal will do.
        with socket.socket(socket.AF_INET6) as s6, contextlib.suppress(OSError):
            s6.connect(("::ffff:127.0.0.1", port))
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "sock"))
        listener.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(tmp_path / "sock"))
    assert socket.getaddrinfo(None, 80)
    assert netguard.installed()


def test_a_child_may_connect_to_loopback(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        code = (
            "import socket, sys\n"
            f"socket.create_connection(('localhost', {server.getsockname()[1]}), timeout=5)\n"
            "print(hasattr(socket, '_provision_netguard_originals'))\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True", "the child was not guarded"


def test_a_child_in_a_namespace_the_test_made_is_not_flagged() -> None:
    # unshare --net: a namespace with only `lo` (down) and no route; the connect fails inside it
    # (ENETUNREACH) without a packet leaving, and the guard leaves it alone.
    code = (
        "import errno, os, socket, subprocess\n"
        "assert subprocess.run(['ip', 'route', 'show'], capture_output=True).stdout == b''\n"
        "links = subprocess.run(['ip', '-o', 'link', 'show'], capture_output=True, text=True)\n"
        "assert [x.split(':')[1].strip() for x in links.stdout.splitlines()] == ['lo']\n"
        "print('guarded', hasattr(socket, '_provision_netguard_originals'))\n"
        f"try:\n    socket.create_connection(('{OFF}', 22), timeout=5)\n"
        "except OSError as exc:\n    print(errno.errorcode[exc.errno])\n"
    )
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", code], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["guarded False", "ENETUNREACH"], done.stdout


def test_the_guard_chains_to_the_sitecustomize_it_shadows(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(
        "import os\nos.environ['CHAINED_SITECUSTOMIZE'] = 'ran'\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([netguard.GUARD_DIR, str(tmp_path)])}
    code = (
        "import os, socket\n"
        "print(os.environ.get('CHAINED_SITECUSTOMIZE'), "
        "hasattr(socket, '_provision_netguard_originals'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert done.stdout.strip() == "ran True", done.stdout + done.stderr


def test_the_session_environment_guards_children() -> None:
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == netguard.GUARD_DIR
    assert Path(os.environ[netguard.LOG_ENV]).is_file()
    assert os.environ[netguard.NETNS_ENV] == str(os.stat("/proc/self/ns/net").st_ino)


@pytest.mark.parametrize(
    ("family", "address", "allowed"),
    [
        (socket.AF_INET, ("127.0.0.1", 22), True),
        (socket.AF_INET, ("127.255.0.9", 22), True),
        (socket.AF_INET, ("0.0.0.0", 22), True),
        (socket.AF_INET, ("localhost", 22), True),
        (socket.AF_INET, ("node.localhost.", 22), True),
        (socket.AF_INET, (b"127.0.0.1", 22), True),
        (socket.AF_INET6, ("::1", 22, 0, 0), True),
        (socket.AF_INET6, ("::ffff:127.0.0.1", 22, 0, 0), True),
        (socket.AF_INET6, ("ip6-localhost", 22, 0, 0), True),
        (socket.AF_UNIX, "/run/libvirt/libvirt-sock", True),
        (socket.AF_UNIX, b"\0abstract", True),
        (socket.AF_NETLINK, (0, 0), True),
        (socket.AF_PACKET, ("lo", 0x0800), True),
        (socket.AF_INET, ("10.40.0.1", 22), False),
        (socket.AF_INET, ("10.0.2.2", 22), False),
        (socket.AF_INET, ("192.168.122.1", 22), False),
        (socket.AF_INET, ("deb.debian.org", 80), False),
        (socket.AF_INET, ("localhost.example.org", 80), False),
        (socket.AF_INET6, ("2001:db8::1", 22, 0, 0), False),
        (socket.AF_INET6, ("fe80::1%lo", 22, 0, 1), False),
        (socket.AF_INET6, ("::ffff:10.40.0.1", 22, 0, 0), False),
        (socket.AF_PACKET, ("eth0", 0x0800), False),
    ],
)
def test_the_decision_table(family: int, address: object, allowed: bool) -> None:
    assert (netguard.refusal(family, address) is None) is allowed


def test_a_refused_address_is_named() -> None:
    reason = netguard.refusal(socket.AF_INET6, ("2001:db8::1", 22, 0, 0))
    assert reason == f"{ipaddress.ip_address('2001:db8::1')} is not a loopback address"
    assert netguard.describe(("2001:db8::1", 22, 0, 0)) == "[2001:db8::1]:22"


def test_a_refusal_is_recorded_where_the_session_reads_it(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    env = {**os.environ, netguard.LOG_ENV: str(log)}  # a log of its own: not this test's
    code = f"import socket\ntry: socket.gethostbyname_ex('{OFF}')\nexcept Exception: pass\n"
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert entry["call"] == "gethostbyname_ex of" and entry["target"] == repr(OFF), entry
    assert entry["argv"][:2] == [sys.executable, "-c"], entry
    assert entry["test"].startswith("tests/test_netguard.py::"), entry


# Modules that reach the network themselves. The package reaches other machines only through
# paramiko (boundary/ssh.py) and libvirt (boundary/hypervisor.py), which tests/test_layers.py
# confines, and through the local processes boundary/process.py starts (mmdebstrap fetches the
# image's packages itself: the mirror is only a string in its argv, never resolved here).
_NETWORK_MODULES = {
    "socket", "ssl", "http", "urllib.request", "urllib3", "requests", "httpx", "aiohttp",
    "ftplib", "smtplib", "xmlrpc", "asyncio",
}  # fmt: skip


def test_the_package_opens_no_network_connection_of_its_own() -> None:
    found = []
    for path in sorted((ROOT / "provision").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for name in names:
                parts = name.split(".")
                hits = {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & _NETWORK_MODULES
                if hits:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not found, found
