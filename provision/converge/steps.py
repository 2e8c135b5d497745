"""What converging a node takes, as an ordered tuple of steps decided from facts: pure.

pyinfra's split, all the way down: `plan` names each node's action; this module turns that action,
with what libvirt says of the domain and the pool, into the exact boundary work and the order it
runs in. converge.node (one node) and converge.prepare (golden artifacts) execute the steps in a
thin loop and decide nothing between libvirt calls, so every path `up` can take is a row of a table
test here (tests/test_converge_steps.py), without a hypervisor.

Each step carries the event envelope it runs in (`Step.envelope`): the phase names and details
the `--json` output shows, which the integration tests and the fleet's interruption rely on.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from provision.core.errors import HypervisorError, ProvisionError
from provision.core.model import Node
from provision.desired import domain
from provision.desired.domain import DomainFact
from provision.desired.golden import GoldenRef
from provision.desired.plan import Action, NodePlan
from provision.image.image import Manifest


@dataclass(frozen=True)
class Options:
    replace: bool = False  # allow RECREATE: a new root disk and first boot (data disk kept)
    start: bool = True  # False: create and define, leave shut off (the next `up` boots)


class Kind(Enum):
    """What a step does to a node. The executor maps each kind to its boundary calls."""

    REFUSE = "refuse"  # raise `error` with `detail` and `hint`; the tuple ends here
    NOTE = "note"  # a `converge` info event saying why nothing (more) happens
    REMOVE_DOMAIN = "remove domain"  # power off and undefine (a recreate)
    DELETE_ROOT_AND_SEED = "delete root disk and seed"  # a recreate; the data disk stays
    CREATE_DATA_DISK = "create data disk"
    CREATE_ROOT_OVERLAY = "create root overlay"
    REPLACE_SEED = "replace seed"  # delete whatever seed is there (maybe partial), upload anew
    DEFINE = "define"  # a domain libvirt does not have yet
    REDEFINE = "redefine"  # an existing domain's new definition (and its live metadata)
    SHUTDOWN = "shutdown"  # ACPI power-off, forced after a timeout
    START = "start"
    WAIT_SSH = "wait ssh"  # a booted node: SSH answers with the pinned host key
    FINISH_FIRST_BOOT = "finish first boot"  # SSH, cloud-init, disable it, detach and drop seed


class Definition(Enum):
    """Which of the node's rendered domain definitions a DEFINE or REDEFINE gives libvirt."""

    FIRST_BOOT = "first boot"  # with the NoCloud seed disk
    BOOTED = "booted"  # without it: first boot is done and the seed deleted


# Kinds whose executor opens its own phases (wait_ssh, finish_first_boot) or none (a note, a
# refusal) have no envelope. A pool detail of None means the step's own detail.
_ENVELOPES: dict[Kind, tuple[str, str | None]] = {
    Kind.REMOVE_DOMAIN: ("replace", None),
    Kind.DELETE_ROOT_AND_SEED: ("pool", "delete root disk and seed"),
    Kind.CREATE_DATA_DISK: ("pool", "create data disk"),
    Kind.CREATE_ROOT_OVERLAY: ("pool", "create root overlay"),
    Kind.REPLACE_SEED: ("pool", "upload seed"),
    Kind.DEFINE: ("define", ""),
    Kind.REDEFINE: ("redefine", None),
    Kind.SHUTDOWN: ("shutdown", ""),
    Kind.START: ("start", ""),
}
_NO_CHANGE = frozenset({Kind.REFUSE, Kind.NOTE, Kind.WAIT_SSH})


@dataclass(frozen=True)
class Step:
    kind: Kind
    detail: str = ""  # a note's text, a refusal's message, the replaced fields, the action
    volumes: tuple[str, ...] = ()  # the pool volumes the step creates or deletes
    definition: Definition | None = None  # DEFINE and REDEFINE
    live_metadata: bool = False  # REDEFINE of a running domain: its live metadata too
    hint: str = ""  # REFUSE
    error: type[ProvisionError] = ProvisionError  # REFUSE

    @property
    def changes(self) -> bool:
        """Whether running the step changes the node (a run that only waits or notes does not)."""
        return self.kind not in _NO_CHANGE

    @property
    def envelope(self) -> tuple[str, str] | None:
        """The (phase, detail) of the events around the step; phase `pool` is a pool operation."""
        if self.kind not in _ENVELOPES:
            return None
        name, detail = _ENVELOPES[self.kind]
        return name, self.detail if detail is None else detail


