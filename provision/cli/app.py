"""Use cases behind the interactive CLI verbs: an OpenSSH config, `ssh` and `console` into nodes.
No printing, no exiting."""

from __future__ import annotations

from collections.abc import Sequence

from provision.boundary import process, ssh
from provision.core.errors import SSHError
from provision.core.model import Inventory, Node
from provision.state import paths, workspace


def ssh_config(inv: Inventory, nodes: tuple[Node, ...]) -> str:
    """An OpenSSH config for the nodes, pinned to our known_hosts; also saved next to it."""
    rendered, _ = workspace.render_inventory(inv, nodes)
    workspace.write_known_hosts(inv, rendered)
    text = ssh.ssh_config({r.node.name: workspace.ssh_target(inv, r) for r in rendered.nodes})
    path = paths.inventory_dir(inv) / "ssh_config"
    path.write_text(text)
    return text


def ssh_exec(inv: Inventory, node: str, command: Sequence[str]) -> int:
    n = workspace.select(inv, [node])[0]
    ssh_config(inv, inv.nodes)
    cfg = paths.inventory_dir(inv) / "ssh_config"
    # One pinned login first, with the same key, user and known_hosts: a changed host key or a
    # node that never answers is then our one line and exit 1, not OpenSSH's banner or a hang
    # (OpenSSH has no timeout of its own for a port that accepts and stays silent).
    rendered, _ = workspace.render_inventory(inv, (n,))
    try:
        ssh.connect(workspace.ssh_target(inv, rendered.nodes[0])).close()
    except SSHError as exc:
        raise type(exc)(f"{node}: {exc.message}", hint=exc.hint) from exc
    return process.exec_replace(["ssh", "-F", cfg, node, *command])


def console_exec(inv: Inventory, node: str) -> int:
    """libvirt's console stream through virsh, which handles the terminal (also remotely)."""
    n = workspace.select(inv, [node])[0]
    uri = workspace.hypervisor_uri(inv, inv.hypervisor(n.hypervisor))
    return process.exec_replace(["virsh", "-c", uri, "console", node])
