"""What `up` does to a node, as a table: plan and facts in, the exact steps out (issue #12).

The planner is pure, so every row is plain data: no hypervisor, no SSH, no mocks. The last tests
run the executor for real against libvirt's test driver (`test:///default`) on the paths that need
neither an upload (the test driver has no volume upload) nor a booted guest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from provision.boundary import hypervisor
from provision.config import inventory
from provision.converge import fleet, node, planning, steps
from provision.converge.steps import (
    Definition,
    GoldenArtifact,
    GoldenKind,
    GoldenStep,
    Kind,
    NodeDisks,
    Options,
    Step,
)
from provision.core.errors import HypervisorError, Interrupted, ProvisionError
from provision.core.events import Event
from provision.core.model import Inventory
from provision.desired import domain, render
from provision.desired.domain import DomainFact, NodeMeta
from provision.desired.plan import Action, NodePlan
from provision.desired.policy import Change
from tests.helpers import GOLDEN, LOCAL, render_inv

NAME = "n1"
ROOT, SEED, DATA = "n1.qcow2", "n1-seed.img", "n1-data.qcow2"
DISKS = NodeDisks(root=ROOT, seed=SEED, data=None)
WITH_DATA = NodeDisks(root=ROOT, seed=SEED, data=DATA)
META = NodeMeta("local", NAME, "spec", "image", "r", "k", "i", "SHA256:x", ())
RUNNING = DomainFact(NAME, True, "<domain/>", META)
SHUT_OFF = DomainFact(NAME, False, "<domain/>", META)
DEFAULT = Options()
NO_START = Options(start=False)
REPLACE = Options(replace=True)

# The steps, spelled once.
OVERLAY = Step(Kind.CREATE_ROOT_OVERLAY, volumes=(ROOT,))
NEW_SEED = Step(Kind.REPLACE_SEED, volumes=(SEED,))
DATA_DISK = Step(Kind.CREATE_DATA_DISK, volumes=(DATA,))
DEFINE_FIRST = Step(Kind.DEFINE, definition=Definition.FIRST_BOOT)
DEFINE_BOOTED = Step(Kind.DEFINE, definition=Definition.BOOTED)
SHUTDOWN = Step(Kind.SHUTDOWN)
START = Step(Kind.START)
WAIT_SSH = Step(Kind.WAIT_SSH)
FINISH = Step(Kind.FINISH_FIRST_BOOT)


def note(text: str) -> Step:
    return Step(Kind.NOTE, text)


def redefine(action: Action, live: bool, definition: Definition = Definition.BOOTED) -> Step:
    return Step(Kind.REDEFINE, action.value, definition=definition, live_metadata=live)


def plan(action: Action, *fields: str, reason: str = "why") -> NodePlan:
    changes = tuple(Change(f, action, "old", "new") for f in fields)
    return NodePlan(NAME, "hv", action, reason, changes)


@dataclass(frozen=True)
class Case:
    behaviour: str
    plan: NodePlan
    fact: DomainFact | None
    volumes: frozenset[str]
    expected: tuple[Step, ...]
    changed: bool
    opts: Options = DEFAULT
    disks: NodeDisks = DISKS


def v(*names: str) -> frozenset[str]:
    return frozenset(names)


CASES = (
    Case(
        "an absent node gets an overlay, a seed and its first boot",
        plan(Action.CREATE),
        None,
        v(),
        (OVERLAY, NEW_SEED, DEFINE_FIRST, START, FINISH),
        True,
    ),
    Case(
        "an absent node with --no-start is defined and left shut off",
        plan(Action.CREATE),
        None,
        v(),
        (OVERLAY, NEW_SEED, DEFINE_FIRST, note("defined, left shut off (--no-start)")),
        True,
        NO_START,
    ),
    Case(
        "a shut-off node with disk and seed is started and its first boot finished",
        plan(Action.NOTHING),
        SHUT_OFF,
        v(ROOT, SEED),
        (START, note("finishing an interrupted first boot"), FINISH),
        True,
    ),
    Case(
        "a running, up-to-date node is unchanged",
        plan(Action.NOTHING),
        RUNNING,
        v(ROOT),
        (note("unchanged"),),
        False,
    ),
    Case(
        "a running node whose seed is still there has its first boot finished",
        plan(Action.NOTHING),
        RUNNING,
        v(ROOT, SEED),
        (note("finishing an interrupted first boot"), FINISH),
        True,
    ),
    Case(
        "a running node with --no-start and an unfinished first boot is left alone",
        plan(Action.NOTHING),
        RUNNING,
        v(ROOT, SEED),
        (note("left shut off (--no-start)"),),
        False,
        NO_START,
    ),
    Case(
        "an up-to-date shut-off node is started and waited for",
        plan(Action.NOTHING),
        SHUT_OFF,
        v(ROOT),
        (START, WAIT_SSH),
        True,
    ),
    Case(
        "an up-to-date shut-off node with --no-start stays shut off, unchanged",
        plan(Action.NOTHING),
        SHUT_OFF,
        v(ROOT),
        (note("left shut off (--no-start)"),),
        False,
        NO_START,
    ),
    Case(
        "a running node needing a reboot is redefined, shut down and started",
        plan(Action.REBOOT, "memory"),
        RUNNING,
        v(ROOT),
        (redefine(Action.REBOOT, live=False), SHUTDOWN, START, WAIT_SSH),
        True,
    ),
    Case(
        "a shut-off node needing a reboot is redefined and started",
        plan(Action.REBOOT, "memory"),
        SHUT_OFF,
        v(ROOT),
        (redefine(Action.REBOOT, live=False), START, WAIT_SSH),
        True,
    ),
    Case(
        # Its live metadata keeps the old fields, so `plan` still shows the reboot it owes
        # (found while writing this table: it used to get the new metadata and lose the reboot).
        "a running node needing a reboot with --no-start is redefined, the reboot still pending",
        plan(Action.REBOOT, "memory"),
        RUNNING,
        v(ROOT),
        (
            redefine(Action.REBOOT, live=False),
            note("reboot pending: the running guest keeps its old definition (--no-start)"),
        ),
        True,
        NO_START,
    ),
    Case(
        "a shut-off node needing a reboot with --no-start is redefined, left shut off",
        plan(Action.REBOOT, "memory"),
        SHUT_OFF,
        v(ROOT),
        (redefine(Action.REBOOT, live=False), note("left shut off (--no-start)")),
        True,
        NO_START,
    ),
    Case(
        "a reboot during an unfinished first boot keeps the seed in the definition",
        plan(Action.REBOOT, "memory"),
        SHUT_OFF,
        v(ROOT, SEED),
        (
            redefine(Action.REBOOT, live=False, definition=Definition.FIRST_BOOT),
            START,
            note("finishing an interrupted first boot"),
            FINISH,
        ),
        True,
    ),
    Case(
        "new labels on a running node are an in-place update with live metadata",
        plan(Action.UPDATE, "labels"),
        RUNNING,
        v(ROOT),
        (redefine(Action.UPDATE, live=True),),
        True,
    ),
    Case(
        "a recreate without --replace is refused",
        plan(Action.RECREATE, "seed", reason="needs a new root disk"),
        RUNNING,
        v(ROOT),
        (Step(Kind.REFUSE, "n1: needs a new root disk", hint="re-run with --replace"),),
        False,
    ),
    Case(
        "a recreate with --replace removes domain, root disk and seed, keeps the data disk",
        plan(Action.RECREATE, "seed", "disk"),
        RUNNING,
        v(ROOT, DATA),
        (
            Step(Kind.REMOVE_DOMAIN, "seed, disk"),
            Step(Kind.DELETE_ROOT_AND_SEED, volumes=(ROOT, SEED)),
            OVERLAY,
            NEW_SEED,
            DEFINE_FIRST,
            START,
            FINISH,
        ),
        True,
        REPLACE,
        WITH_DATA,
    ),
    Case(
        "after a recreate the deleted seed does not count as an unfinished first boot",
        plan(Action.RECREATE, "seed"),
        SHUT_OFF,
        v(ROOT, SEED),
        (
            Step(Kind.REMOVE_DOMAIN, "seed"),
            Step(Kind.DELETE_ROOT_AND_SEED, volumes=(ROOT, SEED)),
            OVERLAY,
            NEW_SEED,
            DEFINE_FIRST,
            note("defined, left shut off (--no-start)"),
        ),
        True,
        Options(replace=True, start=False),
    ),
    Case(
        "a leftover seed without a root disk is replaced on a new overlay",
        plan(Action.CREATE),
        None,
        v(SEED),
        (OVERLAY, NEW_SEED, DEFINE_FIRST, START, FINISH),
        True,
    ),
    Case(
        "a root disk kept by down is defined again without a seed, started, waited for",
        plan(Action.CREATE),
        None,
        v(ROOT),
        (DEFINE_BOOTED, START, WAIT_SSH),
        True,
    ),
    Case(
        "a root disk kept by down with --no-start is only defined",
        plan(Action.CREATE),
        None,
        v(ROOT),
        (DEFINE_BOOTED,),
        True,
        NO_START,
    ),
    Case(
        "a root disk and seed kept by down resume the unfinished first boot",
        plan(Action.CREATE),
        None,
        v(ROOT, SEED),
        (note("resuming an unfinished first boot"), NEW_SEED, DEFINE_FIRST, START, FINISH),
        True,
    ),
    Case(
        "an added data disk is created before the redefine and reboot",
        plan(Action.REBOOT, "data-disk"),
        RUNNING,
        v(ROOT),
        (DATA_DISK, redefine(Action.REBOOT, live=False), SHUTDOWN, START, WAIT_SSH),
        True,
        disks=WITH_DATA,
    ),
    Case(
        "a missing data disk is created even when nothing else changes",
        plan(Action.NOTHING),
        RUNNING,
        v(ROOT),
        (DATA_DISK,),
        True,
        disks=WITH_DATA,
    ),
    Case(
        "an absent node with a data disk gets it first",
        plan(Action.CREATE),
        None,
        v(),
        (DATA_DISK, OVERLAY, NEW_SEED, DEFINE_FIRST, START, FINISH),
        True,
        disks=WITH_DATA,
    ),
    Case(
        "a foreign domain is refused",
        plan(Action.REFUSE, reason="not ours"),
        DomainFact(NAME, True, "<domain/>", None),
        v(ROOT),
        (
            Step(
                Kind.REFUSE,
                "n1: not ours",
                hint="rename the node or remove that domain",
                error=HypervisorError,
            ),
        ),
        False,
    ),
)


@pytest.mark.parametrize("case", CASES, ids=[c.behaviour for c in CASES])
def test_the_steps_of_each_node_state(case: Case) -> None:
    got = steps.node_steps(case.plan, case.fact, case.volumes, case.opts, case.disks)
    assert got == case.expected
    assert steps.changed(got) is case.changed


def test_a_refusal_needs_no_facts() -> None:
    assert steps.refusal(plan(Action.RECREATE), REPLACE) is None
    assert steps.refusal(plan(Action.NOTHING), Options()) is None
    refused = steps.refusal(plan(Action.REFUSE, reason="not ours"), REPLACE)
    assert refused is not None and refused.error is HypervisorError
    refused = steps.refusal(plan(Action.RECREATE, reason="seed"), Options())
    assert refused is not None and refused.error is ProvisionError


def test_steps_carry_the_events_the_integration_tests_read() -> None:
    """Phase names and details in `--json` are an interface: the events around each step."""
    created = steps.node_steps(plan(Action.CREATE), None, v(), Options(), WITH_DATA)
    assert [s.envelope for s in created] == [
        ("pool", "create data disk"),
        ("pool", "create root overlay"),
        ("pool", "upload seed"),
        ("define", ""),
        ("start", ""),
        None,  # finish_first_boot opens ssh, cloud-init, first-boot-done, pool "delete seed"
    ]
    recreated = steps.node_steps(plan(Action.RECREATE, "seed"), RUNNING, v(ROOT), REPLACE, DISKS)
    assert [s.envelope for s in recreated[:2]] == [
        ("replace", "seed"),
        ("pool", "delete root disk and seed"),
    ]
    rebooted = steps.node_steps(plan(Action.REBOOT, "vcpus"), RUNNING, v(ROOT), Options(), DISKS)
    assert [s.envelope for s in rebooted] == [
        ("redefine", "reboot"),
        ("shutdown", ""),
        ("start", ""),
        None,  # wait_ssh opens its own phase, detailed with the address
    ]


def test_node_disks_name_the_volumes_domain_renders() -> None:
    n = inventory.load(LOCAL).nodes[0]
    assert steps.node_disks(n) == NodeDisks(domain.disk_volume(n), domain.seed_volume(n), None)
    with_data = dataclasses.replace(n, data_disk_gib=4)
    assert steps.node_disks(with_data).data == domain.data_volume(with_data)


# --- golden artifacts ----------------------------------------------------------------------------

BASE = GoldenArtifact("rootfs.qcow2", GOLDEN.base_volume, 300)
KERNEL = GoldenArtifact("vmlinuz", GOLDEN.kernel_volume, 20)
INITRD = GoldenArtifact("initrd.img", GOLDEN.initrd_volume, 40)
ARTIFACTS = (BASE, KERNEL, INITRD)
ALL = {BASE.volume: 300, KERNEL.volume: 20, INITRD.volume: 40}


def uses(*volumes: str) -> DomainFact:
    disks = "".join(f"<source file='/pool/{vol}'/>" for vol in volumes)
    return DomainFact("other", True, f"<domain>{disks}</domain>", META)


def test_golden_artifacts_of_the_right_size_are_left_alone() -> None:
    assert steps.golden_steps(ARTIFACTS, ALL, [uses(BASE.volume)], "/pool") == ()


def test_missing_golden_artifacts_are_uploaded_in_order() -> None:
    assert steps.golden_steps(ARTIFACTS, {KERNEL.volume: 20}, [], "/pool") == (
        GoldenStep(GoldenKind.UPLOAD, BASE),
        GoldenStep(GoldenKind.UPLOAD, INITRD),
    )


def test_a_partial_golden_volume_is_deleted_then_uploaded_again() -> None:
    partial = {**ALL, BASE.volume: 123}
    assert steps.golden_steps(
        ARTIFACTS, partial, [uses("golden-0000000000000000.vmlinuz")], "/pool"
    ) == (
        GoldenStep(GoldenKind.DELETE_PARTIAL, BASE),
        GoldenStep(GoldenKind.UPLOAD, BASE),
    )


def test_a_partial_golden_volume_in_use_is_refused_after_the_ones_before_it() -> None:
    have = {KERNEL.volume: 7, INITRD.volume: 1}
    got = steps.golden_steps(ARTIFACTS, have, [uses(KERNEL.volume)], "/pool")
    assert [(s.kind, s.artifact) for s in got] == [
        (GoldenKind.UPLOAD, BASE),
        (GoldenKind.REFUSE, KERNEL),  # and nothing after it: the initrd is not touched
    ]
    assert got[-1].detail == (
        f"golden volume {KERNEL.volume} has 7 bytes, the image 20, and domains use it: other"
    )
    assert "image build --force" in got[-1].hint


def test_a_partial_golden_volume_is_in_use_by_path_not_by_name() -> None:
    """Issue #12: a node in another pool holds volumes of the same names (same image); it does not
    use this pool's, and a shut-off node naming only the kernel uses the whole image here."""
    partial = {**ALL, BASE.volume: 123}
    elsewhere = DomainFact(
        "n2", True, f"<domain><source file='/other/{BASE.volume}'/></domain>", META
    )
    assert steps.golden_steps(ARTIFACTS, partial, [elsewhere], "/pool") == (
        GoldenStep(GoldenKind.DELETE_PARTIAL, BASE),
        GoldenStep(GoldenKind.UPLOAD, BASE),
    )
    shut_off = DomainFact("n3", False, f"<os><kernel>/pool/{KERNEL.volume}</kernel></os>", META)
    got = steps.golden_steps(ARTIFACTS, partial, [shut_off], "/pool/")
    assert [s.kind for s in got] == [GoldenKind.REFUSE]


