"""Run drift over a fleet: every hypervisor (read-only libvirt) and every node (pinned SSH as the
verifier) at once, with bounded concurrency; one connection each. Gathering is thin, every
judgement is a pure function of drift.hypervisor, drift.guest or drift.files."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

from provision.boundary import ssh
from provision.config import playbook
from provision.converge import planning
from provision.core.errors import ProvisionError
from provision.core.events import Emit, Event
from provision.core.model import DriftIgnore, Inventory, Node
from provision.desired import render
from provision.desired.seed import AUDIT_RULES, FIRST_BOOT_DONE
from provision.drift import files, guest
from provision.drift import hypervisor as hv_drift
from provision.drift.model import Fix, Item, Layer, split_ignored
from provision.image import image, store
from provision.image.files import FileEntry, image_files
from provision.state import workspace
from provision.verify import evaluate, runner
from provision.verify.snapshot import parse_snapshot


@dataclass(frozen=True)
class Unreachable:
    """A node or hypervisor nothing could be compared on: reported, the others go on."""

    name: str
    layer: Layer
    error: str


@dataclass(frozen=True)
class Report:
    inventory: str
    nodes: tuple[str, ...]  # the inventory nodes asked for
    items: tuple[Item, ...]
    ignored: tuple[tuple[Item, DriftIgnore], ...]
    unreachable: tuple[Unreachable, ...]
    # Catalogue ids drift cannot judge from the read-only collection (`verify` runs them), and
    # ids the collection held no evidence for (WARN), per node.
    not_evaluated: dict[str, tuple[str, ...]] = field(default_factory=dict)
    inconclusive: dict[str, tuple[str, ...]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # per node or hypervisor

    @property
    def exit_code(self) -> int:
        """3 when something could not be compared (the report is partial), else 2 on drift."""
        if self.unreachable:
            return 3
        return 2 if self.items else 0


@dataclass(frozen=True)
class Desired:
    """What every node is compared with: the render, the image it should run, and the files
    the playbooks put (path -> content, per node)."""

    rendered: render.Rendered
    packages: tuple[tuple[str, str, str], ...]
    image_files: dict[str, FileEntry]
    playbook_files: dict[str, dict[str, str]]
    image_lines: frozenset[str]  # files.image_lines(image_files), made once


def desired(inv: Inventory, nodes: tuple[Node, ...]) -> Desired:
    rendered, _warnings = workspace.render_inventory(inv, nodes)
    directory = image.image_dir(store.images_dir(inv.state_dir), inv.image)
    manifest = image.load_manifest(directory)
    listed = image_files(directory)
    puts = put_files(inv, rendered.nodes)
    return Desired(rendered, manifest.packages, listed, puts, files.image_lines(listed))


def put_files(inv: Inventory, renders: tuple[render.NodeRender, ...]) -> dict[str, dict[str, str]]:
    """Per node, the files the playbook steps that target it put (a later step wins)."""
    books = planning.all_playbooks(inv)
    nodes = tuple(r.node for r in renders)
    out: dict[str, dict[str, str]] = {n.name: {} for n in nodes}
    for book in books:
        for step in book.steps:
            if isinstance(step.action, playbook.PutAction):
                for n in playbook.targets(step, nodes):
                    out[n.name][step.action.path] = step.action.content
    return out


@dataclass(frozen=True)
class Compared:
    """One node's layer 2: its drift, and the catalogue ids drift could not judge."""

    items: list[Item]
    not_evaluated: tuple[str, ...]
    inconclusive: tuple[str, ...]


def node_items(d: Desired, r: render.NodeRender, c: guest.Collected, today: date) -> Compared:
    """Everything layer 2 compares, from what one node answered (pure)."""
    name = r.node.name
    profile = runner.profile_of(r)
    snapshot = c.text("snapshot")
    evaluated = evaluate.evaluate(profile, snapshot, r.node.waivers, today, c.server_version)
    items = guest.catalogue_items(name, evaluated.results)
    parts = guest.sections(c.text("drift"))
    items += guest.package_items(name, d.packages, guest.parse_packages(parts.get("packages", "")))
    snap = parse_snapshot(snapshot)
    live_nft = snap.verbs["nft"].stdout if "nft" in snap.verbs else ""
    items += guest.firewall_items(name, live_nft, parts.get("nft-expected", ""), profile.roles)
    # What the seed wrote (compared, never shown), and the mark `up` leaves after first boot.
    seed = {**files.seed_contents(r.seed.user_data.reveal()), FIRST_BOOT_DONE: ""}
    live_audit = snap.verbs["audit-rules"].stdout if "audit-rules" in snap.verbs else ""
    items += guest.audit_items(name, live_audit, seed.get(AUDIT_RULES, ""))
    put = d.playbook_files.get(name, {})
    tree, same = files.parse_changed(c.text("tree"), d.image_lines)
    found = files.file_items(
        name, d.image_files, {**seed, **put}, tree, docker=r.node.docker, same=same
    )
    # A playbook's file comes back with `up`, which runs the step again (its check fails).
    items += [dataclasses.replace(i, fix=Fix.UP) if i.key[5:] in put else i for i in found]
    unsure = guest.inconclusive(evaluated.results)
    k8s = d.rendered.inventory.kubernetes
    if k8s is not None and "k8s-control-plane" in profile.roles:
        found_k8s = guest.kubernetes_items(name, parts.get("kubernetes", ""), k8s)
        if found_k8s is None:
            unsure = (*unsure, guest.K8S_NO_CLUSTER)
        else:
            items += found_k8s
    return Compared(items, evaluated.not_evaluated, unsure)


