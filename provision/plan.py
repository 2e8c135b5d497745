"""What `up` would do per node, from the rendered desired state and libvirt's facts: pure."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from enum import StrEnum

from provision.domain import NodeMeta
from provision.hypervisor import DomainFact
from provision.render import NodeRender


class Action(StrEnum):
    CREATE = "create"
    NOTHING = "nothing"
    UPDATE = "update"
    REFUSE = "refuse"


@dataclass(frozen=True)
class NodePlan:
    node: str
    hypervisor: str
    action: Action
    reason: str
    changes: tuple[str, ...] = ()


_META_FIELDS = (
    ("image_id", "golden image"),
    ("rootfs_sha256", "base image digest"),
    ("kernel_sha256", "kernel digest"),
    ("initrd_sha256", "initrd digest"),
    ("host_key_fingerprint", "host key"),
    ("labels", "labels"),
)


def _live_sizes(xml: str) -> dict[str, str]:
    root = ET.fromstring(xml)
    out = {}
    for tag in ("memory", "vcpu"):
        el = root.find(tag)
        if el is not None and el.text:
            out[tag] = el.text
    mem = root.find("memory")
    if mem is not None and mem.text and mem.get("unit", "KiB") == "KiB":
        out["memory"] = str(int(mem.text) // 1024)  # libvirt reports KiB; we render MiB
    return out


def plan_node(desired: NodeRender, fact: DomainFact | None) -> NodePlan:
    node, hv = desired.node.name, desired.hypervisor.name
    if fact is None:
        return NodePlan(node, hv, Action.CREATE, "no such domain")
    if fact.meta is None:
        return NodePlan(
            node,
            hv,
            Action.REFUSE,
            "a domain of this name exists without provision metadata: not ours, never touched",
        )
    if fact.meta.inventory != desired.meta.inventory:
        return NodePlan(
            node,
            hv,
            Action.REFUSE,
            f"the domain belongs to inventory {fact.meta.inventory!r}",
        )
    if fact.meta.spec_hash == desired.meta.spec_hash:
        return NodePlan(node, hv, Action.NOTHING, "up to date")
    return NodePlan(node, hv, Action.UPDATE, "spec changed", _changes(desired, fact.meta, fact.xml))


def _changes(desired: NodeRender, live: NodeMeta, live_xml: str) -> tuple[str, ...]:
    changes = [
        f"{label}: {getattr(live, field)} -> {getattr(desired.meta, field)}"
        for field, label in _META_FIELDS
        if getattr(live, field) != getattr(desired.meta, field)
    ]
    sizes = _live_sizes(live_xml)
    want = {"memory": str(desired.node.memory_mib), "vcpu": str(desired.node.vcpus)}
    for key, value in want.items():
        if key in sizes and sizes[key] != value:
            changes.append(f"{key}: {sizes[key]} -> {value}")
    return tuple(changes) or ("node settings or seed",)
