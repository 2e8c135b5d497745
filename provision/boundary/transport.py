"""How libvirt reaches a hypervisor: the effective connection URI, with its SSH host key pinned.

A remote hypervisor's SSH host key is always checked against the inventory's `known_hosts` file
and never trusted on first use, whatever the inventory's URI says:

- `qemu+libssh://` and `qemu+libssh2://`: libvirt's own SSH client takes the pinned file as URI
  parameters (`known_hosts=FILE&known_hosts_verify=normal`). With `normal` an unknown key needs an
  interactive callback, and `libvirt.open` passes none, so the connection is refused.
- `qemu+ssh://`: libvirt runs the `ssh` binary, which has no such parameter, but libvirt runs
  whatever `command=` names instead. We write a tiny wrapper that execs ssh with the pinned file as
  the only known_hosts and strict checking. ssh keeps the first value it sees for an option, so
  libvirt's own arguments after ours (even `no_verify=1`) cannot weaken them.
- Local URIs (and other transports) are returned unchanged.

Only paths go into URIs and the wrapper, never key material. Everything here is pure except
writing the wrapper (`libvirt_uri`).
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from provision.config import safety
from provision.core.errors import HypervisorError
from provision.core.model import Hypervisor

SSH = "ssh"
LIBSSH = "libssh"
LIBSSH2 = "libssh2"
SSH_TRANSPORTS = safety.SSH_TRANSPORTS

# URI parameters we set; an inventory's own value for one of them is dropped, not merged (libvirt
# matches parameter names case-insensitively). `no_verify` would turn off ssh's strict checking.
_OWNED = {
    SSH: {"command", "no_verify"},
    LIBSSH: {"known_hosts", "known_hosts_verify", "no_verify"},
    LIBSSH2: {"known_hosts", "known_hosts_verify", "no_verify"},
}
_OWNED_WITH_IDENTITY = {
    SSH: {"keyfile"},
    LIBSSH: {"keyfile", "sshauth"},
    LIBSSH2: {"keyfile", "sshauth"},
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_local(uri: str) -> bool:
    """qemu:///system and friends: no host part, so the hypervisor is this machine."""
    scheme, sep, rest = uri.partition("://")
    return bool(sep) and scheme in ("qemu", "qemu+unix") and rest.startswith("/")


def transport(uri: str) -> str | None:
    """The remote transport of a libvirt URI (`ssh` for qemu+ssh://), None for a local URI."""
    parts = urlsplit(uri)
    scheme_transport = parts.scheme.partition("+")[2].lower()
    if scheme_transport:
        return scheme_transport
    return "tls" if parts.hostname else None  # libvirt's default for a URI naming a host


def uri_for(hv: Hypervisor, wrapper: Path | None) -> str:
    """The URI libvirt should open for `hv`; `wrapper` is the ssh wrapper (qemu+ssh:// only)."""
    kind = transport(hv.uri)
    _refuse_unverified(hv.uri, kind)
    if kind not in SSH_TRANSPORTS:
        return hv.uri
    pinned = _pinned(hv)
    identity = _identity(hv)
    owned = _OWNED[kind] | (_OWNED_WITH_IDENTITY[kind] if identity is not None else set())
    ours: list[tuple[str, str]]
    if kind == SSH:
        if wrapper is None:
            raise ValueError(f"{hv.uri}: the ssh transport needs its wrapper script")
        # The wrapper carries the pin and the identity: ssh percent-expands an `-i` path (what
        # libvirt's keyfile= becomes) and checks it before expanding, so no escaping works there.
        ours = [("command", str(wrapper.absolute()))]
    else:
        # libssh expands %-escapes in the known_hosts path (%d, %u, ...); libssh2 does not.
        kh = str(pinned).replace("%", "%%") if kind == LIBSSH else str(pinned)
        ours = [("known_hosts", kh), ("known_hosts_verify", "normal")]
        if identity is not None:
            ours += [("keyfile", str(identity)), ("sshauth", "privkey")]
    parts = urlsplit(hv.uri)
    kept = [p for p in _raw_params(parts.query) if _param_name(p) not in owned]
    query = "&".join(kept + [f"{quote(k)}={quote(v, safe='/')}" for k, v in ours])
    return urlunsplit(parts._replace(query=query))


def _refuse_unverified(uri: str, kind: str | None) -> None:
    """The inventory refuses these already (config.safety, the one rule); a Hypervisor made any
    other way is refused here too: the seed with the node's private host key travels over this
    connection. (On the SSH transports we own `no_verify` and drop it: the pin decides.)"""
    problems = [] if kind in SSH_TRANSPORTS else safety.uri_problems(uri)
    if problems:
        raise HypervisorError(f"{display_uri(uri)}: {problems[0]}")


