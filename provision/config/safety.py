"""Settings that are well-formed but unsafe or self-defeating: a hypervisor URI that would carry
the node's seed unprotected, a sysctl override that breaks what the node runs.

Pure functions of checked values; each returns messages that say why and what to use instead,
and the inventory loader locates them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from provision.baseline import hardening
from provision.core.model import Node

# libvirt's remote transports that log in over SSH (the host key is pinned by known_hosts).
SSH_TRANSPORTS = frozenset({"ssh", "libssh", "libssh2"})
_SEED = "the node's seed (with its private SSH host key) would travel over it"
_SAFE = "use qemu+ssh:// with known_hosts pinning the hypervisor's key, or qemu+tls:// with "
_SAFE += "certificate checking"


def uri_problems(uri: str) -> list[str]:
    """Why libvirt must not be reached through `uri` (empty: it may).

    The seed of every node goes to the hypervisor over this connection, so the transport must
    authenticate the hypervisor and encrypt: qemu+tcp:// does neither, and `no_verify` (any
    value but 0, as libvirt reads it) turns the check of the hypervisor's identity off. libvirt
    matches parameter names case-insensitively and unescapes them, and so does this check.
    """
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 (a port out of range raises only when read)
    except ValueError as exc:
        return [f"{uri!r} is not a valid URI: {exc}"]
    kind = parts.scheme.partition("+")[2].lower()
    if not kind and parts.netloc:
        kind = "tls"  # libvirt's default for a URI naming a host: qemu://kvm1/system
    problems = []
    if kind == "tcp":
        problems.append(f"qemu+tcp:// is neither authenticated nor encrypted, and {_SEED}: {_SAFE}")
    for param in parts.query.replace(";", "&").split("&"):
        name, _, value = param.partition("=")
        if unquote(name).strip().lower() != "no_verify" or unquote(value).strip() == "0":
            continue
        if kind == "tls":
            why = f"no_verify turns off the check of the hypervisor's TLS certificate, and {_SEED}"
            problems.append(f"{why}: remove it; {_SAFE}")
        elif kind in SSH_TRANSPORTS:
            problems.append(
                "no_verify would turn off the check of the hypervisor's SSH host key: remove it "
                "(known_hosts pins the key, and it is always checked)"
            )
        else:
            problems.append("no_verify turns off the check of the hypervisor's identity: remove it")
    return problems


@dataclass(frozen=True)
class Requirement:
    """A sysctl value that features of one node cannot work without."""

    key: str
    value: str
    minimum: int | None  # any integer from it up works too
    features: tuple[str, ...]  # what on this node needs it
    check_id: str

    def allows(self, value: str) -> bool:
        text = value.strip()
        if not re.fullmatch(r"-?[0-9]+", text):  # never int(): it takes "1_0" and "+1"
            return False
        if self.minimum is not None:
            return int(text) >= self.minimum
        return int(text) == int(self.value)

    @property
    def wanted(self) -> str:
        return f">= {self.minimum}" if self.minimum is not None else f"= {self.value}"


def requirements(node: Node) -> tuple[Requirement, ...]:
    """The role rows of the node's hardening set (baseline.hardening, the one source) whose
    features the node runs: an override of one to a value it does not allow breaks them."""
    return tuple(
        Requirement(
            r.name,
            r.value,
            r.minimum,
            tuple(f.name for f in r.needed_by if f.present(node)),
            r.check_id,
        )
        for r in hardening.sysctl_rules(node)
        if any(f.present(node) for f in r.needed_by)
    )


def broken_requirements(node: Node) -> list[tuple[str, str]]:
    """(sysctl key, message) for each of the node's overrides that breaks what the node runs:
    a value its role rows (baseline.hardening) do not allow."""
    overrides = dict(node.sysctl)
    out = []
    for need in requirements(node):
        value = overrides.get(need.key)
        if value is None or need.allows(value):
            continue
        out.append(
            (
                need.key,
                f"{value} would break {_and(need.features)} "
                f"(needs {need.key} {need.wanted}, {need.check_id})",
            )
        )
    return out


def _and(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