def test_golden_artifacts_take_their_sizes_from_the_manifest() -> None:
    from tests.test_prepare_preflight import _manifest

    got = steps.golden_artifacts(_manifest(5 << 20), GOLDEN)
    assert [(a.file, a.volume, a.size) for a in got] == [
        ("rootfs.qcow2", GOLDEN.base_volume, 5 << 20),
        ("vmlinuz", GOLDEN.kernel_volume, 1 << 20),
        ("initrd.img", GOLDEN.initrd_volume, 1 << 20),
    ]


# --- the executor, for real, against libvirt's test driver -------------------------------------

TEST_URI = "test:///default"
POOL = "default-pool"  # the test driver's built-in pool


@pytest.fixture
def conn() -> Iterator[hypervisor.Connection]:
    with hypervisor.connect(TEST_URI) as c:
        yield c
        for d in c.domains():
            if d.name.startswith("steps-"):
                c.stop(d.name)
                c.undefine(d.name)
        for vol in c.volumes(POOL):
            if vol.startswith("steps-"):
                c.delete_volume(POOL, vol)


def _inventory(tmp_path: Path, name: str, **node: Any) -> Inventory:
    inv = inventory.load(LOCAL)
    hv = dataclasses.replace(inv.hypervisors[0], uri=TEST_URI, pool_name=POOL)
    n = dataclasses.replace(inv.nodes[0], name=name, **node)
    return dataclasses.replace(inv, hypervisors=(hv,), nodes=(n,), state_dir=tmp_path)


