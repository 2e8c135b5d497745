"""Where an inventory's local state lives under its state directory.

libvirt is the source of truth for nodes; this directory only holds what libvirt must not
(private keys) and what is shared between inventories (built images).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from provision.core.model import Inventory


def inventory_dir(inv: Inventory) -> Path:
    return inv.state_dir / "inventories" / inv.name


def node_host_key(inv: Inventory, node: str) -> Path:
    return inventory_dir(inv) / "nodes" / node / "ssh_host_ed25519_key"


def admin_key(inv: Inventory) -> Path:
    """The managed operator key (admin.managed_key: true)."""
    return inventory_dir(inv) / "admin_ed25519"


def verifier_key(inv: Inventory) -> Path:
    """The verification suite's key: its public half is the node account `verifier`'s login."""
    return inventory_dir(inv) / "verifier_ed25519"


def known_hosts(inv: Inventory) -> Path:
    return inventory_dir(inv) / "known_hosts"


def run_lock(inv: Inventory, hypervisor: str) -> Path:
    """One run at a time per inventory and hypervisor."""
    return inventory_dir(inv) / "locks" / f"{hypervisor}.lock"


def pool_lock(inv: Inventory, uri: str, pool: str) -> Path:
    """Pool operations are serialised per hypervisor URI and pool, across inventories that share
    the state directory."""
    key = hashlib.sha256(f"{uri}\0{pool}".encode()).hexdigest()[:16]
    return inv.state_dir / "locks" / f"pool-{pool}-{key}.lock"
