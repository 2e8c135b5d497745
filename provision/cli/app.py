"""Use cases behind the CLI verbs: load, render, plan. No printing, no exiting."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from provision.boundary import hypervisor, localhost, transport
from provision.config import inventory
from provision.core.errors import UsageError
from provision.core.model import Accel, Hypervisor, Inventory, Node
from provision.desired import golden, hostkeys, render
from provision.desired.facts import AccelChoice, choose_accel, cpu_flags
from provision.desired.plan import NodePlan, plan_node
from provision.state import paths

if TYPE_CHECKING:
    from provision.config.playbook import StepPlan


def select(inv: Inventory, names: Sequence[str] | None) -> tuple[Node, ...]:
    """The nodes named by --nodes (all when none), in inventory order."""
    if not names:
        return inv.nodes
    known = {n.name for n in inv.nodes}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"unknown node(s): {', '.join(unknown)}", hint=f"known: {', '.join(sorted(known))}"
        )
    return tuple(n for n in inv.nodes if n.name in names)


def is_local(uri: str) -> bool:
    """qemu:///system and friends: no host part, so the hypervisor is this machine."""
    scheme, sep, rest = uri.partition("://")
    return bool(sep) and scheme in ("qemu", "qemu+unix") and rest.startswith("/")


def probe_accel(hv: Hypervisor) -> AccelChoice:
    """Resolve `accel` for a hypervisor. Local: from /dev/kvm and /proc/cpuinfo here.

    Remote hypervisors are production KVM hosts: `auto` means kvm, checked at `up` time.
    """
    if not is_local(hv.uri):
        return AccelChoice(Accel.KVM if hv.accel is Accel.AUTO else hv.accel, None)
    return choose_accel(hv.accel, localhost.kvm_device(), cpu_flags(localhost.cpuinfo()))


def render_inventory(inv: Inventory, nodes: tuple[Node, ...]) -> tuple[render.Rendered, list[str]]:
    """Render the nodes with their persistent keys; returns warnings for the user."""
    keys = {
        n.name: hostkeys.load_or_create(paths.node_host_key(inv, n.name), n.name) for n in nodes
    }
    admin = None
    if any(n.admin.managed_key for n in nodes):
        admin = hostkeys.load_or_create(paths.admin_key(inv), f"provision@{inv.name}").public
    verifier = hostkeys.load_or_create(paths.verifier_key(inv), f"verifier@{inv.name}").public
    warnings: list[str] = []
    accels: dict[str, Accel] = {}
    for hv_name in dict.fromkeys(n.hypervisor for n in nodes):
        choice = probe_accel(inv.hypervisor(hv_name))
        accels[hv_name] = choice.accel
        if choice.warning:
            warnings.append(f"{hv_name}: {choice.warning}")
    ref = golden.resolve(inv.image, inv.state_dir)
    if not ref.resolved:
        warnings.append(
            f"golden image {ref.image_id[:16]} is not built yet: digests are marked unresolved "
            "(run `provision image build`)"
        )
    return render.render(inv, ref, keys, admin, accels, nodes, verifier_key=verifier), warnings


def hypervisor_uri(inv: Inventory, hv: Hypervisor) -> str:
    """The URI libvirt is opened with: remote transports check the pinned host key."""
    return transport.libvirt_uri(hv, paths.inventory_dir(inv))


def plan(rendered: render.Rendered) -> list[NodePlan]:
    """Compare each rendered node with what its hypervisor's libvirt reports."""
    plans: list[NodePlan] = []
    by_hv: dict[str, list[render.NodeRender]] = {}
    for r in rendered.nodes:
        by_hv.setdefault(r.hypervisor.name, []).append(r)
    for renders in by_hv.values():
        hv = renders[0].hypervisor
        with hypervisor.connect(hypervisor_uri(rendered.inventory, hv)) as conn:
            for r in renders:
                plans.append(plan_node(r, conn.domain(r.node.name)))
    return plans


def plan_playbooks(
    inv: Inventory, rendered: render.Rendered, plans: Sequence[NodePlan]
) -> list[StepPlan]:
    """Which playbook steps `up` would run: checks (read-only) on running, up-to-date nodes; the
    others are pending until they are up."""
    from provision.boundary import ssh
    from provision.config import playbook
    from provision.converge import lifecycle, postboot
    from provision.core.errors import ProvisionError
    from provision.desired.plan import Action
    from provision.kubernetes import k8s_bootstrap

    k8s = k8s_bootstrap.playbook(inv)
    playbooks = (*((k8s,) if k8s else ()), *playbook.load_all(inv.playbooks))
    if not playbooks:
        return []
    ready = {p.node for p in plans if p.action is Action.NOTHING and p.running}
    sessions: dict[str, ssh.Session] = {}
    try:
        for r in rendered.nodes:
            if r.node.name in ready:
                # Unreachable now: its steps show as pending.
                with contextlib.suppress(ProvisionError):
                    sessions[r.node.name] = ssh.connect(lifecycle.ssh_target(inv, r), timeout=5.0)
        nodes = tuple(r.node for r in rendered.nodes)
        run = postboot.playbook_runner(sessions)
        return playbook.plan_steps(playbooks, nodes, run, set(sessions))
    finally:
        for s in sessions.values():
            s.close()


def load(path: Path) -> Inventory:
    return inventory.load(path)


def ssh_config(inv: Inventory, nodes: tuple[Node, ...]) -> str:
    """An OpenSSH config for the nodes, pinned to our known_hosts; also saved next to it."""
    from provision.boundary import ssh
    from provision.converge import lifecycle

    rendered, _ = render_inventory(inv, nodes)
    lifecycle.write_known_hosts(inv, rendered)
    text = ssh.ssh_config({r.node.name: lifecycle.ssh_target(inv, r) for r in rendered.nodes})
    path = paths.inventory_dir(inv) / "ssh_config"
    path.write_text(text)
    return text


def ssh_exec(inv: Inventory, node: str, command: Sequence[str]) -> int:
    from provision.boundary import process

    ssh_config(inv, inv.nodes)
    cfg = paths.inventory_dir(inv) / "ssh_config"
    select(inv, [node])
    return process.exec_replace(["ssh", "-F", cfg, node, *command])


def console_exec(inv: Inventory, node: str) -> int:
    """libvirt's console stream through virsh, which handles the terminal (also remotely)."""
    from provision.boundary import process

    n = select(inv, [node])[0]
    uri = hypervisor_uri(inv, inv.hypervisor(n.hypervisor))
    return process.exec_replace(["virsh", "-c", uri, "console", node])
