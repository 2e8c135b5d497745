"""A normalized projection of a domain XML on exactly the fields our renderer sets
(provision.desired.domain.domain_xml), each in one canonical form: pure.

libvirt adds addresses, aliases, controllers, default attributes and seclabels, rewrites MiB to
KiB and q35 to pc-q35-7.2, and a raw comparison of dumps would report all of that as a change.
Keys the rendered XML lacks are never compared, except device presence: a disk or NIC that the
rendered XML lacks is a difference (libvirt never adds either on its own). `plan` uses it to see a
definition changed outside provision, `drift` to report it.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping

from provision.desired import domain

ABSENT = "absent"

# libvirt's memory units (docs: formatdomain "Memory Allocation"); no unit means KiB.
_UNITS = {
    "b": 1,
    "bytes": 1,
    "kb": 1000,
    "k": 1024,
    "kib": 1024,
    "mb": 1000**2,
    "m": 1024**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "g": 1024**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "t": 1024**4,
    "tib": 1024**4,
}
_DISK_DRIVER = {"type": "format", "cache": "cache", "io": "io", "discard": "discard"}
_PRESENCE = re.compile(r"(disk\[[^\]]+\]|nic\[\d+\])")


def _memory(el: ET.Element) -> str:
    """One canonical spelling per amount, in whole KiB as libvirt stores it: "1536 MiB"."""
    unit = _UNITS.get(el.get("unit", "KiB").lower())
    text = (el.text or "").strip()
    if unit is None or not text.isdigit():
        return f"{text} {el.get('unit', '')}".strip()  # unparseable: compared verbatim
    kib = int(text) * unit // 1024
    return f"{kib // 1024} MiB" if kib % 1024 == 0 else f"{kib} KiB"


def machine_family(machine: str) -> str:
    """libvirt expands an alias to the versioned type QEMU has (q35 -> pc-q35-7.2, pc ->
    pc-i440fx-7.2) and a QEMU upgrade moves the version: the family is what we chose."""
    if machine == "q35" or machine.startswith("pc-q35-"):
        return "q35"
    if machine == "pc" or machine.startswith("pc-i440fx-") or re.fullmatch(r"pc-[\d.]+", machine):
        return "pc"
    return machine


def _disk_source(disk: ET.Element) -> str:
    src = disk.find("source")
    if src is None:
        return "no source"  # an empty cdrom drive
    if src.get("pool") is not None:
        return f"{src.get('pool')}/{src.get('volume', '')}"
    for attr in ("file", "dev", "dir"):
        if src.get(attr) is not None:
            return src.get(attr, "")
    return f"{src.get('protocol', '?')}:{src.get('name', '')}"


def _disks(devices: ET.Element, out: dict[str, str]) -> None:
    for disk in devices.iterfind("disk"):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if target is None or not dev:
            continue
        k = f"disk[{dev}]"
        out[k] = _disk_source(disk)  # presence and source in one: pool/volume, or a path
        out[f"{k}.device"] = disk.get("device", "disk")
        driver = disk.find("driver")
        if driver is not None:
            for attr, name in _DISK_DRIVER.items():
                if driver.get(attr) is not None:
                    out[f"{k}.{name}"] = driver.get(attr, "")
            if driver.get("iothread") is not None:
                out[f"{k}.iothread"] = driver.get("iothread", "")
        out[f"{k}.bus"] = target.get("bus", "")
        # A boolean element: always projected, so that a disk made writable (or read-only) shows.
        out[f"{k}.readonly"] = "yes" if disk.find("readonly") is not None else "no"
        serial = disk.findtext("serial")
        if serial is not None:
            out[f"{k}.serial"] = serial


def _nics(devices: ET.Element, out: dict[str, str]) -> None:
    for i, iface in enumerate(devices.iterfind("interface")):
        k = f"nic[{i}]"
        src = iface.find("source")
        source = ""
        if src is not None:
            source = src.get("network") or src.get("bridge") or src.get("dev") or ""
        out[k] = f"{iface.get('type', '')} {source}".strip()  # presence, type and source
        model = iface.find("model")
        out[f"{k}.model"] = model.get("type", "") if model is not None else ABSENT


def project(xml: str) -> dict[str, str]:
    """The fields our renderer sets, normalized; see the module docstring for the keys."""
    root = ET.fromstring(xml)
    out: dict[str, str] = {"type": root.get("type", "")}
    vcpu = root.find("vcpu")
    if vcpu is not None:
        count = (vcpu.text or "").strip()
        current = vcpu.get("current")
        # `virsh setvcpus --live` lowers `current`, not the count we set.
        out["vcpus"] = count if current in (None, count) else f"{current} of {count}"
    for tag in ("memory", "currentMemory", "maxMemory"):
        el = root.find(tag)
        if el is not None:
            out[tag] = _memory(el)
            if el.get("slots") is not None:
                out[f"{tag}.slots"] = el.get("slots", "")
    iothreads = root.findtext("iothreads")
    if iothreads is not None:
        out["iothreads"] = iothreads.strip()
    os_el = root.find("os")
    if os_el is not None:
        os_type = os_el.find("type")
        if os_type is not None:
            out["os.arch"] = os_type.get("arch", "")
            out["os.machine"] = machine_family(os_type.get("machine", ""))
        for tag in ("kernel", "initrd", "cmdline"):
            text = os_el.findtext(tag)
            if text is not None:
                out[f"os.{tag}"] = text.strip()
    cpu = root.find("cpu")
    if cpu is not None and cpu.get("mode") is not None:
        out["cpu.mode"] = cpu.get("mode", "")
    for tag in ("on_poweroff", "on_reboot", "on_crash"):
        text = root.findtext(tag)
        if text is not None:
            out[tag] = text.strip()
    devices = root.find("devices")
    if devices is not None:
        _disks(devices, out)
        _nics(devices, out)
        balloon = devices.find("memballoon")
        if balloon is not None:
            out["memballoon"] = balloon.get("model", "")
        rng = devices.find("rng")
        if rng is not None:
            out["rng.model"] = rng.get("model", "")
            backend = rng.find("backend")
            if backend is not None:
                out["rng.backend"] = f"{backend.get('model', '')}:{(backend.text or '').strip()}"
    args = [a.get("value", "") for a in root.iterfind(f"{{{domain.QEMU_NS}}}commandline/*")]
    if args:
        out["qemu.args"] = " ".join(args)
    return out


def differences(want: Mapping[str, str], have: Mapping[str, str]) -> list[str]:
    """Keys whose value differs, in the rendered order: every key we set, and any disk or NIC
    the rendered XML lacks. A device that is missing altogether is one key, not one per field."""
    missing = {k for k in want if _PRESENCE.fullmatch(k) and k not in have}
    keys = [
        k for k in want if have.get(k) != want[k] and not (device(k) in missing and k != device(k))
    ]
    extra = [k for k in have if _PRESENCE.fullmatch(k) and k not in want]
    return keys + extra


def device(key: str) -> str:
    m = _PRESENCE.match(key)
    return m.group(1) if m else ""
