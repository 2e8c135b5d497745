"""What `plan` shows and `up` starts from: each rendered node against libvirt's facts, and which
playbook steps would run. Read-only: libvirt is only read, playbook checks only look."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from provision.boundary import hypervisor, ssh
from provision.config import playbook
from provision.converge import postboot
from provision.core.errors import ProvisionError
from provision.core.model import Inventory
from provision.desired import render
from provision.desired.plan import Action, NodePlan, plan_node
from provision.kubernetes import k8s_bootstrap
from provision.state import workspace


def plan(rendered: render.Rendered) -> list[NodePlan]:
    """Compare each rendered node with what its hypervisor's libvirt reports."""
    plans: list[NodePlan] = []
    by_hv: dict[str, list[render.NodeRender]] = {}
    for r in rendered.nodes:
        by_hv.setdefault(r.hypervisor.name, []).append(r)
    for renders in by_hv.values():
        hv = renders[0].hypervisor
        with hypervisor.connect(workspace.hypervisor_uri(rendered.inventory, hv)) as conn:
            for r in renders:
                plans.append(plan_node(r, conn.domain(r.node.name)))
    return plans


def all_playbooks(inv: Inventory) -> tuple[playbook.Playbook, ...]:
    """The Kubernetes bootstrap (when the inventory has one) and the inventory's playbooks, in
    the order `up` runs them."""
    k8s = k8s_bootstrap.playbook(inv)
    return (*((k8s,) if k8s else ()), *playbook.load_all(inv.playbooks))


def plan_playbooks(
    inv: Inventory, rendered: render.Rendered, plans: Sequence[NodePlan]
) -> list[playbook.StepPlan]:
    """Which playbook steps `up` would run: checks (read-only) on running, up-to-date nodes; the
    others are pending until they are up."""
    playbooks = all_playbooks(inv)
    if not playbooks:
        return []
    ready = {p.node for p in plans if p.action is Action.NOTHING and p.running}
    sessions: dict[str, ssh.Session] = {}
    try:
        for r in rendered.nodes:
            if r.node.name in ready:
                # Unreachable now: its steps show as pending.
                with contextlib.suppress(ProvisionError):
                    sessions[r.node.name] = ssh.connect(workspace.ssh_target(inv, r), timeout=5.0)
        nodes = tuple(r.node for r in rendered.nodes)
        run = postboot.playbook_runner(sessions)
        return playbook.plan_steps(playbooks, nodes, run, set(sessions))
    finally:
        for s in sessions.values():
            s.close()
