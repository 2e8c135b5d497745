"""The update policy: for every field of a node's desired state, what a change to it takes.

One table, read by `render` (which fingerprints each field into the domain metadata), by `plan`
(which compares the fingerprints libvirt hands back) and by `provision plan --policy`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    """What `up` does to a node, in increasing order of disruption (REFUSE aside)."""

    CREATE = "create"
    NOTHING = "nothing"
    UPDATE = "update"  # redefine and refresh metadata; the running guest is not touched
    REBOOT = "reboot"  # redefine, then shut down and start: QEMU reads the definition at start
    RECREATE = "recreate"  # new root disk and first boot (needs --replace); data disk kept
    REFUSE = "refuse"


SEVERITY = (Action.NOTHING, Action.UPDATE, Action.REBOOT, Action.RECREATE)


@dataclass(frozen=True)
class Field:
    name: str
    action: Action
    what: str
    digest: bool = False  # long or structured values are kept as a short sha256


POLICY: tuple[Field, ...] = (
    Field("labels", Action.UPDATE, "owner/env labels in the domain metadata", digest=True),
    Field("memory", Action.REBOOT, "memory_mib"),
    Field("vcpus", Action.REBOOT, "vcpus"),
    Field("accel", Action.REBOOT, "kvm or qemu (TCG)"),
    Field("kernel", Action.REBOOT, "golden kernel and initrd digests", digest=True),
    Field("cmdline", Action.REBOOT, "kernel command line (hardening set + cmdline_extra)", True),
    Field("ssh-forward", Action.REBOOT, "loopback SSH port forward (user-mode network)"),
    Field("data-disk", Action.REBOOT, "data disk size: created if missing, never resized"),
    Field("domain", Action.REBOOT, "the rest of the domain definition: disk driver, devices", True),
    Field("rootfs", Action.RECREATE, "golden rootfs digest: the root overlay's backing file", True),
    Field("disk", Action.RECREATE, "root disk size (disk_gib)"),
    Field(
        "seed",
        Action.RECREATE,
        "anything in the cloud-init seed, which runs on first boot only: users, keys, "
        "hardening files, Docker mode, network config",
        digest=True,
    ),
)

BY_NAME = {f.name: f for f in POLICY}


def fingerprints(values: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Every policy field's value as stored in the metadata: short, never a secret."""
    missing = set(BY_NAME) - set(values)
    if missing:
        raise ValueError(f"no value for policy fields {sorted(missing)}")
    return tuple(
        (
            f.name,
            hashlib.sha256(values[f.name].encode()).hexdigest()[:16]
            if f.digest
            else values[f.name],
        )
        for f in POLICY
    )


@dataclass(frozen=True)
class Change:
    field: str
    action: Action
    old: str
    new: str

    def __str__(self) -> str:
        return f"{self.field}: {self.old} -> {self.new} ({self.action.value})"


def compare(
    live: tuple[tuple[str, str], ...], desired: tuple[tuple[str, str], ...]
) -> tuple[Change, ...]:
    """The fields that differ. A field the live domain lacks (older metadata) counts as changed."""
    have = dict(live)
    return tuple(
        Change(name, BY_NAME[name].action, have.get(name, "unknown"), value)
        for name, value in desired
        if have.get(name) != value
    )


def worst(changes: tuple[Change, ...]) -> Action:
    """The most disruptive action any change needs; UPDATE when only unlisted state moved."""
    if not changes:
        return Action.UPDATE
    return max((c.action for c in changes), key=SEVERITY.index)
