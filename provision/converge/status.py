"""`status`: each node's state as libvirt reports it, its address, image and uptime (over SSH).

Read-only: nothing here changes a domain or a volume.
"""

from __future__ import annotations

from dataclasses import dataclass

from provision.boundary import hypervisor, ssh
from provision.core.errors import ProvisionError
from provision.core.model import Inventory, Node
from provision.state import workspace


@dataclass(frozen=True)
class NodeStatus:
    node: str
    hypervisor: str
    state: str  # running | shut off | absent | foreign
    address: str
    image_id: str
    uptime_s: float | None


def status(inv: Inventory, nodes: tuple[Node, ...]) -> list[NodeStatus]:
    rendered, _ = workspace.render_inventory(inv, nodes)
    out: list[NodeStatus] = []
    for r in rendered.nodes:
        host, port = r.ssh_address
        address = f"{host}:{port}"
        with hypervisor.connect(workspace.hypervisor_uri(inv, r.hypervisor)) as conn:
            fact = conn.domain(r.node.name)
        if fact is None:
            out.append(NodeStatus(r.node.name, r.hypervisor.name, "absent", address, "", None))
            continue
        if fact.meta is None:
            out.append(NodeStatus(r.node.name, r.hypervisor.name, "foreign", address, "", None))
            continue
        uptime = None
        if fact.active:
            try:
                with ssh.connect(workspace.ssh_target(inv, r), timeout=5.0) as s:
                    uptime = float(s.run(["cat", "/proc/uptime"]).stdout.split()[0])
            except ProvisionError:
                uptime = None
        out.append(
            NodeStatus(
                r.node.name,
                r.hypervisor.name,
                "running" if fact.active else "shut off",
                address,
                fact.meta.image_id[:16],
                uptime,
            )
        )
    return out
