"""`plan` against libvirt's test driver: absent, identical, changed and foreign domains."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import libvirt
import pytest

from provision.boundary.hypervisor import connect
from provision.config import inventory
from provision.converge import planning
from provision.core.model import DriftIgnore, Hypervisor, Inventory, Waiver
from provision.desired import domain, policy, render
from provision.desired.plan import Action
from tests.helpers import LOCAL, render_inv

TEST_URI = "test:///default"  # one shared in-process hypervisor per test process


def _inventory(name: str) -> Inventory:
    """The local inventory pointed at the test driver, with a node name unique to the test."""
    inv = inventory.load(LOCAL)
    hv = dataclasses.replace(inv.hypervisors[0], uri=TEST_URI)
    node = dataclasses.replace(inv.nodes[0], name=name)
    return dataclasses.replace(inv, hypervisors=(hv,), nodes=(node,))


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    c = libvirt.open(TEST_URI)
    yield c
    for dom in c.listAllDomains():
        if dom.name().startswith("plan-"):
            dom.undefine()
    c.close()


def test_absent_domain_is_created(conn: libvirt.virConnect) -> None:
    plans = planning.plan(render_inv(_inventory("plan-absent")))
    assert [(p.node, p.action) for p in plans] == [("plan-absent", Action.CREATE)]


def test_identical_domain_needs_nothing(conn: libvirt.virConnect) -> None:
    rendered = render_inv(_inventory("plan-same"))
    conn.defineXMLFlags(rendered.nodes[0].domain_xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    [p] = planning.plan(rendered)
    assert p.action is Action.NOTHING, p


@pytest.mark.parametrize(
    ("change", "action", "fields"),
    [
        ({"labels": (("owner", "someone-else"),)}, Action.UPDATE, {"labels"}),
        ({"memory_mib": 2048}, Action.REBOOT, {"memory"}),
        ({"vcpus": 2}, Action.REBOOT, {"vcpus"}),
        ({"cmdline_extra": ("quiet",)}, Action.REBOOT, {"cmdline"}),
        ({"data_disk_gib": 4}, Action.REBOOT, {"data-disk"}),
        ({"ssh_port": 10999}, Action.REBOOT, {"ssh-forward"}),
        ({"disk_gib": 20}, Action.RECREATE, {"disk"}),
        ({"sysctl": (("vm.swappiness", "5"),)}, Action.RECREATE, {"seed"}),
        ({"workload_user": "svc"}, Action.RECREATE, {"seed"}),
        ({"memory_mib": 2048, "labels": (("a", "b"),)}, Action.REBOOT, {"memory", "labels"}),
        ({"memory_mib": 2048, "disk_gib": 20}, Action.RECREATE, {"memory", "disk"}),
    ],
)
def test_each_change_takes_what_the_policy_says(
    conn: libvirt.virConnect, change: dict[str, object], action: Action, fields: set[str]
) -> None:
    inv = _inventory("plan-changed")
    conn.defineXMLFlags(render_inv(inv).nodes[0].domain_xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    changed = dataclasses.replace(inv, nodes=(dataclasses.replace(inv.nodes[0], **change),))
    [p] = planning.plan(render_inv(changed))
    assert p.action is action, p
    assert {c.field for c in p.changes} == fields
    if "memory" in fields:
        assert "memory: 1536 -> 2048 (reboot)" in [str(c) for c in p.changes]


def test_a_definition_changed_outside_provision_is_redefined(conn: libvirt.virConnect) -> None:
    """`virsh setmaxmem --config` or an edit by hand: the metadata still matches, the definition
    does not. `up` redefines it from the render (and restarts it), as `drift` says it will."""
    rendered = render_inv(_inventory("plan-outside"))
    r = rendered.nodes[0]
    edited = r.booted_xml.replace('<memory unit="MiB">1536<', '<memory unit="MiB">3072<')
    assert edited != r.booted_xml
    conn.defineXMLFlags(edited, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    [p] = planning.plan(rendered)
    assert p.action is Action.REBOOT, p
    assert [str(c) for c in p.changes] == ["memory: 3072 MiB -> 1536 MiB (reboot)"]
    assert "changed outside provision" in p.reason


def test_a_drift_ignore_changes_nothing(conn: libvirt.virConnect) -> None:
    inv = _inventory("plan-ignore")
    conn.defineXMLFlags(render_inv(inv).nodes[0].domain_xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    ignore = DriftIgnore("file:/etc/motd", "the site's own banner, kept by hand", None)
    node = dataclasses.replace(inv.nodes[0], drift_ignores=(ignore,))
    [p] = planning.plan(render_inv(dataclasses.replace(inv, nodes=(node,))))
    assert p.action is Action.NOTHING


def test_a_waiver_changes_nothing(conn: libvirt.virConnect) -> None:
    inv = _inventory("plan-waiver")
    conn.defineXMLFlags(render_inv(inv).nodes[0].domain_xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    waived = dataclasses.replace(inv.nodes[0], waivers=(Waiver("HN-SYS-01", "testing", None),))
    [p] = planning.plan(render_inv(dataclasses.replace(inv, nodes=(waived,))))
    assert p.action is Action.NOTHING


def test_every_node_setting_has_a_policy() -> None:
    """A node setting outside the seed must be one some policy field watches (else a change to it
    would go unnoticed); everything else is the seed, which needs a recreate."""
    watched = {
        "hypervisor",
        "ssh_port",
        "vcpus",
        "memory_mib",
        "disk_gib",
        "data_disk_gib",
        "cmdline_extra",
        "labels",
        "waivers",
        "drift_ignores",
    }
    assert watched == render.NOT_IN_SEED
    assert {f.name for f in policy.POLICY} >= {"seed", "memory", "vcpus", "disk", "data-disk"}


def test_foreign_domain_is_refused_and_untouched(conn: libvirt.virConnect) -> None:
    foreign = (
        "<domain type='test'><name>plan-foreign</name><memory>131072</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    conn.defineXML(foreign)
    before = conn.lookupByName("plan-foreign").XMLDesc(0)
    [p] = planning.plan(render_inv(_inventory("plan-foreign")))
    assert p.action is Action.REFUSE and "not ours" in p.reason
    assert conn.lookupByName("plan-foreign").XMLDesc(0) == before


def test_domain_of_another_inventory_is_refused(conn: libvirt.virConnect) -> None:
    other = _inventory("plan-other")
    conn.defineXMLFlags(
        render_inv(dataclasses.replace(other, name="elsewhere")).nodes[0].domain_xml,
        libvirt.VIR_DOMAIN_DEFINE_VALIDATE,
    )
    [p] = planning.plan(render_inv(other))
    assert p.action is Action.REFUSE and "elsewhere" in p.reason


def test_unreachable_hypervisor_is_one_clear_error() -> None:
    from provision.core.errors import HypervisorError

    with pytest.raises(HypervisorError) as exc, connect("qemu+unix:///system?socket=/nonexistent"):
        pass
    assert "cannot connect to qemu+unix:///system" in str(exc.value)


def test_hypervisor_record_is_frozen() -> None:
    hv = inventory.load(LOCAL).hypervisors[0]
    assert isinstance(hv, Hypervisor)
    with pytest.raises(dataclasses.FrozenInstanceError):
        hv.uri = "x"  # type: ignore[misc]


def test_a_changed_node_is_redefined_in_place(conn: libvirt.virConnect) -> None:
    """Redefining needs the domain's UUID (rendered XML has none); after it, plan is clean."""
    inv = _inventory("plan-redefine")
    with connect(TEST_URI) as c:
        c.define(render_inv(inv).nodes[0].booted_xml)
        uuid = conn.lookupByName("plan-redefine").UUIDString()
        bigger = dataclasses.replace(inv, nodes=(dataclasses.replace(inv.nodes[0], vcpus=2),))
        rendered = render_inv(bigger)
        assert planning.plan(rendered)[0].action is Action.REBOOT
        c.define(rendered.nodes[0].booted_xml)
    assert conn.lookupByName("plan-redefine").UUIDString() == uuid
    assert planning.plan(rendered)[0].action is Action.NOTHING


def test_a_running_node_gets_its_new_metadata_live(conn: libvirt.virConnect) -> None:
    """An in-place update must reach the running domain's metadata too, or plan repeats it."""
    inv = _inventory("plan-live")
    with connect(TEST_URI) as c:
        c.define(render_inv(inv).nodes[0].booted_xml)
        c.start("plan-live")
        relabelled = dataclasses.replace(inv.nodes[0], labels=(("owner", "other"),))
        rendered = render_inv(dataclasses.replace(inv, nodes=(relabelled,)))
        assert planning.plan(rendered)[0].action is Action.UPDATE
        c.define(rendered.nodes[0].booted_xml)
        c.set_metadata("plan-live", domain.metadata_xml(rendered.nodes[0].meta))
        assert planning.plan(rendered)[0].action is Action.NOTHING
        c.stop("plan-live")
