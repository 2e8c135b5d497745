"""What a drift run reports: items, one per difference, and the ignores that silence some."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from provision.core.model import DriftIgnore


class Layer(StrEnum):
    HYPERVISOR = "hypervisor"  # libvirt's view: no guest login
    GUEST = "guest"  # the node's own view, from the verifier's snapshot


class Fix(StrEnum):
    UP = "provision up"  # re-converges in place (or reboots): nothing lost
    REPLACE = "provision up --replace"  # the node must be recreated (data disk kept)
    # The running guest differs from its definition: `up` only reads definitions, so the node
    # must restart from its (rendered) definition; `down` keeps every volume.
    RESTART = "provision down && provision up"
    MANUAL = "investigate"  # nothing of ours: an operator decides (an unmanaged domain)


@dataclass(frozen=True)
class Item:
    """One difference between desired and actual state.

    `key` is stable across runs (ignores and dashboards match it): for the guest a catalogue id
    (HN-SYS-05) or `kind:subject` (file:/etc/sudoers.d/extra, package:openssh-server, unit:...);
    for the hypervisor `domain.memory`, `meta.spec_hash`, `disk[vda].cache`...
    """

    node: str
    layer: Layer
    key: str
    expected: str
    actual: str
    fix: Fix
    detail: str = ""


def split_ignored(
    items: Iterable[Item], ignores: Iterable[DriftIgnore], today: date
) -> tuple[list[Item], list[tuple[Item, DriftIgnore]]]:
    """(drift, ignored): an expired ignore no longer applies."""
    live = [i for i in ignores if i.expires is None or i.expires >= today]
    drift: list[Item] = []
    ignored: list[tuple[Item, DriftIgnore]] = []
    for item in items:
        hit = next((i for i in live if fnmatch.fnmatchcase(item.key, i.pattern)), None)
        if hit is None:
            drift.append(item)
        else:
            ignored.append((item, hit))
    return drift, ignored
