"""The only module that talks to libvirt: connections, domains, pools, volumes.

Everything returned is plain data (facts); deciding what to do with them is pure code elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import libvirt

from provision.boundary import transport
from provision.core.errors import HypervisorError
from provision.desired import domain
from provision.desired.domain import DomainFact

T = TypeVar("T")


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
    def __init__(self, uri: str, conn: libvirt.virConnect, *, read_only: bool = False) -> None:
        self.uri = uri
        self._conn = conn
        # Opened with openReadOnly: libvirtd itself refuses every change (drift's guarantee).
        self.read_only = read_only

    def _error(self, what: str, exc: libvirt.libvirtError) -> HypervisorError:
        """A failed call as one line with the next step: a connection that died under the run
        (libvirtd stopped) and a full pool are said as such, whatever libvirt's wording."""
        if not self._alive():
            return HypervisorError(
                f"{self.uri}: {what}: the connection to libvirtd was lost: {exc}",
                hint=_lost_hint(self.uri),
            )
        hint = ""
        if "No space left on device" in str(exc):  # libvirt passes strerror(ENOSPC) through
            hint = "that filesystem is full: free space on it or grow it, then re-run"
        return HypervisorError(f"{self.uri}: {what}: {exc}", hint=hint)

    def _alive(self) -> bool:
        try:
            return bool(self._conn.isAlive())
        except libvirt.libvirtError:
            return False

    def domains(self) -> list[DomainFact]:
        try:
            return [self._fact(d) for d in self._conn.listAllDomains()]
        except libvirt.libvirtError as exc:
            raise self._error("cannot list domains", exc) from exc

    def domain(self, name: str) -> DomainFact | None:
        try:
            dom = self._conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise self._error(f"cannot look up domain {name}", exc) from exc
        return self._fact(dom)

    def _fact(self, dom: libvirt.virDomain) -> DomainFact:
        try:
            text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domain.NS)
            meta: domain.NodeMeta | None = domain.parse_metadata(text)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                raise self._error(f"cannot read {dom.name()}", exc) from exc
            meta = None
        try:
            # The definition the next start uses, which for a running domain may differ from the
            # live one (`virsh setmaxmem --config`): drift compares both.
            persistent = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) if dom.isPersistent() else ""
            return DomainFact(dom.name(), bool(dom.isActive()), dom.XMLDesc(0), meta, persistent)
        except libvirt.libvirtError as exc:
            raise self._error(f"cannot read {dom.name()}", exc) from exc

    def define(self, xml: str) -> None:
        """Define (or redefine) a domain, letting libvirt validate the XML against its schema."""
        root = ET.fromstring(xml)
        name = root.findtext("name")
        if root.find("uuid") is None and name and self.domain(name) is not None:
            # libvirt redefines a domain only under its UUID; without one it sees a new domain
            # whose name is taken.
            ET.SubElement(root, "uuid").text = self._dom(name).UUIDString()
            xml = ET.tostring(root, encoding="unicode")
        try:
            self._conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        except libvirt.libvirtError as exc:
            raise self._error("libvirt rejected the domain", exc) from exc

    # --- storage -------------------------------------------------------------------------------

    def ensure_pool(self, name: str, xml: str) -> bool:
        """Define, build and start the pool if needed; True if anything changed."""
        changed = False
        try:
            pool = self._conn.storagePoolLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise self._error(f"cannot look up pool {name}", exc) from exc
            pool = self._call(f"define pool {name}", self._conn.storagePoolDefineXML, xml, 0)
            self._call(f"build pool {name}", pool.build, 0)  # creates the directory
            changed = True
        want = ET.fromstring(xml).findtext("target/path")
        have = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
        if want != have:
            raise HypervisorError(
                f"{self.uri}: pool {name} exists at {have}, the inventory says {want}",
                hint="rename the pool (pool_name) or fix pool_path",
            )
        if not pool.isActive():
            self._call(f"start pool {name}", pool.create, 0)
            changed = True
        if not pool.autostart():
            self._call(f"autostart pool {name}", pool.setAutostart, 1)
        return changed

    def _pool(self, name: str) -> libvirt.virStoragePool:
        try:
            pool = self._conn.storagePoolLookupByName(name)
            pool.refresh(0)
            return pool
        except libvirt.libvirtError as exc:
            raise self._error(f"storage pool {name}", exc) from exc

    def pool_paths(self) -> dict[str, str]:
        """Every storage pool's name -> its target path ("" for a pool without one, e.g. rbd)."""
        try:
            pools = self._conn.listAllStoragePools(0)
            return {
                p.name(): ET.fromstring(p.XMLDesc(0)).findtext("target/path") or "" for p in pools
            }
        except libvirt.libvirtError as exc:
            raise self._error("cannot list storage pools", exc) from exc

    def pool_free_bytes(self, pool_name: str) -> int:
        return int(self._pool(pool_name).info()[3])

    def volumes(self, pool_name: str) -> dict[str, int]:
        """Volume name -> bytes in its file (`physical`: a qcow2's capacity is its virtual size)."""
        pool = self._pool(pool_name)
        out = {}
        for v in pool.listAllVolumes(0):
            physical = ET.fromstring(v.XMLDesc(0)).findtext("physical")
            out[v.name()] = int(physical) if physical is not None else int(v.info()[2])
        return out

    def upload(
        self,
        pool_name: str,
        name: str,
        source: Path,
        volume_xml: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Create a volume and fill it through a libvirt stream (works over qemu+ssh:// too)."""
        pool = self._pool(pool_name)
        size = source.stat().st_size
        vol = self._call(f"create volume {name}", pool.createXML, volume_xml, 0)
        stream = self._conn.newStream(0)
        sent = 0
        fd = os.open(source, os.O_RDONLY)
        try:

            def chunk(_stream: object, nbytes: int, _opaque: object) -> bytes:
                nonlocal sent
                data = os.read(fd, min(nbytes, 4 << 20))
                sent += len(data)
                if progress is not None:
                    progress(sent, size)
                return data

            vol.upload(stream, 0, size, 0)
            stream.sendAll(chunk, None)
            stream.finish()
        except libvirt.libvirtError as exc:
            _abort(stream)
            self._delete(vol)  # a half-written artifact of ours is never worth keeping
            raise self._error(f"upload of {name} to pool {pool_name} failed", exc) from exc
        except BaseException:  # interrupted: progress() raises when the run is cancelled
            _abort(stream)
            self._delete(vol)
            raise
        finally:
            os.close(fd)

    def create_volume(self, pool_name: str, xml: str) -> None:
        pool = self._pool(pool_name)
        self._call(f"create a volume in pool {pool_name}", pool.createXML, xml, 0)

    def delete_volume(self, pool_name: str, name: str) -> bool:
        pool = self._pool(pool_name)
        try:
            vol = pool.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return False
            raise self._error(f"volume {name}", exc) from exc
        self._delete(vol)
        return True

    def _delete(self, vol: libvirt.virStorageVol) -> None:
        try:
            vol.delete(0)
        except libvirt.libvirtError as exc:
            raise self._error(f"cannot delete volume {vol.name()}", exc) from exc

    # --- domains -------------------------------------------------------------------------------

    def _dom(self, name: str) -> libvirt.virDomain:
        try:
            return self._conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            raise self._error(f"no domain {name}", exc) from exc

    def start(self, name: str) -> None:
        dom = self._dom(name)
        if not dom.isActive():
            self._call(f"start {name}", dom.create)

    def stop(self, name: str) -> None:
        """Power off at once: nodes are cattle, their disks stay."""
        dom = self._dom(name)
        if dom.isActive():
            self._call(f"stop {name}", dom.destroy)

    def shutdown(self, name: str, timeout_s: float, poll_s: float = 1.0) -> bool:
        """ACPI power-off, then wait; False if the guest ignored it and was powered off."""
        dom = self._dom(name)
        if not dom.isActive():
            return True
        self._call(
            f"shut down {name}", dom.shutdownFlags, libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not dom.isActive():
                return True
            time.sleep(poll_s)
        self.stop(name)
        return False

    def undefine(self, name: str) -> None:
        self._call(f"undefine {name}", self._dom(name).undefine)

    def detach_disk(self, name: str, target: str) -> None:
        """Remove a disk from the live domain (if running) and from its persistent definition."""
        dom = self._dom(name)
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        for disk in root.iterfind("devices/disk"):
            t = disk.find("target")
            if t is not None and t.get("dev") == target:
                xml = ET.tostring(disk, encoding="unicode")
                flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
                if dom.isActive():
                    flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
                self._call(f"detach {target} from {name}", dom.detachDeviceFlags, xml, flags)
                return

    def has_disk(self, name: str, target: str, *, live: bool) -> bool:
        dom = self._dom(name)
        xml = dom.XMLDesc(0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE)
        return any(
            t.get("dev") == target for t in ET.fromstring(xml).iterfind("devices/disk/target")
        )

    def set_metadata(self, name: str, xml: str) -> None:
        dom = self._dom(name)
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if dom.isActive():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        self._call(
            f"set metadata of {name}",
            dom.setMetadata,
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            xml,
            domain.NS_PREFIX,
            domain.NS,
            flags,
        )

    def open_console(self, name: str) -> libvirt.virStream:
        dom = self._dom(name)
        stream = self._conn.newStream(0)
        self._call(f"console of {name}", dom.openConsole, None, stream, 0)
        return stream

    def _call(self, what: str, fn: Callable[..., T], *args: object) -> T:
        try:
            return fn(*args)
        except libvirt.libvirtError as exc:
            raise self._error(f"cannot {what}", exc) from exc

    def free_memory_mib(self) -> int:
        return int(self._call("read free memory", self._conn.getFreeMemory)) // (1 << 20)

    def capabilities(self) -> str:
        try:
            return str(self._conn.getCapabilities())
        except libvirt.libvirtError as exc:
            raise self._error("cannot read capabilities", exc) from exc


def _lost_hint(uri: str) -> str:
    if uri.startswith("qemu:///"):
        return (
            "libvirtd stopped during the run: start it with `libvirtd -d`, then re-run; "
            "what was done before is kept"
        )
    return "check libvirtd on the hypervisor and the connection to it, then re-run"


def _abort(stream: libvirt.virStream) -> None:
    # Already aborted when sendAll's callback raised (an interrupted run).
    with contextlib.suppress(libvirt.libvirtError):
        stream.abort()


@contextmanager
def connect(uri: str, read_only: bool = False) -> Iterator[Connection]:
    """Open the hypervisor; `read_only` asks libvirtd for a connection that cannot change
    anything (drift), which also needs no write permission on the socket."""
    try:
        conn = libvirt.openReadOnly(uri) if read_only else libvirt.open(uri)
    except libvirt.libvirtError as exc:
        shown = transport.display_uri(uri)  # without the parameters we added
        line = transport.describe_failure(uri, str(exc))
        if line is not None:
            raise HypervisorError(f"cannot connect to {shown}: {line}") from exc
        raise HypervisorError(f"cannot connect to {shown}: {exc}", hint=_hint(uri, exc)) from exc
    try:
        yield Connection(uri, conn, read_only=read_only)
    finally:
        conn.close()
