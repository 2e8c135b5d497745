"""libvirt XML for domains, storage pools, volumes and bridged networks: pure functions.

Built from ElementTree objects in a fixed element order, never from string formatting, so values
are always escaped and the output is stable enough to compare against golden files.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from provision.core.model import Accel, Hypervisor, Network, NetworkMode, Node
from provision.desired.golden import UNRESOLVED, GoldenRef

NS = "https://provision.invalid/xmlns/node/1"  # our metadata namespace (.invalid: never fetched)
NS_PREFIX = "provision"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"

ET.register_namespace(NS_PREFIX, NS)
ET.register_namespace("qemu", QEMU_NS)


@dataclass(frozen=True)
class NodeMeta:
    """What a domain carries in our metadata element; also what `plan`/`drift` read back."""

    inventory: str
    node: str
    spec_hash: str
    image_id: str
    rootfs_sha256: str
    kernel_sha256: str
    initrd_sha256: str
    host_key_fingerprint: str
    labels: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, str], ...] = ()  # policy field -> fingerprint (provision.policy)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _text(el: ET.Element) -> str:
    ET.indent(el, space="  ")
    return ET.tostring(el, encoding="unicode") + "\n"


def seed_volume(node: Node) -> str:
    return f"{node.name}-seed.img"


def disk_volume(node: Node) -> str:
    return f"{node.name}.qcow2"


def data_volume(node: Node) -> str:
    """The data disk: never deleted by `up`, not even with --replace; only `down --purge`."""
    return f"{node.name}-data.qcow2"


def volumes(node: Node) -> tuple[str, ...]:
    """Every volume a node may own."""
    return (disk_volume(node), seed_volume(node), data_volume(node))


def metadata_element(meta: NodeMeta) -> ET.Element:
    root = ET.Element(f"{{{NS}}}node")
    for tag, value in (
        ("inventory", meta.inventory),
        ("name", meta.node),
        ("spec-hash", meta.spec_hash),
        ("image-id", meta.image_id),
    ):
        _sub(root, f"{{{NS}}}{tag}", value)
    _sub(root, f"{{{NS}}}rootfs", sha256=meta.rootfs_sha256)
    _sub(root, f"{{{NS}}}kernel", sha256=meta.kernel_sha256)
    _sub(root, f"{{{NS}}}initrd", sha256=meta.initrd_sha256)
    _sub(root, f"{{{NS}}}host-key", type="ssh-ed25519", fingerprint=meta.host_key_fingerprint)
    labels = _sub(root, f"{{{NS}}}labels")
    for key, value in meta.labels:
        _sub(labels, f"{{{NS}}}label", value, key=key)
    fields = _sub(root, f"{{{NS}}}fields")
    for name, value in meta.fields:
        _sub(fields, f"{{{NS}}}field", value, name=name)
    return root


def metadata_xml(meta: NodeMeta) -> str:
    """The metadata element alone, as libvirt's setMetadata/metadata() exchange it: without a
    namespace, which libvirt adds itself (it refuses an element that already declares it)."""
    root = metadata_element(meta)
    for el in root.iter():
        el.tag = el.tag.split("}", 1)[-1]
    return _text(root)


def parse_metadata(text: str) -> NodeMeta:
    """Read our metadata element back (from a domain XML or from libvirt's metadata())."""
    root = ET.fromstring(text)
    # libvirt's metadata() hands the element back without its namespace; a full domain XML has it.
    ns = "" if root.tag == "node" else f"{{{NS}}}"
    el = root if root.tag in ("node", f"{ns}node") else root.find(f".//{ns}node")
    if el is None:
        raise ValueError("no provision metadata")

    def get(tag: str) -> str:
        child = el.find(f"{ns}{tag}")
        return (child.text or "") if child is not None else ""

    def attr(tag: str, name: str) -> str:
        child = el.find(f"{ns}{tag}")
        return child.get(name, "") if child is not None else ""

    labels = tuple(
        (lab.get("key", ""), lab.text or "") for lab in el.iterfind(f"{ns}labels/{ns}label")
    )
    return NodeMeta(
        inventory=get("inventory"),
        node=get("name"),
        spec_hash=get("spec-hash"),
        image_id=get("image-id"),
        rootfs_sha256=attr("rootfs", "sha256"),
        kernel_sha256=attr("kernel", "sha256"),
        initrd_sha256=attr("initrd", "sha256"),
        host_key_fingerprint=attr("host-key", "fingerprint"),
        labels=labels,
        fields=tuple(
            (f.get("name", ""), f.text or "") for f in el.iterfind(f"{ns}fields/{ns}field")
        ),
    )


def node_meta(
    inventory: str,
    node: Node,
    golden: GoldenRef,
    spec_hash: str,
    host_key_fp: str,
    fields: tuple[tuple[str, str], ...] = (),
) -> NodeMeta:
    return NodeMeta(
        inventory=inventory,
        node=node.name,
        spec_hash=spec_hash,
        image_id=golden.image_id,
        rootfs_sha256=golden.rootfs_sha256 or UNRESOLVED,
        kernel_sha256=golden.kernel_sha256 or UNRESOLVED,
        initrd_sha256=golden.initrd_sha256 or UNRESOLVED,
        host_key_fingerprint=host_key_fp,
        labels=node.labels,
        fields=fields,
    )


def domain_xml(
    node: Node,
    hypervisor: Hypervisor,
    network: Network,
    golden: GoldenRef,
    accel: Accel,
    cmdline: str,
    meta: NodeMeta | None,
    *,
    with_seed: bool = True,
) -> str:
    """The domain definition: q35, direct kernel boot from the golden image's kernel and initrd."""
    if accel is Accel.AUTO:
        raise ValueError("accel must be resolved to kvm or qemu before rendering")
    pool = hypervisor.pool_path.rstrip("/")
    dom = ET.Element("domain", type=accel.value)
    _sub(dom, "name", node.name)
    _sub(dom, "title", f"provision node {node.name}")
    if meta is not None:  # None: for the digest of everything but the metadata
        metadata = _sub(dom, "metadata")
        metadata.append(metadata_element(meta))
    _sub(dom, "memory", str(node.memory_mib), unit="MiB")
    _sub(dom, "currentMemory", str(node.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(node.vcpus), placement="static")
    _sub(dom, "iothreads", "1")

    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="q35")
    _sub(os_el, "kernel", f"{pool}/{golden.kernel_volume}")
    _sub(os_el, "initrd", f"{pool}/{golden.initrd_volume}")
    _sub(os_el, "cmdline", cmdline)

    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if accel is Accel.KVM:
        # A generic CPU model hides mitigation flags, so the guest reports itself vulnerable
        # (catalogue HN-BOOT-08): pass the host CPU through. TCG has no host CPU to pass.
        _sub(dom, "cpu", mode="host-passthrough", check="none", migratable="on")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    disk = _sub(devices, "disk", type="volume", device="disk")
    _sub(
        disk,
        "driver",
        name="qemu",
        type="qcow2",
        cache="none",
        io="native",
        discard="unmap",
        iothread="1",
    )
    _sub(disk, "source", pool=hypervisor.pool_name, volume=disk_volume(node))
    _sub(disk, "target", dev="vda", bus="virtio")
    if with_seed:
        # The Debian cloud kernel has no AHCI driver: the NoCloud seed must be a virtio disk.
        seed = _sub(devices, "disk", type="volume", device="disk")
        _sub(seed, "driver", name="qemu", type="raw")
        _sub(seed, "source", pool=hypervisor.pool_name, volume=seed_volume(node))
        _sub(seed, "target", dev="vdb", bus="virtio")
        _sub(seed, "readonly")
    if node.data_disk_gib:
        data = _sub(devices, "disk", type="volume", device="disk")
        _sub(data, "driver", name="qemu", type="qcow2", cache="none", io="native", discard="unmap")
        _sub(data, "source", pool=hypervisor.pool_name, volume=data_volume(node))
        _sub(data, "target", dev="vdc", bus="virtio")
        _sub(data, "serial", "provision-data")  # a stable /dev/disk/by-id name in the guest
    if network.mode is NetworkMode.BRIDGE:
        iface = _sub(devices, "interface", type="network")
        _sub(iface, "source", network=network.name)
        _sub(iface, "model", type="virtio")
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=f"/var/log/libvirt/qemu/{node.name}-serial.log", append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="none")
    video = _sub(devices, "video")
    _sub(video, "model", type="none")

    if network.mode is NetworkMode.USER:
        # libvirt 9.0 has no passt backend: user-mode networking through QEMU arguments, with SSH
        # forwarded on loopback only. restrict=on: the guest reaches nothing through QEMU, neither
        # this machine's loopback services at 10.0.2.2 (other nodes' SSH forwards, a local sshd)
        # nor the outside; only the forward into it (and slirp's DHCP) still work.
        # Slot 1 of pcie.0 belongs to a root port on q35.
        cmd = _sub(dom, f"{{{QEMU_NS}}}commandline")
        for arg in (
            "-netdev",
            f"user,id=provnet0,restrict=on,hostfwd=tcp:127.0.0.1:{node.ssh_port}-:22",
            "-device",
            "virtio-net-pci,netdev=provnet0,bus=pcie.0,addr=0x10",
        ):
            _sub(cmd, f"{{{QEMU_NS}}}arg", value=arg)
    return _text(dom)