def wrapper_script(hv: Hypervisor) -> str:
    """The ssh wrapper for a qemu+ssh:// hypervisor: ssh with only the pinned file trusted."""
    if transport(hv.uri) != SSH:
        raise ValueError(f"{hv.uri}: only the ssh transport uses a wrapper")
    pinned = _pinned(hv)
    identity = _identity(hv)
    # An inventory's own command= names the ssh binary to use; we wrap it.
    binary = _param(hv.uri, "command") or "ssh"
    options = [
        f"UserKnownHostsFile={_ssh_token(hv, pinned)}",
        "GlobalKnownHostsFile=/dev/null",  # the pin is the only trusted key
        "StrictHostKeyChecking=yes",  # unknown or changed keys are refused, never added
        "UpdateHostKeys=no",  # and the pinned file is never rewritten
        "BatchMode=yes",  # no prompt: a key or login question fails instead of hanging
        "KnownHostsCommand=none",  # an ssh_config cannot add trusted keys from elsewhere,
        "VerifyHostKeyDNS=no",  # nor from DNS (SSHFP records),
        "ControlMaster=no",  # nor reuse a multiplexed connection checked against other keys
        "ControlPath=none",
    ]
    if identity is not None:
        options += [f"IdentityFile={_ssh_token(hv, identity)}", "IdentitiesOnly=yes"]
    argv = [binary] + [arg for opt in options for arg in ("-o", opt)]
    return (
        "#!/bin/sh\n"
        "# Written by provision: libvirt runs this as ssh (qemu+ssh://...?command=) so the\n"
        "# hypervisor's host key is checked against its pinned known_hosts file only.\n"
        "# Rewritten from the inventory on every run: do not edit.\n"
        f'exec {shlex.join(argv)} "$@"\n'
    )


def wrapper_path(hv: Hypervisor, wrapper_dir: Path) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", hv.name):
        raise ValueError(f"hypervisor name {hv.name!r} is not a safe file name")
    return wrapper_dir / f"libvirt-ssh-{hv.name}"


def libvirt_uri(hv: Hypervisor, wrapper_dir: Path) -> str:
    """The URI to open for `hv`; for qemu+ssh:// first (re)writes its wrapper in `wrapper_dir`."""
    if transport(hv.uri) != SSH:
        return uri_for(hv, None)
    path = wrapper_path(hv, wrapper_dir)
    _write_executable(path, wrapper_script(hv))
    return uri_for(hv, path)


def display_uri(uri: str) -> str:
    """The URI without the parameters `uri_for` adds (long paths), for messages."""
    kind = transport(uri)
    if kind not in SSH_TRANSPORTS:
        return uri
    owned = _OWNED[kind] | _OWNED_WITH_IDENTITY[kind]
    parts = urlsplit(uri)
    kept = [p for p in _raw_params(parts.query) if _param_name(p) not in owned]
    return urlunsplit(parts._replace(query="&".join(kept)))


# --- failures --------------------------------------------------------------------------------

_MISMATCH = re.compile(
    r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for \S+ has changed"
    r"|HOST KEY VERIFICATION FAILED|differs from stored identity"
)
_MISMATCH_FILE = re.compile(
    r"Add correct host key in (?P<ssh>.+?) to get rid of this message"
    r"|The key is stored in '(?P<libssh>.+?)'"
)
_UNKNOWN = re.compile(
    r"host key is known for \S+ and you have requested strict checking"
    r"|Can't verify the session host key|Host key verification failed"
)
_IDENTITY = re.compile(
    r"no such identity: (?P<a>.+?): No such file or directory"
    r"|Identity file (?P<b>.+?) not accessible"
    r"|error while reading private key '(?P<c>.+?)'"
    r'|Load key "(?P<d>.+?)": '
    r"|(?P<e>Can't retrieve private key passphrase)"  # libssh2: unreadable (or encrypted) key
)
_UNPROTECTED = re.compile(r"UNPROTECTED PRIVATE KEY FILE")
_DENIED = re.compile(
    r"Permission denied \((?:publickey|password|keyboard-interactive)"
    r"|failed to authenticate|Access denied for|No more authentication methods"
    r"|Username/PublicKey combination invalid"
)
_UNREACHABLE = re.compile(
    r"Connection refused|Connection timed out|No route to host|Could not resolve hostname"
    r"|Name or service not known|Network is unreachable"
)


