"""The test suite's network guard: what a test process may reach, and the socket wrappers that
refuse the rest.

Imported two ways: as `tests.netguard.netguard` by the pytest plugin (tests/netguard/plugin.py),
and as the top-level `netguard` by tests/netguard/sitecustomize.py in every Python child the
suite starts (this folder is first on their PYTHONPATH). So it depends on the standard library
only, keeps no state of its own (all of it is in the environment, read at the time of use), and
marks the socket module, not itself, as guarded: both copies in one process install once.

Refused is: connecting, sending to, or looking up anything but loopback, by IP family. Allowed:
loopback and unspecified literals, the loopback names, and every non-IP family (AF_UNIX, netlink,
vsock: none of them leaves this machine) except AF_PACKET on an interface other than `lo`.
A refusal raises NetguardRefused (not an OSError: retry loops that wait for a node on OSError
would otherwise spin on it until their timeout) and appends one JSON line to the file named by
PROVISION_NETGUARD_LOG, so a test that catches the exception still fails (the plugin reads it).

Not guarded, because they do not go through Python's socket module: non-Python children (ssh,
virsh, libvirt's C library, qemu, mmdebstrap/apt, curl), Python started with -I/-E/-S or with
an environment that drops PYTHONPATH, and C extensions that open sockets themselves.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys

# Every Python child imports this module: not even `typing` unless a type checker reads it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

LOG_ENV = "PROVISION_NETGUARD_LOG"
NETNS_ENV = "PROVISION_NETGUARD_NETNS"
GUARD_DIR = os.path.dirname(os.path.abspath(__file__))
_MARK = "_provision_netguard_originals"

# Names that resolve to loopback without asking a resolver (RFC 6761 `.localhost`, and the
# names Debian's /etc/hosts gives ::1).
_LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


class NetguardRefused(Exception):
    """A test tried to reach or look up an address off this machine."""


def _host_text(host: object) -> str:
    if isinstance(host, (bytes, bytearray)):
        return bytes(host).decode("ascii", "replace")
    return str(host)


def lookup_refusal(host: object) -> str | None:
    """None when looking `host` up stays on this machine, else why not."""
    if host is None or host == "" or host == b"":
        return None  # the passive/any address: nothing is asked of a resolver
    text = _host_text(host).rstrip(".").lower()
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        if text in _LOOPBACK_NAMES or text.endswith(".localhost"):
            return None
        return f"lookup of the name {text!r} (only loopback names are allowed)"
    return address_refusal(ip)


def address_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if ip.is_loopback or ip.is_unspecified:
        return None  # on Linux a connect to 0.0.0.0 or :: reaches this host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_refusal(ip.ipv4_mapped)  # ::ffff:127.0.0.1 is not is_loopback in 3.11
    return f"{ip} is not a loopback address"


def refusal(family: int, address: object) -> str | None:
    """None when a connect or send to `address` (a socket address of `family`) stays on this
    machine, else why not. A host name in an IP address is judged as a lookup, unresolved."""
    if family in (socket.AF_INET, socket.AF_INET6):
        if not isinstance(address, tuple) or not address:
            return f"unrecognised {socket.AddressFamily(family).name} address {address!r}"
        return lookup_refusal(address[0])
    if family == getattr(socket, "AF_PACKET", None):
        ifname = address[0] if isinstance(address, tuple) and address else address
        return None if ifname == "lo" else f"raw packets on interface {ifname!r}"
    return None


def describe(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = _host_text(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return _host_text(address)


def record(call: str, target: str, reason: str) -> None:
    """Append the attempt to the suite's log, so the test fails even if it swallows the error."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    import json

    line = json.dumps(
        {
            "pid": os.getpid(),
            "argv": getattr(sys, "orig_argv", sys.argv),  # the interpreter and its options too
            "test": os.environ.get("PYTEST_CURRENT_TEST", ""),
            "call": call,
            "target": target,
            "reason": reason,
        }
    )
    # One write to an O_APPEND file: lines from concurrent processes do not interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _refuse(call: str, target: str, reason: str) -> None:
    record(call, target, reason)
    raise NetguardRefused(
        f"netguard: {call} {target} refused: {reason} (tests must not reach off this machine; "
        "use loopback, or a network namespace the test makes itself)"
    )


def _address_wrapper(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    # connect(address), connect_ex(address), sendto(data, [flags,] address),
    # sendmsg(buffers[, ancdata[, flags[, address]]]): the address is the last positional for
    # sendto, the fourth for sendmsg.
    def wrapper(self: socket.socket, *args: Any) -> Any:
        if name == "sendmsg":
            address = args[3] if len(args) > 3 else None
        else:
            address = args[-1] if args else None
        if address is not None:
            reason = refusal(self.family, address)
            if reason is not None:
                _refuse(f"{name} to", describe(address), reason)
        return original(self, *args)

    wrapper.__name__ = name
    wrapper.__doc__ = original.__doc__
    return wrapper


def _lookup_wrapper(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(host: Any, *args: Any, **kwargs: Any) -> Any:
        if name == "getnameinfo":  # getnameinfo(sockaddr, flags): a reverse lookup
            reason = lookup_refusal(host[0] if isinstance(host, tuple) and host else host)
            target = describe(host)
        else:
            reason = lookup_refusal(host)
            target = repr(_host_text(host))
        if reason is not None:
            _refuse(f"{name} of", target, reason)
        return original(host, *args, **kwargs)

    wrapper.__name__ = name
    wrapper.__doc__ = original.__doc__
    return wrapper


_SOCKET_METHODS = ("connect", "connect_ex", "sendto", "sendmsg")
# create_connection needs no wrapper of its own: it calls the module's getaddrinfo and the
# socket's connect, both looked up when it runs. paramiko (SSHClient.connect) and urllib
# (http.client) go through exactly those two.
_LOOKUPS = ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo")


def installed() -> bool:
    return hasattr(socket, _MARK)


def install() -> None:
    """Wrap the socket layer of this process; a second call (the other copy) does nothing."""
    if installed():
        return
    originals: dict[str, Any] = {}
    for name in _SOCKET_METHODS:
        originals[f"socket.{name}"] = getattr(socket.socket, name)
        setattr(socket.socket, name, _address_wrapper(name, getattr(socket.socket, name)))
    for name in _LOOKUPS:
        originals[name] = getattr(socket, name)
        setattr(socket, name, _lookup_wrapper(name, getattr(socket, name)))
    setattr(socket, _MARK, originals)


def netns_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def in_session_netns() -> bool:
    """Whether this process shares the network namespace the test session started in. A child
    a test ran under `unshare --net` / `ip netns exec` sees only what the test put there. With
    the variable missing the answer is yes: guarding is the safe side."""
    recorded = os.environ.get(NETNS_ENV)
    return recorded is None or recorded == str(netns_inode())
