"""Drift layer 1: the projection of domain XML, one node's items, unmanaged domains (#14).

Rendered XML against what libvirt hands back: the test driver (real libvirt parsing and
formatting, in process) and a persistent definition recorded from the real QEMU driver.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from provision.boundary.hypervisor import connect
from provision.config import inventory
from provision.core.errors import HypervisorError
from provision.core.model import Inventory
from provision.desired import domain, projection, render
from provision.desired.domain import DomainFact
from provision.drift import hypervisor as drift
from provision.drift.model import Fix, Layer
from tests.helpers import GOLDEN, LOCAL, load_text, render_inv

TEST_URI = "test:///default"
DATA = Path(__file__).resolve().parent / "data" / "drift"
POOL = "provision-local"

# The production shape on the test driver: bridged NIC, KVM (host-passthrough CPU), a data disk.
BRIDGED = """
name: drift-bridged
state_dir: /var/lib/provision-drift-test
image: {name: bookworm-node, suite: bookworm, kernel_flavour: cloud-amd64}
hypervisors:
  hv1: {uri: "test:///default", pool_name: drift-pool, pool_path: /srv/drift-pool, accel: kvm}
networks:
  prod: {mode: bridge, bridge: br-prod, cidr: 10.40.0.0/24, gateway: 10.40.0.1, dns: [10.40.0.2]}
defaults:
  hypervisor: hv1
  network: prod
  vcpus: 2
  memory_mib: 2048
  disk_gib: 16
  data_disk_gib: 4
  admin: {name: ops, managed_key: true}
nodes:
  drift-b1: {address: 10.40.0.11/24}
  drift-b2: {address: 10.40.0.12/24}
"""

# The node of tests/data/drift/domain-defined.xml: recorded from qemu:///system (see its README).
RECORDED = """
name: drift-hv
state_dir: /var/lib/provision-drift-hv/state
image: {name: bookworm-node, suite: bookworm, kernel_flavour: cloud-amd64}
hypervisors:
  local:
    uri: qemu:///system
    pool_name: provision-drift-hv
    pool_path: /var/lib/provision-drift-hv/pool
    accel: qemu
networks:
  loopback: {mode: user}
defaults:
  hypervisor: local
  network: loopback
  vcpus: 1
  memory_mib: 1536
  disk_gib: 8
  admin: {name: ops, managed_key: true}
nodes:
  pv-drift-h1: {ssh_port: 10091}
