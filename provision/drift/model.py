"""What a drift run reports: items, one per difference, and the ignores that silence some."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class Layer(StrEnum):
    HYPERVISOR = "hypervisor"  # libvirt's view: no guest login
    GUEST = "guest"  # the node's own view, from the verifier's snapshot


class Fix(StrEnum):
    UP = "provision up"  # re-converges in place (or reboots): nothing lost
    REPLACE = "provision up --replace"  # the node must be recreated (data disk kept)
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


@dataclass(frozen=True)
class Ignore:
    """An inventory exception: items whose key matches `pattern` (fnmatch) are not drift."""

    pattern: str
    reason: str
    expires: date | None

    def live(self, today: date) -> bool:
        return self.expires is None or self.expires >= today

    def matches(self, key: str) -> bool:
        return fnmatch.fnmatchcase(key, self.pattern)


def split_ignored(
    items: Iterable[Item], ignores: Iterable[Ignore], today: date
) -> tuple[list[Item], list[tuple[Item, Ignore]]]:
    """(drift, ignored): an expired ignore no longer applies."""
    live = [i for i in ignores if i.live(today)]
    drift: list[Item] = []
    ignored: list[tuple[Item, Ignore]] = []
    for item in items:
        hit = next((i for i in live if i.matches(item.key)), None)
        if hit is None:
            drift.append(item)
        else:
            ignored.append((item, hit))
    return drift, ignored