def describe_failure(uri: str, message: str) -> str | None:
    """One line saying what to do about a failed SSH connection to a hypervisor, or None.

    `message` is libvirt's error text (ssh's own output for qemu+ssh://, libssh's otherwise).
    """
    if transport(uri) not in SSH_TRANSPORTS:
        return None
    parts = urlsplit(uri)
    host = parts.hostname or "localhost"
    where = f"[{host}]" if ":" in host else host
    where = f"{where}:{parts.port}" if parts.port else where
    user = parts.username or "the default user"
    text = " ".join(message.split())  # ssh's banners come with \r\n line ends
    pinned = _pinned_in_uri(uri)
    if _MISMATCH.search(text):
        found = _MISMATCH_FILE.search(text)
        file = next((g for g in found.groups() if g), None) if found else None
        file = file or pinned or "the pinned known_hosts file"
        return (
            f"the SSH host key of {where} does not match the one pinned in {file}: someone may be "
            "intercepting the connection; if the hypervisor was reinstalled, verify its new key "
            "out of band and replace the pinned one"
        )
    if _UNKNOWN.search(text):
        file = pinned or "the hypervisor's known_hosts file"
        return (
            f"the SSH host key of {where} is not pinned in {file} (or the file is missing): "
            "add the hypervisor's key there after checking it out of band; it is never "
            "trusted on first use"
        )
    found = _IDENTITY.search(text)
    if found:
        key = next(g for g in found.groups() if g)
        if found["e"]:
            key = _param(uri, "keyfile") or "(keyfile)"
        if _UNPROTECTED.search(text):
            return f"ssh refuses the SSH identity file {key}: others can read it (chmod 600 it)"
        return f"cannot use the SSH identity file {key}: check identity_file in the inventory"
    if _DENIED.search(text):
        return (
            f"{where} refused the SSH login as {user}: check that the inventory's identity_file "
            f"is authorised for {user} on the hypervisor"
        )
    if _UNREACHABLE.search(text):
        return f"cannot reach SSH on {where}: check the address, the port and that sshd runs there"
    return None


# --- helpers ---------------------------------------------------------------------------------


def _raw_params(query: str) -> list[str]:
    """The query's `name=value` pieces as written (libvirt splits on both & and ;)."""
    return [p for p in re.split(r"[&;]", query) if p]


def _param_name(raw: str) -> str:
    return unquote(raw.partition("=")[0]).lower()


def _param(uri: str, name: str) -> str | None:
    """The last value of a query parameter (libvirt keeps the last one too)."""
    value = None
    for raw in _raw_params(urlsplit(uri).query):
        if _param_name(raw) == name:
            value = unquote(raw.partition("=")[2])
    return value


def _pinned_in_uri(uri: str) -> str | None:
    value = _param(uri, "known_hosts")
    if value is not None and transport(uri) == LIBSSH:
        value = value.replace("%%", "%")
    return value


def _pinned(hv: Hypervisor) -> Path:
    if hv.known_hosts is None:
        raise HypervisorError(
            f"hypervisor {hv.name}: {hv.uri} has no known_hosts file pinning its SSH host key",
            hint=f"set hypervisors.{hv.name}.known_hosts: keys are never trusted on first use",
        )
    return _checked(hv, "known_hosts", hv.known_hosts)


def _identity(hv: Hypervisor) -> Path | None:
    return None if hv.identity_file is None else _checked(hv, "identity_file", hv.identity_file)


def _checked(hv: Hypervisor, key: str, path: Path) -> Path:
    # Control characters survive neither ssh's option parsing nor a one-line error message;
    # `${` starts an environment expansion in ssh's file options, with no escape for it.
    text = str(path)
    if _CONTROL.search(text) or "${" in text:
        raise HypervisorError(
            f"hypervisor {hv.name}: {key} path {text!r} has characters ssh would interpret",
            hint="move the file to a plainer path",
        )
    return path.absolute()  # libvirt and ssh may run with another working directory


def _ssh_token(hv: Hypervisor, path: Path) -> str:
    """A path as one token of an ssh option value: double-quoted, escaped, % doubled."""
    text = str(path).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{text}"'


def _write_executable(path: Path, content: str) -> None:
    """Write `content` as a 0700 file unless it is already there; atomic for concurrent runs."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.parent.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        # libvirt executes the wrapper: whoever can replace it runs commands as us.
        raise HypervisorError(
            f"{path.parent} is writable by others or not ours; it holds the ssh wrapper",
            hint=f"chmod 700 {path.parent}",
        )
    try:
        if path.read_text() == content and path.stat().st_mode & 0o777 == 0o700:
            return
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.chmod(tmp, 0o700)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