def pool_xml(hypervisor: Hypervisor) -> str:
    pool = ET.Element("pool", type="dir")
    _sub(pool, "name", hypervisor.pool_name)
    target = _sub(pool, "target")
    _sub(target, "path", hypervisor.pool_path.rstrip("/") or "/")
    perms = _sub(target, "permissions")
    # Traversable but not listable by others: QEMU (libvirt-qemu) opens files by name.
    _sub(perms, "mode", "0711")
    _sub(perms, "owner", "0")
    _sub(perms, "group", "0")
    return _text(pool)


def _qcow2_volume(name: str, gib: int) -> ET.Element:
    vol = ET.Element("volume", type="file")
    _sub(vol, "name", name)
    _sub(vol, "capacity", str(gib), unit="GiB")
    target = _sub(vol, "target")
    _sub(target, "format", type="qcow2")
    perms = _sub(target, "permissions")
    _sub(perms, "mode", "0600")
    return vol


def overlay_volume_xml(node: Node, hypervisor: Hypervisor, golden: GoldenRef) -> str:
    """The node's disk: a qcow2 overlay whose backing store is the golden base volume."""
    vol = _qcow2_volume(disk_volume(node), node.disk_gib)
    backing = _sub(vol, "backingStore")
    _sub(backing, "path", f"{hypervisor.pool_path.rstrip('/')}/{golden.base_volume}")
    _sub(backing, "format", type="qcow2")
    return _text(vol)