def changed(steps: Sequence[Step]) -> bool:
    return any(s.changes for s in steps)


@dataclass(frozen=True)
class NodeDisks:
    """The volume names a node owns in its pool, and whether it wants a data disk."""

    root: str
    seed: str
    data: str | None  # None: no data disk wanted


def node_disks(node: Node) -> NodeDisks:
    return NodeDisks(
        root=domain.disk_volume(node),
        seed=domain.seed_volume(node),
        data=domain.data_volume(node) if node.data_disk_gib else None,
    )


def refusal(plan: NodePlan, opts: Options) -> Step | None:
    """A refusal needs no facts: it is decided before libvirt is read. `up` refuses these nodes
    for the whole fleet before it changes anything; this is the node's own guard."""
    if plan.action is Action.REFUSE:
        return Step(
            Kind.REFUSE,
            f"{plan.node}: {plan.reason}",
            hint="rename the node or remove that domain",
            error=HypervisorError,
        )
    if plan.action is Action.RECREATE and not opts.replace:
        return Step(Kind.REFUSE, f"{plan.node}: {plan.reason}", hint="re-run with --replace")
    return None


def node_steps(
    plan: NodePlan,
    fact: DomainFact | None,
    volumes: Collection[str],
    opts: Options,
    disks: NodeDisks,
) -> tuple[Step, ...]:
    """Everything `up` does to one node, in order, from its plan and the facts read just before:
    the domain (None: absent) and the names of the volumes in the node's pool."""
    refused = refusal(plan, opts)
    if refused is not None:
        return (refused,)
    have = set(volumes)
    steps: list[Step] = []
    if plan.action is Action.RECREATE:
        fields = ", ".join(c.field for c in plan.changes)
        steps += [
            Step(Kind.REMOVE_DOMAIN, fields),
            Step(Kind.DELETE_ROOT_AND_SEED, volumes=(disks.root, disks.seed)),
        ]
        # What the rest decides on is the pool after those steps.
        fact = None
        have -= {disks.root, disks.seed}
    # The seed is deleted only after a successful first boot: while it exists, first boot is
    # unfinished (an earlier run was interrupted, or --no-start) and this run finishes it.
    first_boot_done = disks.root in have and disks.seed not in have
    if disks.data is not None and disks.data not in have:
        steps.append(Step(Kind.CREATE_DATA_DISK, volumes=(disks.data,)))
    if fact is not None:
        return (*steps, *_existing(plan.action, fact.active, first_boot_done, opts, steps))
    return (*steps, *_absent(first_boot_done, disks.root in have, disks, opts))


def _existing(
    action: Action, active: bool, first_boot_done: bool, opts: Options, before: Sequence[Step]
) -> list[Step]:
    """A domain libvirt has: redefine, restart, boot or finish it as its plan and state need."""
    steps: list[Step] = []
    definition = Definition.BOOTED if first_boot_done else Definition.FIRST_BOOT
    if action in (Action.UPDATE, Action.REBOOT):
        steps.append(
            Step(
                Kind.REDEFINE,
                action.value,
                definition=definition,
                # An update in place must reach the running domain too, or `plan` repeats it.
                # A reboot must not before it happens: the live metadata is what says the
                # running guest still has its old definition.
                live_metadata=active and action is Action.UPDATE,
            )
        )
    if action is Action.REBOOT and active:
        if not opts.start:
            note = "reboot pending: the running guest keeps its old definition (--no-start)"
            return [*steps, Step(Kind.NOTE, note)]
        steps.append(Step(Kind.SHUTDOWN))  # QEMU reads the new definition only at start
        active = False
    if active and first_boot_done:
        if not changed([*before, *steps]):
            steps.append(Step(Kind.NOTE, "unchanged"))
        return steps
    if not opts.start:
        # Also said of a running node whose first boot is unfinished: --no-start leaves it be.
        steps.append(Step(Kind.NOTE, "left shut off (--no-start)"))
        return steps
    if not active:
        steps.append(Step(Kind.START))
    if first_boot_done:
        steps.append(Step(Kind.WAIT_SSH))
    else:
        steps += [
            Step(Kind.NOTE, "finishing an interrupted first boot"),
            Step(Kind.FINISH_FIRST_BOOT),
        ]
    return steps