"""


def _local(name: str) -> Inventory:
    inv = inventory.load(LOCAL)
    hv = dataclasses.replace(inv.hypervisors[0], uri=TEST_URI)
    node = dataclasses.replace(inv.nodes[0], name=name)
    return dataclasses.replace(inv, hypervisors=(hv,), nodes=(node,))


def _without_qemu_args(r: render.NodeRender) -> render.NodeRender:
    """The test driver accepts <qemu:commandline> but drops it (that namespace belongs to the
    QEMU driver), so its dump lacks qemu.args. Strip only that element from what we compare
    against; the recorded real definition (test_recorded_...) keeps and compares it."""
    root = ET.fromstring(r.booted_xml)
    for el in root.findall(f"{{{domain.QEMU_NS}}}commandline"):
        root.remove(el)
    return dataclasses.replace(r, booted_xml=ET.tostring(root, encoding="unicode"))


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    c = libvirt.open(TEST_URI)
    yield c
    for dom in c.listAllDomains():
        if dom.name().startswith("drift-"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    c.close()


@pytest.fixture(scope="module")
def bridged(tmp_path_factory: pytest.TempPathFactory) -> Inventory:
    return load_text(tmp_path_factory.mktemp("bridged"), BRIDGED)


def _bare(xml: str) -> str:
    """The XML without our metadata element: a domain someone else defined."""
    root = ET.fromstring(xml)
    for el in root.findall("metadata"):
        root.remove(el)
    return ET.tostring(root, encoding="unicode")


def _fact(_c: libvirt.virConnect, name: str) -> DomainFact | None:
    """What drift reads: over a read-only connection, like the gatherer."""
    with connect(TEST_URI, read_only=True) as ro:
        return ro.domain(name)


def _define(c: libvirt.virConnect, xml: str) -> libvirt.virDomain:
    return c.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)


# --- the projection, pure -------------------------------------------------------------------------


def test_projection_holds_the_fields_we_render() -> None:
    r = render_inv(inventory.load(LOCAL)).nodes[0]
    p = projection.project(r.booted_xml)
    assert p["memory"] == p["currentMemory"] == "1536 MiB"
    assert (p["vcpus"], p["type"], p["os.machine"]) == ("1", "qemu", "q35")
    assert p["disk[vda]"] == f"{POOL}/node1.qcow2"
    assert (p["disk[vda].cache"], p["disk[vda].io"], p["disk[vda].discard"]) == (
        "none",
        "native",
        "unmap",
    )
    assert p["os.cmdline"].startswith("root=/dev/vda ")
    assert "hostfwd=tcp:127.0.0.1:10022-:22" in p["qemu.args"]
    assert "disk[vdb]" not in p  # booted: the seed is gone
    assert projection.project(r.domain_xml)["disk[vdb].readonly"] == "yes"
    # What libvirt adds and we never set is not projected at all.
    assert not [k for k in p if "address" in k or "alias" in k or "controller" in k]


@pytest.mark.parametrize(
    ("machine", "family"),
    [
        ("q35", "q35"),
        ("pc-q35-7.2", "q35"),
        ("pc-q35-8.1", "q35"),
        ("pc", "pc"),
        ("pc-i440fx-7.2", "pc"),
        ("pc-1.2", "pc"),
        ("microvm", "microvm"),
    ],
)
def test_machine_compares_by_family_not_version(machine: str, family: str) -> None:
    assert projection.machine_family(machine) == family


@pytest.mark.parametrize(
    ("element", "shown"),
    [
        ("<memory unit='MiB'>1536</memory>", "1536 MiB"),
        ("<memory unit='KiB'>1572864</memory>", "1536 MiB"),
        ("<memory>1572864</memory>", "1536 MiB"),  # no unit: KiB
        ("<memory unit='GiB'>2</memory>", "2048 MiB"),
        ("<memory unit='b'>1610612736</memory>", "1536 MiB"),
        ("<memory unit='KiB'>1572865</memory>", "1572865 KiB"),
    ],
)
def test_memory_is_normalized_across_units(element: str, shown: str) -> None:
    assert projection.project(f"<domain type='kvm'>{element}</domain>")["memory"] == shown


def test_an_extra_device_is_drift_but_an_unset_attribute_is_not() -> None:
    want = {"disk[vda]": "p/v", "disk[vda].cache": "none"}
    have = {"disk[vda]": "p/v", "disk[vda].cache": "none", "disk[vda].rotation_rate": "1"}
    assert projection.differences(want, have) == []
    have |= {"disk[vdc]": "p/x", "disk[vdc].cache": "none", "nic[0]": "bridge br0"}
    assert projection.differences(want, have) == ["disk[vdc]", "nic[0]"]
    # A missing disk is one difference, not one per field.
    assert projection.differences(want, {}) == ["disk[vda]"]


# --- against libvirt's test driver ----------------------------------------------------------------


def test_a_freshly_defined_domain_has_no_drift(conn: libvirt.virConnect) -> None:
    r = render_inv(_local("drift-fresh")).nodes[0]
    _define(conn, r.booted_xml)
    assert drift.domain_items(_without_qemu_args(r), _fact(conn, "drift-fresh")) == []


def test_the_production_shape_has_no_drift_defined_or_running(
    conn: libvirt.virConnect, bridged: Inventory
) -> None:
    """Bridged NIC, host-passthrough CPU, data disk: no qemu namespace, nothing stripped."""
    r = render_inv(bridged).nodes[0]
    dom = _define(conn, r.booted_xml)
    assert drift.domain_items(r, _fact(conn, r.node.name)) == []
    dom.create()
    fact = _fact(conn, r.node.name)
    assert fact is not None and fact.active and fact.persistent_xml
    assert drift.domain_items(r, fact) == []


def test_a_changed_max_memory_in_the_definition_is_the_memory_item(
    conn: libvirt.virConnect,
) -> None:
    """`virsh setmaxmem --config`: one item, on the definition, fixed by `up` (a reboot)."""
    r = _without_qemu_args(render_inv(_local("drift-mem")).nodes[0])
    dom = _define(conn, r.booted_xml)
    dom.setMemoryFlags(
        2048 * 1024, libvirt.VIR_DOMAIN_MEM_MAXIMUM | libvirt.VIR_DOMAIN_AFFECT_CONFIG
    )
    [item] = drift.domain_items(r, _fact(conn, "drift-mem"))
    assert (item.key, item.expected, item.actual, item.fix) == (
        "memory",
        "1536 MiB",
        "2048 MiB",
        Fix.UP,
    )
    assert item.layer is Layer.HYPERVISOR and "memory -> reboot" in item.detail


def test_a_redefined_memory_is_the_memory_item(conn: libvirt.virConnect) -> None:
    r = _without_qemu_args(render_inv(_local("drift-redef")).nodes[0])
    root = ET.fromstring(r.booted_xml)
    mem = root.find("memory")
    assert mem is not None
    mem.text, mem.attrib["unit"] = str(3 * 1024 * 1024), "KiB"
    _define(conn, ET.tostring(root, encoding="unicode"))
    items = drift.domain_items(r, _fact(conn, "drift-redef"))
    assert [(i.key, i.actual) for i in items] == [("memory", "3072 MiB")]


def test_a_change_to_the_running_domain_only_is_a_live_item(
    conn: libvirt.virConnect, bridged: Inventory
) -> None:
    r = render_inv(bridged).nodes[0]
    dom = _define(conn, r.booted_xml)
    dom.create()
    dom.setMemoryFlags(1024 * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)  # balloon down, live only
    items = drift.domain_items(r, _fact(conn, r.node.name))
    assert [(i.key, i.expected, i.actual) for i in items] == [
        ("live.currentMemory", "2048 MiB", "1024 MiB")
    ]


def test_an_extra_disk_is_drift(conn: libvirt.virConnect) -> None:
    r = _without_qemu_args(render_inv(_local("drift-extra")).nodes[0])
    root = ET.fromstring(r.booted_xml)
    devices = root.find("devices")
    assert devices is not None
    extra = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(extra, "source", file="/srv/elsewhere/scratch.qcow2")
    ET.SubElement(extra, "target", dev="vdc", bus="virtio")
    _define(conn, ET.tostring(root, encoding="unicode"))
    items = drift.domain_items(r, _fact(conn, "drift-extra"))
    assert [(i.key, i.expected, i.actual) for i in items] == [
        ("disk[vdc]", "absent", "/srv/elsewhere/scratch.qcow2")
    ]


def test_a_seed_still_attached_after_first_boot_is_drift(conn: libvirt.virConnect) -> None:
    r = _without_qemu_args(render_inv(_local("drift-seed")).nodes[0])
    first_boot = _without_qemu_args(dataclasses.replace(r, booted_xml=r.domain_xml))
    _define(conn, first_boot.booted_xml)
    [item] = drift.domain_items(r, _fact(conn, "drift-seed"))
    assert (item.key, item.actual, item.fix) == ("disk[vdb]", f"{POOL}/drift-seed-seed.img", Fix.UP)


def test_a_missing_data_disk_is_one_item_of_the_data_disk_field(
    conn: libvirt.virConnect, bridged: Inventory
) -> None:
    r = render_inv(bridged).nodes[0]
    root = ET.fromstring(r.booted_xml)
    devices = root.find("devices")
    assert devices is not None
    for disk in devices.findall("disk"):
        if disk.find("target[@dev='vdc']") is not None:
            devices.remove(disk)
    _define(conn, ET.tostring(root, encoding="unicode"))
    [item] = drift.domain_items(r, _fact(conn, r.node.name))
    assert (item.key, item.actual, item.fix) == ("disk[vdc]", "absent", Fix.UP)
    assert "data-disk" in item.detail


def test_a_changed_spec_hash_in_the_metadata_is_drift(conn: libvirt.virConnect) -> None:
    r = _without_qemu_args(render_inv(_local("drift-hash")).nodes[0])
    _define(conn, r.booted_xml)
    stale = dataclasses.replace(r.meta, spec_hash="0" * 64)
    with connect(TEST_URI) as c:
        c.set_metadata("drift-hash", domain.metadata_xml(stale))
    [item] = drift.domain_items(r, _fact(conn, "drift-hash"))
    assert (item.key, item.expected, item.actual) == (
        "meta.spec_hash",
        r.meta.spec_hash[:12],
        "000000000000",
    )
    assert item.fix is Fix.UP  # no policy field moved: a metadata refresh


def test_a_changed_seed_or_image_needs_a_replace(conn: libvirt.virConnect) -> None:
    """What the update policy says needs a recreate is `up --replace`, never plain `up`."""
    inv = _local("drift-seedchg")
    old = _without_qemu_args(render_inv(inv).nodes[0])
    _define(conn, old.booted_xml)
    node = dataclasses.replace(inv.nodes[0], docker="rootless")  # seed content
    golden = dataclasses.replace(GOLDEN, rootfs_sha256="d" * 64)
    new = render_inv(dataclasses.replace(inv, nodes=(node,)), golden).nodes[0]
    items = {
        i.key: i for i in drift.domain_items(_without_qemu_args(new), _fact(conn, old.node.name))
    }
    assert set(items) == {"meta.spec_hash", "meta.rootfs_sha256"}
    assert (
        items["meta.spec_hash"].fix is Fix.REPLACE
        and "seed (recreate)" in items["meta.spec_hash"].detail
    )
    assert items["meta.rootfs_sha256"].fix is Fix.REPLACE


def test_absent_foreign_and_other_inventory_domains(conn: libvirt.virConnect) -> None:
    r = render_inv(_local("drift-who")).nodes[0]
    [absent] = drift.domain_items(r, None)
    assert (absent.key, absent.actual, absent.fix) == ("domain", "absent", Fix.UP)

    _define(conn, _bare(r.booted_xml))
    [foreign] = drift.domain_items(r, _fact(conn, "drift-who"))
    assert (foreign.key, foreign.fix) == ("meta", Fix.MANUAL)

    r2 = render_inv(_local("drift-who2")).nodes[0]
    other = render_inv(dataclasses.replace(_local("drift-who2"), name="elsewhere")).nodes[0]
    _define(conn, other.booted_xml)
    [theirs] = drift.domain_items(r2, _fact(conn, "drift-who2"))
    assert (theirs.key, theirs.actual, theirs.fix) == ("meta.inventory", "elsewhere", Fix.MANUAL)


# --- domains the inventory does not name ----------------------------------------------------------


def _on(xml: str, name: str, disk: ET.Element) -> str:
    """The rendered XML under another name with `disk` as its only disk."""
    root = ET.fromstring(xml)
    name_el = root.find("name")
    devices = root.find("devices")
    assert name_el is not None and devices is not None
    name_el.text = name
    for old in devices.findall("disk"):
        devices.remove(old)
    devices.insert(0, disk)
    return ET.tostring(root, encoding="unicode")


def _disk(**source: str) -> ET.Element:
    disk = ET.Element("disk", type="volume" if "pool" in source else "file", device="disk")
    ET.SubElement(disk, "source", source)
    ET.SubElement(disk, "target", dev="vda", bus="virtio")
    return disk


def test_domains_on_our_pools_without_metadata_are_unmanaged(conn: libvirt.virConnect) -> None:
    r = render_inv(_local("drift-ours")).nodes[0]
    pool_path = r.hypervisor.pool_path
    _define(conn, r.booted_xml)
    _define(conn, _bare(_on(r.booted_xml, "drift-stray", _disk(pool=POOL, volume="x.qcow2"))))
    _define(conn, _bare(_on(r.booted_xml, "drift-file", _disk(file=f"{pool_path}/y.qcow2"))))
    # Elsewhere: another pool, another directory (a prefix of ours is not ours), and the test
    # driver's own `test` domain (/guest/diskimage1).
    _define(conn, _bare(_on(r.booted_xml, "drift-away", _disk(pool="other", volume="z"))))
    _define(conn, _bare(_on(r.booted_xml, "drift-near", _disk(file=f"{pool_path}-old/z"))))
    # Another inventory's node on our pool: its own inventory judges it.
    theirs = render_inv(dataclasses.replace(_local("drift-theirs"), name="elsewhere"))
    _define(conn, theirs.nodes[0].booted_xml)
    with connect(TEST_URI, read_only=True) as c:
        facts = c.domains()
    items = drift.unmanaged_items(
        "local", facts, {POOL: pool_path}, {"drift-ours"}, inventory="local"
    )
    assert [(i.node, i.key, i.fix) for i in items] == [
        ("drift-file", "domain.unmanaged", Fix.MANUAL),
        ("drift-stray", "domain.unmanaged", Fix.MANUAL),
    ]
    assert "never touched" in items[0].detail


def test_a_domain_of_this_inventory_it_no_longer_names_is_an_orphan(
    conn: libvirt.virConnect,
) -> None:
    gone = render_inv(_local("drift-gone")).nodes[0]
    _define(conn, gone.booted_xml)
    with connect(TEST_URI, read_only=True) as c:
        facts = c.domains()
    [item] = drift.unmanaged_items(
        "local", facts, {POOL: gone.hypervisor.pool_path}, {"node1"}, inventory="local"
    )
    assert (item.node, item.key, item.actual, item.fix) == (
        "drift-gone",
        "domain.orphan",
        "defined",
        Fix.MANUAL,
    )
    assert "`provision down` cannot reach it" in item.detail
    # Named by the inventory: judged by domain_items, not reported twice.
    assert drift.unmanaged_items("local", facts, {}, {"drift-gone"}, inventory="local") == []


def test_gather_reads_one_hypervisor_read_only(
    conn: libvirt.virConnect, bridged: Inventory
) -> None:
    rendered = render_inv(bridged)
    b1, _b2 = rendered.nodes
    _define(conn, b1.booted_xml)
    pool = b1.hypervisor.pool_name
    _define(conn, _bare(_on(b1.booted_xml, "drift-squatter", _disk(pool=pool, volume="s"))))
    items = drift.gather(bridged, rendered.nodes, TEST_URI)
    assert [(i.node, i.key) for i in items] == [
        ("drift-b2", "domain"),
        ("drift-squatter", "domain.unmanaged"),
    ]


def test_gather_of_an_unreachable_hypervisor_raises_the_hypervisor_error(
    bridged: Inventory,
) -> None:
    with pytest.raises(HypervisorError, match="cannot connect"):
        drift.gather(bridged, render_inv(bridged).nodes, "qemu+unix:///system?socket=/nonexistent")


# --- the boundary ---------------------------------------------------------------------------------


def test_a_read_only_connection_cannot_change_anything(conn: libvirt.virConnect) -> None:
    r = render_inv(_local("drift-ro")).nodes[0]
    with connect(TEST_URI, read_only=True) as c:
        assert c.read_only
        assert c.domains()  # reading works
        with pytest.raises(HypervisorError, match="read only"):
            c.define(r.booted_xml)
        assert c.domain("drift-ro") is None
    _define(conn, r.booted_xml)
    with connect(TEST_URI, read_only=True) as c, pytest.raises(HypervisorError, match="read only"):
        c.set_metadata("drift-ro", domain.metadata_xml(r.meta))
    with connect(TEST_URI) as c:
        assert not c.read_only


def test_facts_carry_the_persistent_definition(conn: libvirt.virConnect) -> None:
    r = render_inv(_local("drift-persist")).nodes[0]
    dom = _define(conn, r.booted_xml)
    dom.create()
    dom.setMemoryFlags(1024 * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    fact = _fact(conn, "drift-persist")
    assert fact is not None and fact.active
    assert projection.project(fact.persistent_xml)["currentMemory"] == "1536 MiB"
    assert projection.project(fact.xml)["currentMemory"] == "1024 MiB"


def test_pool_paths_lists_every_pool_with_its_directory() -> None:
    with connect(TEST_URI, read_only=True) as c:
        assert c.pool_paths()["default-pool"] == "/default-pool"  # the test driver's own pool


# --- a definition recorded from the real QEMU driver ----------------------------------------------


def test_recorded_qemu_definition_has_no_drift(tmp_path: Path) -> None:
    """qemu:///system rewrote what it was given (tests/data/drift/README.md): pc-q35-7.2, KiB,
    controllers, root ports, addresses, emulator, input devices, seclabel. None of it is drift."""
    r = render_inv(load_text(tmp_path, RECORDED)).nodes[0]
    recorded = (DATA / "domain-defined.xml").read_text()
    assert "pc-q35-" in recorded and "unit='KiB'" in recorded  # really rewritten
    # The recording is about libvirt's rewriting of the definition; its metadata is the render's
    # of the day it was taken (any template change moves the spec hash): today's is used.
    fact = DomainFact(r.node.name, False, recorded, r.meta, recorded)
    assert drift.domain_items(r, fact) == []
    assert (
        projection.project(recorded)["qemu.args"] == projection.project(r.booted_xml)["qemu.args"]
    )


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("cache='none' io='native'", "cache='writeback' io='native'", "disk[vda].cache"),
        ("machine='pc-q35-7.2'", "machine='pc-i440fx-7.2'", "os.machine"),
        ("<memory unit='KiB'>1572864<", "<memory unit='KiB'>2097152<", "memory"),
        ("hostfwd=tcp:127.0.0.1:10091-:22", "hostfwd=tcp:0.0.0.0:10091-:22", "qemu.args"),
        ("<on_crash>destroy<", "<on_crash>restart<", "on_crash"),
        (
            "<backend model='random'>/dev/urandom<",
            "<backend model='random'>/dev/random<",
            "rng.backend",
        ),
    ],
)
def test_recorded_qemu_definition_mutated_is_drift(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    r = render_inv(load_text(tmp_path, RECORDED)).nodes[0]
    recorded = (DATA / "domain-defined.xml").read_text()
    assert old in recorded
    mutated = recorded.replace(old, new)
    fact = DomainFact(r.node.name, False, mutated, r.meta, mutated)
    assert [i.key for i in drift.domain_items(r, fact)] == [key]


def test_recorded_running_domain_live_equals_its_definition() -> None:
    """What the running domain adds (index, backingStore, aliases, seclabel, cpu features,
    check='full') is outside the projection: live and persistent project alike."""
    live = (DATA / "domain-running.xml").read_text()
    persistent = (DATA / "domain-running-persistent.xml").read_text()
    assert "<seclabel" in live and "<alias" in live and "<seclabel" not in persistent
    assert projection.project(live) == projection.project(persistent)
    assert "disk[vdb]" not in projection.project(live)  # recorded after first boot: seed detached
    # libvirt adds <cpu mode='custom'> to a TCG domain: projected, never compared (not rendered).
    assert projection.project(live)["cpu.mode"] == "custom"
