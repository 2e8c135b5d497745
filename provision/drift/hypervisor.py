"""Drift, layer 1: what libvirt reports of each domain against what `render` produces.

Pure comparisons on a normalized projection of the domain XML, plus one thin gatherer at the end.
The projection holds only the fields our renderer sets (provision.desired.domain.domain_xml),
each in one canonical form: libvirt adds addresses, aliases, controllers, default attributes and
seclabels, rewrites MiB to KiB and q35 to pc-q35-7.2, and a raw comparison of dumps would report
all of that as drift. Keys the rendered XML lacks are never compared, except device presence: a
disk or NIC that the rendered XML lacks is drift (libvirt never adds either on its own).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence

from provision.boundary import hypervisor
from provision.core.model import Inventory
from provision.desired import domain, policy, render
from provision.desired.domain import DomainFact
from provision.desired.projection import ABSENT, device, differences, project
from provision.drift.model import Fix, Item, Layer
from provision.state import workspace

LIVE = "live."  # prefix of keys read from the running domain rather than its definition

# --- the fix: what the update policy says `up` does about a field --------------------------------

_FIELD = {
    "memory": "memory",
    "currentMemory": "memory",
    "maxMemory": "memory",
    "maxMemory.slots": "memory",
    "vcpus": "vcpus",
    "type": "accel",
    "os.kernel": "kernel",
    "os.initrd": "kernel",
    "os.cmdline": "cmdline",
    "qemu.args": "ssh-forward",
}
_META_FIELD = {
    "image_id": "rootfs",  # a new image is a new root filesystem
    "rootfs_sha256": "rootfs",
    "kernel_sha256": "kernel",
    "initrd_sha256": "kernel",
}
DATA_TARGET = "vdc"  # domain.domain_xml's data disk


def policy_field(key: str) -> policy.Field:
    """The update-policy field a projection key belongs to; "domain" (the rest of the definition)
    for everything without a field of its own."""
    key = key.removeprefix(LIVE)
    if device(key) == f"disk[{DATA_TARGET}]":
        return policy.BY_NAME["data-disk"]
    return policy.BY_NAME[_FIELD.get(key, "domain")]


def fix_for(action: policy.Action) -> Fix:
    return Fix.REPLACE if action is policy.Action.RECREATE else Fix.UP


def _item(node: str, key: str, expected: str, actual: str, field: policy.Field) -> Item:
    detail = f"update policy: {field.name} -> {field.action.value} ({field.what})"
    return Item(node, Layer.HYPERVISOR, key, expected, actual, fix_for(field.action), detail)


# --- one node's domain ---------------------------------------------------------------------------


def _short(value: str) -> str:
    return value[:12] if re.fullmatch(r"[0-9a-f]{40,}", value) else value


def _meta_items(r: render.NodeRender, meta: domain.NodeMeta) -> list[Item]:
    node = r.node.name
    items = []
    if meta.spec_hash != r.meta.spec_hash:
        changes = policy.compare(meta.fields, r.meta.fields)
        worst = policy.worst(changes)
        shown = ", ".join(f"{c.field} ({c.action.value})" for c in changes) or "metadata only"
        items.append(
            Item(
                node,
                Layer.HYPERVISOR,
                "meta.spec_hash",
                _short(r.meta.spec_hash),
                _short(meta.spec_hash),
                fix_for(worst),
                f"the inventory changed since the last `up`: {shown}",
            )
        )
    for attr, field in _META_FIELD.items():
        want, have = getattr(r.meta, attr), getattr(meta, attr)
        if want != have:
            items.append(
                _item(node, f"meta.{attr}", _short(want), _short(have), policy.BY_NAME[field])
            )
    return items


def domain_items(r: render.NodeRender, fact: DomainFact | None) -> list[Item]:
    """Every difference between one rendered node and what libvirt has under its name."""
    node = r.node.name
    if fact is None:
        detail = "no domain of this name: `provision up` defines and boots it"
        return [Item(node, Layer.HYPERVISOR, "domain", "defined", ABSENT, Fix.UP, detail)]
    if fact.meta is None:
        detail = "a domain of this name that provision did not define: never touched"
        return [
            Item(node, Layer.HYPERVISOR, "meta", "provision metadata", ABSENT, Fix.MANUAL, detail)
        ]
    if fact.meta.inventory != r.meta.inventory:
        detail = "the domain belongs to another inventory: never touched"
        return [
            Item(
                node,
                Layer.HYPERVISOR,
                "meta.inventory",
                r.meta.inventory,
                fact.meta.inventory,
                Fix.MANUAL,
                detail,
            )
        ]
    items = _meta_items(r, fact.meta)
    want = project(r.booted_xml)  # after first boot the seed is gone: a seed still there is drift
    # Callers that predate persistent_xml hand over one XML: the definition, for a shut-off domain.
    definition = project(fact.persistent_xml or fact.xml)
    for key in differences(want, definition):
        items.append(
            _item(node, key, want.get(key, ABSENT), definition.get(key, ABSENT), policy_field(key))
        )
    if fact.active and fact.persistent_xml:
        live = project(fact.xml)
        for key in differences(want, live):
            # A change made to both (attach --live --config) is reported once, by the definition.
            if live.get(key) != definition.get(key):
                detail = "the running guest differs from its definition: restart it from there"
                items.append(
                    Item(
                        node,
                        Layer.HYPERVISOR,
                        LIVE + key,
                        want.get(key, ABSENT),
                        live.get(key, ABSENT),
                        Fix.RESTART,
                        detail,
                    )
                )
    return items


# --- domains the inventory does not name ----------------------------------------------------------


def _on_pools(xml: str, pools: Mapping[str, str]) -> bool:
    root = ET.fromstring(xml)
    dirs = [p.rstrip("/") + "/" for p in pools.values() if p]
    for src in root.iterfind("devices/disk/source"):
        if src.get("pool") in pools:
            return True
        path = src.get("file") or src.get("dev") or ""
        if path and any(path.startswith(d) for d in dirs):
            return True
    return False


def unmanaged_items(
    hv_name: str,
    facts: Iterable[DomainFact],
    pools: Mapping[str, str],
    ours: set[str],
    *,
    inventory: str,
) -> list[Item]:
    """Domains on this hypervisor that no node of the inventory accounts for.

    `pools`: our pools on it (name -> target path); `ours`: the inventory's node names placed
    on it (those are judged by domain_items). A domain using our pools without provision
    metadata is unmanaged; one carrying this inventory's metadata but no longer in it is an
    orphan. Both are reported, never touched. Another inventory's domains are its own business.
    """
    items = []
    for fact in sorted(facts, key=lambda f: f.name):
        if fact.name in ours:
            continue
        if fact.meta is None:
            if _on_pools(fact.persistent_xml or fact.xml, pools):
                detail = (
                    f"uses provision's pools on {hv_name} ({', '.join(sorted(pools))}) without "
                    "provision metadata: never touched"
                )
                items.append(
                    Item(
                        fact.name,
                        Layer.HYPERVISOR,
                        "domain.unmanaged",
                        ABSENT,
                        "running" if fact.active else "defined",
                        Fix.MANUAL,
                        detail,
                    )
                )
        elif fact.meta.inventory == inventory:
            detail = (
                f"carries inventory {inventory}'s metadata (node {fact.meta.node}) but the "
                f"inventory has no such node on {hv_name}: `provision down` cannot reach it, a "
                "human decides"
            )
            items.append(
                Item(
                    fact.name,
                    Layer.HYPERVISOR,
                    "domain.orphan",
                    ABSENT,
                    "running" if fact.active else "defined",
                    Fix.MANUAL,
                    detail,
                )
            )
    return items


# --- the gatherer --------------------------------------------------------------------------------


def gather(
    inv: Inventory, renders: Sequence[render.NodeRender], uri: str | None = None
) -> list[Item]:
    """Layer 1 for the nodes of ONE hypervisor, over one read-only connection.

    Raises HypervisorError when the hypervisor cannot be reached (the caller reports it).
    """
    if not renders:
        return []
    hv = renders[0].hypervisor
    if any(r.hypervisor.name != hv.name for r in renders):
        raise ValueError("gather reads one hypervisor: group the renders by hypervisor first")
    with hypervisor.connect(uri or workspace.hypervisor_uri(inv, hv), read_only=True) as conn:
        facts = conn.domains()  # one listing: the nodes and the unmanaged scan alike
        paths = conn.pool_paths()
    by_name = {f.name: f for f in facts}
    items: list[Item] = []
    for r in renders:
        items += domain_items(r, by_name.get(r.node.name))
    pools = {hv.pool_name: paths.get(hv.pool_name) or hv.pool_path}
    # Every node the inventory places here, not only those asked about: none of them is an orphan.
    placed = {n.name for n in inv.nodes if n.hypervisor == hv.name}
    return items + unmanaged_items(hv.name, facts, pools, placed, inventory=inv.name)