def drift(
    inv: Inventory,
    nodes: tuple[Node, ...],
    emit: Emit,
    today: date,
    *,
    layers: frozenset[Layer] = frozenset(Layer),
    concurrency: int = 16,
    connect: Callable[[ssh.Target], ssh.Session] = ssh.connect,
) -> Report:
    d = desired(inv, nodes)
    if Layer.GUEST in layers:
        workspace.write_known_hosts(inv, d.rendered)
    by_hv: dict[str, list[render.NodeRender]] = {}
    for r in d.rendered.nodes:
        by_hv.setdefault(r.hypervisor.name, []).append(r)

    items: list[Item] = []
    unreachable: list[Unreachable] = []
    not_evaluated: dict[str, tuple[str, ...]] = {}
    inconclusive: dict[str, tuple[str, ...]] = {}
    seconds: dict[str, float] = {}

    def hypervisor_task(renders: list[render.NodeRender]) -> None:
        hv = renders[0].hypervisor
        t0 = time.monotonic()
        emit(Event(hv.name, "hypervisor", "start"))
        try:
            found = hv_drift.gather(inv, renders, workspace.hypervisor_uri(inv, hv))
        except ProvisionError as exc:
            unreachable.append(Unreachable(hv.name, Layer.HYPERVISOR, str(exc)))
            emit(Event(hv.name, "hypervisor", "fail", time.monotonic() - t0, "unreachable"))
            return
        items.extend(found)
        seconds[hv.name] = time.monotonic() - t0
        emit(Event(hv.name, "hypervisor", "done", seconds[hv.name], f"{len(found)} items"))

    def node_task(r: render.NodeRender) -> None:
        name = r.node.name
        t0 = time.monotonic()
        emit(Event(name, "guest", "start"))
        try:
            with connect(runner.verifier_target(inv, r)) as session:
                collected = guest.collect(session)
            compared = node_items(d, r, collected, today)
        except ProvisionError as exc:  # SSHError and the helper's own failures
            unreachable.append(Unreachable(name, Layer.GUEST, str(exc)))
            emit(Event(name, "guest", "fail", time.monotonic() - t0, "unreachable"))
            return
        items.extend(compared.items)
        not_evaluated[name] = compared.not_evaluated
        inconclusive[name] = compared.inconclusive
        seconds[name] = time.monotonic() - t0
        emit(Event(name, "guest", "done", seconds[name], f"{len(compared.items)} items"))

    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="drift") as pool:
        futures = []
        if Layer.HYPERVISOR in layers:
            futures += [pool.submit(hypervisor_task, rs) for rs in by_hv.values()]
        if Layer.GUEST in layers:
            futures += [pool.submit(node_task, r) for r in d.rendered.nodes]
        for f in futures:
            f.result()  # a bug in a task is the tool's failure: it propagates (exit 1)

    ignores = {n.name: n.drift_ignores for n in nodes}
    kept: list[Item] = []
    ignored: list[tuple[Item, DriftIgnore]] = []
    by_node: dict[str, list[Item]] = {}
    for i in items:
        by_node.setdefault(i.node, []).append(i)
    for name, mine in sorted(by_node.items()):
        k, ig = split_ignored(mine, ignores.get(name, ()), today)
        kept += k
        ignored += ig
    order = {r.node.name: n for n, r in enumerate(d.rendered.nodes)}
    kept.sort(key=lambda i: (order.get(i.node, len(order)), i.node, i.layer.value, i.key))
    return Report(
        inv.name,
        tuple(n.name for n in nodes),
        tuple(kept),
        tuple(ignored),
        tuple(sorted(unreachable, key=lambda u: u.name)),
        not_evaluated,
        inconclusive,
        seconds,
    )