def _converge(
    conn: hypervisor.Connection, inv: Inventory, r: render.NodeRender, opts: Options
) -> tuple[bool, list[tuple[str, str, str]]]:
    events: list[Event] = []
    [p] = planning.plan(render.Rendered(inv, GOLDEN, (r,)))
    changed = node.converge_node(conn, inv, r, p, events.append, opts)
    return changed, [(e.phase, e.status, e.detail) for e in events]


def test_a_kept_root_disk_is_defined_again_and_left_shut_off(
    conn: hypervisor.Connection, tmp_path: Path
) -> None:
    inv = _inventory(tmp_path, "steps-kept", data_disk_gib=2)
    r = render_inv(inv).nodes[0]
    conn.create_volume(POOL, r.overlay_xml)  # what `down` leaves: the root disk, no seed

    changed, events = _converge(conn, inv, r, NO_START)
    assert changed
    assert events == [
        ("pool", "start", "list volumes"),
        ("pool", "done", "list volumes"),
        ("pool", "start", "create data disk"),
        ("pool", "done", "create data disk"),
        ("define", "start", ""),
        ("define", "done", ""),
    ]
    fact = conn.domain("steps-kept")
    assert fact is not None and not fact.active and fact.meta == r.meta
    assert not conn.has_disk("steps-kept", node.SEED_TARGET, live=False)  # the booted definition
    assert domain.data_volume(r.node) in conn.volumes(POOL)

    changed, events = _converge(conn, inv, r, NO_START)  # the next --no-start changes nothing
    assert not changed
    assert events[-1] == ("converge", "info", "left shut off (--no-start)")


