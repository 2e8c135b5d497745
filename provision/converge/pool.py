"""Storage-pool operations one at a time: the lock and the `pool` event around each of them.

Concurrent refreshes and volume creation in one pool race inside libvirt, so every list, create,
upload and delete in a pool, by any node, thread or run on this machine, goes through pool_op.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from provision.boundary import hypervisor
from provision.core.events import Emit, phase
from provision.core.model import Inventory
from provision.state import lock, paths


@contextmanager
def pool_op(
    inv: Inventory, conn: hypervisor.Connection, pool: str, emit: Emit, node: str, what: str
) -> Iterator[None]:
    """One operation on a storage pool at a time, across threads and runs on this machine:
    concurrent refreshes and volume creation in one pool race inside libvirt."""
    with lock.exclusive(paths.pool_lock(inv, conn.uri, pool)), phase(emit, node, "pool", what):
        yield
