"""The only module that talks to libvirt: connections, domains, pools, volumes.

Everything returned is plain data (facts); deciding what to do with them is pure code elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import libvirt

from provision import domain
from provision.errors import HypervisorError


@dataclass(frozen=True)
class DomainFact:
    name: str
    active: bool
    xml: str
    meta: domain.NodeMeta | None  # None: the domain is not ours (no provision metadata)


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; we report them ourselves."""


libvirt.registerErrorHandler(_quiet, None)


def _hint(uri: str, exc: libvirt.libvirtError) -> str:
    code = exc.get_error_code()
    if code in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_NO_CONNECT):
        if uri.startswith("qemu:///"):
            return "is libvirtd running? start it with `libvirtd -d` (and `virtlogd -d`)"
        return "check the host is reachable and its SSH host key is pinned in known_hosts"
    if code == libvirt.VIR_ERR_AUTH_FAILED:
        return "check your credentials for the hypervisor"
    return ""


class Connection:
    def __init__(self, uri: str, conn: libvirt.virConnect) -> None:
        self.uri = uri
        self._conn = conn

    def domains(self) -> list[DomainFact]:
        try:
            return [self._fact(d) for d in self._conn.listAllDomains()]
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"{self.uri}: cannot list domains: {exc}") from exc

    def domain(self, name: str) -> DomainFact | None:
        try:
            dom = self._conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise HypervisorError(f"{self.uri}: cannot look up domain {name}: {exc}") from exc
        return self._fact(dom)

    def _fact(self, dom: libvirt.virDomain) -> DomainFact:
        try:
            text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domain.NS)
            meta: domain.NodeMeta | None = domain.parse_metadata(text)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                raise HypervisorError(f"{self.uri}: cannot read {dom.name()}: {exc}") from exc
            meta = None
        return DomainFact(dom.name(), bool(dom.isActive()), dom.XMLDesc(0), meta)

    def define(self, xml: str) -> None:
        """Define (or redefine) a domain, letting libvirt validate the XML against its schema."""
        try:
            self._conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"{self.uri}: libvirt rejected the domain: {exc}") from exc

    def capabilities(self) -> str:
        try:
            return str(self._conn.getCapabilities())
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"{self.uri}: cannot read capabilities: {exc}") from exc


@contextmanager
def connect(uri: str) -> Iterator[Connection]:
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise HypervisorError(f"cannot connect to {uri}: {exc}", hint=_hint(uri, exc)) from exc
    try:
        yield Connection(uri, conn)
    finally:
        conn.close()