def test_an_in_place_update_reaches_the_running_domain(
    conn: hypervisor.Connection, tmp_path: Path
) -> None:
    inv = _inventory(tmp_path, "steps-live")
    r = render_inv(inv).nodes[0]
    conn.create_volume(POOL, r.overlay_xml)
    conn.define(r.booted_xml)
    conn.start("steps-live")
    relabelled = render_inv(_inventory(tmp_path, "steps-live", labels=(("owner", "other"),)))
    r = relabelled.nodes[0]

    changed, events = _converge(conn, inv, r, Options())
    assert changed
    assert events[2:] == [("redefine", "start", "update"), ("redefine", "done", "update")]
    assert planning.plan(relabelled)[0].action is Action.NOTHING  # live metadata too

    changed, events = _converge(conn, inv, r, Options())
    assert not changed
    assert events[-1] == ("converge", "info", "unchanged")


def test_a_cancelled_run_stops_the_node_before_it_changes_anything(
    conn: hypervisor.Connection, tmp_path: Path
) -> None:
    """SIGINT works through events: after a cancel, the node's first event raises."""
    inv = _inventory(tmp_path, "steps-cancel")
    r = render_inv(inv).nodes[0]
    conn.create_volume(POOL, r.overlay_xml)
    guard = fleet.Guard(lambda e: None)
    guard.cancelled.set()
    [p] = planning.plan(render.Rendered(inv, GOLDEN, (r,)))
    with pytest.raises(Interrupted):
        node.converge_node(conn, inv, r, p, guard, Options())
    assert conn.domain("steps-cancel") is None
