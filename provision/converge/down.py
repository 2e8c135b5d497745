"""`down`: stop and undefine our domains; with --purge, delete their volumes and the golden
artifacts no domain uses any more. A domain that is not ours is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from provision.boundary import hypervisor
from provision.converge.pool import pool_op
from provision.core.errors import HypervisorError
from provision.core.events import Emit, phase
from provision.core.model import Inventory, Node
from provision.desired import domain
from provision.state import workspace


@dataclass(frozen=True)
class DownResult:
    stopped: tuple[str, ...]
    purged_volumes: tuple[str, ...]
    absent: tuple[str, ...]


def down(inv: Inventory, nodes: tuple[Node, ...], purge: bool, emit: Emit) -> DownResult:
    """Stop and undefine our domains; delete their volumes only with purge."""
    stopped: list[str] = []
    purged: list[str] = []
    absent: list[str] = []
    by_hv: dict[str, list[Node]] = {}
    for n in nodes:
        by_hv.setdefault(n.hypervisor, []).append(n)
    for hv_name, hv_nodes in by_hv.items():
        hv = inv.hypervisor(hv_name)
        with hypervisor.connect(workspace.hypervisor_uri(inv, hv)) as conn:
            for n in hv_nodes:
                fact = conn.domain(n.name)
                if fact is not None:
                    if fact.meta is None or fact.meta.inventory != inv.name:
                        raise HypervisorError(
                            f"{n.name}: the domain of that name is not ours: not touching it"
                        )
                    with phase(emit, n.name, "down"):
                        conn.stop(n.name)
                        conn.undefine(n.name)
                    stopped.append(n.name)
                else:
                    absent.append(n.name)
                if purge:
                    with pool_op(inv, conn, hv.pool_name, emit, n.name, "purge volumes"):
                        purged.extend(
                            v for v in domain.volumes(n) if conn.delete_volume(hv.pool_name, v)
                        )
            if purge:
                with pool_op(inv, conn, hv.pool_name, emit, "*", "purge unused golden"):
                    purged.extend(_purge_unused_golden(conn, hv.pool_name, hv.pool_path, emit))
    return DownResult(tuple(stopped), tuple(purged), tuple(absent))


def _purge_unused_golden(
    conn: hypervisor.Connection, pool: str, pool_path: str, emit: Emit
) -> list[str]:
    """Golden artifacts no remaining domain uses (any inventory's) go too."""
    definitions = [d.xml for d in conn.domains()]
    purged = []
    for vol in conn.volumes(pool):
        if vol.startswith("golden-") and not any(
            domain.uses_golden(xml, pool_path, vol) for xml in definitions
        ):
            with phase(emit, "*", "purge", vol):
                conn.delete_volume(pool, vol)
            purged.append(vol)
    return purged
