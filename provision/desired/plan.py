"""What `up` would do per node, from the rendered desired state and libvirt's facts: pure.

The action per node is the most disruptive one its changed fields need, by the update policy
(provision.policy): labels update in place, sizes and kernel need a reboot, the seed and the root
disk need a recreate (`up --replace`), which keeps the data disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from provision.desired.domain import DomainFact
from provision.desired.policy import Action, Change, compare, worst
from provision.desired.projection import ABSENT, device, differences, project
from provision.desired.render import NodeRender

__all__ = ["Action", "NodePlan", "plan_node"]


@dataclass(frozen=True)
class NodePlan:
    node: str
    hypervisor: str
    action: Action
    reason: str
    changes: tuple[Change, ...] = ()
    running: bool | None = None  # None: no domain

    @property
    def needs_replace(self) -> bool:
        return self.action is Action.RECREATE


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
            running=fact.active,
        )
    if fact.meta.inventory != desired.meta.inventory:
        return NodePlan(
            node,
            hv,
            Action.REFUSE,
            f"the domain belongs to inventory {fact.meta.inventory!r}",
            running=fact.active,
        )
    if fact.meta.spec_hash == desired.meta.spec_hash:
        outside = changed_outside(desired, fact)
        if outside:
            state = "redefine, then restart" if fact.active else "redefine (shut off)"
            reason = f"its definition was changed outside provision: {state}"
            return NodePlan(node, hv, Action.REBOOT, reason, outside, running=fact.active)
        reason = "up to date" if fact.active else "up to date, shut off: up starts it"
        return NodePlan(node, hv, Action.NOTHING, reason, running=fact.active)
    changes = _shown(compare(fact.meta.fields, desired.meta.fields))
    action = worst(changes)
    if not changes:
        reason = "only provision's own metadata changed"
    elif action is Action.RECREATE:
        reason = "needs a new root disk and first boot: `up --replace` (the data disk is kept)"
    elif action is Action.REBOOT:
        reason = "redefine, then restart" if fact.active else "redefine (shut off)"
    else:
        reason = "redefine in place, no restart"
    return NodePlan(node, hv, action, reason, changes, running=fact.active)


def _shown(changes: tuple[Change, ...]) -> tuple[Change, ...]:
    """`domain` digests the whole definition, so it moves with memory, vcpus and the rest: name it
    only when nothing more specific explains the change."""
    specific = [c for c in changes if c.field != "domain"]
    if any(c.action is Action.REBOOT for c in specific):
        return tuple(specific)
    return changes


SEED_DISK = "disk[vdb]"  # domain.domain_xml's NoCloud seed: first boot decides about it
QEMU_ARGS = "qemu.args"


def changed_outside(desired: NodeRender, fact: DomainFact) -> tuple[Change, ...]:
    """Fields we set whose value in the stored definition is not the rendered one, though the
    metadata says nothing changed: `virsh setmaxmem --config`, `virsh edit`, a redefine by hand.
    The seed disk is left to first boot (attached until it completes, then detached). A
    definition without QEMU arguments at all is no evidence: libvirt drivers other than QEMU's
    (the test driver among them) do not keep them; `drift` still reports it."""
    if not fact.persistent_xml:
        return ()
    want, have = project(desired.booted_xml), project(fact.persistent_xml)
    return tuple(
        Change(key, Action.REBOOT, have.get(key, ABSENT), want.get(key, ABSENT))
        for key in differences(want, have)
        if device(key) != SEED_DISK and not (key == QEMU_ARGS and key not in have)
    )