def _absent(first_boot_done: bool, root_kept: bool, disks: NodeDisks, opts: Options) -> list[Step]:
    """No domain: define one, on the kept root disk or on a new overlay with a fresh seed."""
    if first_boot_done:
        # `down` kept this node's disk: define it again without a seed.
        define = Step(Kind.DEFINE, definition=Definition.BOOTED)
        return [define, Step(Kind.START), Step(Kind.WAIT_SSH)] if opts.start else [define]
    steps: list[Step] = []
    if root_kept:
        # Keep the disk (volumes go only with --purge) and boot it with a fresh seed.
        steps.append(Step(Kind.NOTE, "resuming an unfinished first boot"))
    else:
        steps.append(Step(Kind.CREATE_ROOT_OVERLAY, volumes=(disks.root,)))
    steps += [
        Step(Kind.REPLACE_SEED, volumes=(disks.seed,)),
        Step(Kind.DEFINE, definition=Definition.FIRST_BOOT),
    ]
    if not opts.start:
        return [*steps, Step(Kind.NOTE, "defined, left shut off (--no-start)")]
    return [*steps, Step(Kind.START), Step(Kind.FINISH_FIRST_BOOT)]


# --- golden artifacts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GoldenArtifact:
    file: str  # in the image directory
    volume: str  # in the pool, named by the image id: shared by every node of that image
    size: int  # bytes, from the manifest


def golden_artifacts(manifest: Manifest, ref: GoldenRef) -> tuple[GoldenArtifact, ...]:
    """Base image, kernel and initrd, in upload order."""
    sizes = {a.name: a.size for a in manifest.artifacts}
    return tuple(
        GoldenArtifact(file, volume, sizes[file])
        for file, volume in (
            ("rootfs.qcow2", ref.base_volume),
            ("vmlinuz", ref.kernel_volume),
            ("initrd.img", ref.initrd_volume),
        )
    )


class GoldenKind(Enum):
    DELETE_PARTIAL = "delete partial"  # an interrupted upload's volume: ours to replace
    UPLOAD = "upload"
    REFUSE = "refuse"  # a wrong-sized volume that domains use: never deleted under them


@dataclass(frozen=True)
class GoldenStep:
    kind: GoldenKind
    artifact: GoldenArtifact
    detail: str = ""  # REFUSE's message
    hint: str = ""


def golden_steps(
    artifacts: Sequence[GoldenArtifact],
    have: Mapping[str, int],
    domains: Sequence[DomainFact],
    pool_path: str,
) -> tuple[GoldenStep, ...]:
    """What puts the golden artifacts into a pool holding `have` (volume -> bytes), artifact by
    artifact: nothing for a volume of the right size, else an upload, after deleting a partial
    volume. A refusal ends the steps where it stands, so the artifacts before it are still
    uploaded: they are right whatever becomes of the refused one."""
    steps: list[GoldenStep] = []
    for a in artifacts:
        if have.get(a.volume) == a.size:
            continue
        if a.volume in have:
            users = [d.name for d in domains if domain.uses_golden(d.xml, pool_path, a.volume)]
            if users:
                message = (
                    f"golden volume {a.volume} has {have[a.volume]} bytes, the image {a.size}, "
                    f"and domains use it: {', '.join(users)}"
                )
                hint = "rebuild those nodes, or rebuild the image with `image build --force`"
                steps.append(GoldenStep(GoldenKind.REFUSE, a, message, hint))
                return tuple(steps)
            steps.append(GoldenStep(GoldenKind.DELETE_PARTIAL, a))
        steps.append(GoldenStep(GoldenKind.UPLOAD, a))
    return tuple(steps)