def data_volume_xml(node: Node) -> str:
    return _text(_qcow2_volume(data_volume(node), node.data_disk_gib))


def raw_volume_xml(name: str, size: int, mode: str = "0600") -> str:
    """A plain file volume (golden artifacts, seed), filled afterwards by an upload stream."""
    vol = ET.Element("volume", type="file")
    _sub(vol, "name", name)
    _sub(vol, "capacity", str(size), unit="bytes")
    target = _sub(vol, "target")
    _sub(target, "format", type="raw")
    perms = _sub(target, "permissions")
    _sub(perms, "mode", mode)
    return _text(vol)


def network_xml(network: Network) -> str:
    """A libvirt network that only names a host bridge: no NAT, no DHCP, no host address."""
    if network.mode is not NetworkMode.BRIDGE or network.bridge is None:
        raise ValueError(f"network {network.name} is not a bridged network")
    net = ET.Element("network")
    _sub(net, "name", network.name)
    _sub(net, "forward", mode="bridge")
    _sub(net, "bridge", name=network.bridge)
    return _text(net)


@dataclass(frozen=True)
class DomainFact:
    """What libvirt reports of a domain (boundary.hypervisor reads it; plan judges it)."""

    name: str
    active: bool
    xml: str
    meta: NodeMeta | None  # None: the domain is not ours (no provision metadata)
    # The definition the next start uses (VIR_DOMAIN_XML_INACTIVE); "" for a transient domain.
    # For a shut-off domain it equals `xml`; for a running one `xml` is the live state.
    persistent_xml: str = ""


def uses_golden(xml: str, pool_path: str, volume: str) -> bool:
    """Whether a domain definition uses the golden artifact `volume` of the pool at pool_path.

    By path, not by name: another pool holds volumes of the same name for the same image (issue
    #12: a node in one pool kept another pool's golden artifacts from being purged). And by the
    image's kernel: a node's definition names its kernel and initrd, but its base image only as
    the overlay's backing file, which a shut-off domain's definition does not show, so the
    artifacts of one image (one stem) are in use together.
    """
    pool = pool_path.rstrip("/")
    stem = volume.rsplit(".", 1)[0]
    return f"{pool}/{volume}" in xml or f"{pool}/{stem}.vmlinuz" in xml
