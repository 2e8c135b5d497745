"""`up`, `down` and `status`: converge nodes on their hypervisors, reporting events per phase.

Decisions come from pure code (plan, facts); this module sequences the boundary calls
(hypervisor, ssh, image) and emits an Event at the start and end of every phase.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from provision.boundary import hypervisor, localhost, ssh, transport
from provision.core.errors import HypervisorError, ImageError, ProvisionError
from provision.core.events import Emit, Event, phase
from provision.core.model import Accel, Inventory, Node
from provision.desired import domain, golden, render, seediso
from provision.desired.facts import choose_accel, cpu_flags
from provision.desired.plan import Action, NodePlan
from provision.image import image, store
from provision.state import lock, paths, workspace

SSH_DEADLINE_S = 600.0  # TCG boots take ~35 s here; a loaded CI machine can take several times that
CLOUD_INIT_TIMEOUT_S = 900.0
SEED_TARGET = "vdb"


@dataclass(frozen=True)
class Options:
    replace: bool = False  # allow RECREATE: a new root disk and first boot (data disk kept)
    start: bool = True  # False: create and define, leave shut off (the next `up` boots)


def ensure_image(inv: Inventory, emit: Emit) -> image.Manifest:
    images = store.images_dir(inv.state_dir)
    with phase(emit, "*", "image"):
        manifest, built = image.build_image(
            inv.image, images, progress=lambda s: emit(Event("*", "image", "info", detail=s))
        )
        emit(Event("*", "image", "info", detail="built" if built else "cached"))
    with phase(emit, "*", "image-verify"):
        problems = image.verify_image(image.image_dir(images, inv.image))
    if problems:
        raise ImageError(
            "golden image does not match its manifest: " + "; ".join(problems),
            hint="rebuild it with `provision image build --force`",
        )
    return manifest


@contextmanager
def pool_op(
    inv: Inventory, conn: hypervisor.Connection, pool: str, emit: Emit, node: str, what: str
) -> Iterator[None]:
    """One operation on a storage pool at a time, across threads and runs on this machine:
    concurrent refreshes and volume creation in one pool race inside libvirt."""
    with lock.exclusive(paths.pool_lock(inv, conn.uri, pool)), phase(emit, node, "pool", what):
        yield


def prepare_hypervisor(
    conn: hypervisor.Connection,
    inv: Inventory,
    renders: list[render.NodeRender],
    manifest: image.Manifest,
    ref: golden.GoldenRef,
    emit: Emit,
) -> None:
    """Once per hypervisor and run: checks, the pool, and the golden artifacts in it."""
    hv = renders[0].hypervisor
    with phase(emit, "*", "preflight", hv.name):
        preflight(conn, renders, emit)
    with pool_op(inv, conn, hv.pool_name, emit, "*", f"ensure {hv.pool_name} on {hv.name}"):
        conn.ensure_pool(hv.pool_name, domain.pool_xml(hv))
        preflight_disk(conn, renders, manifest, ref)
        upload_golden(conn, inv, manifest, ref, hv.pool_name, emit)


def preflight(
    conn: hypervisor.Connection, renders: list[render.NodeRender], emit: Emit | None = None
) -> None:
    hv = renders[0].hypervisor
    if hv.require_nvme and not transport.is_local(hv.uri) and emit is not None:
        # The pool's block device is only visible on the hypervisor itself; libvirt does not
        # report it. Say so rather than pretend the check ran.
        emit(
            Event("*", "preflight", "warn", detail=f"{hv.name}: require_nvme not checked remotely")
        )
    if hv.accel is Accel.KVM and transport.is_local(hv.uri):
        choice = choose_accel(Accel.KVM, localhost.kvm_device(), cpu_flags(localhost.cpuinfo()))
        if choice.warning:
            raise HypervisorError(
                f"{hv.name}: accel kvm requested but {choice.warning}",
                hint="set accel: auto (or qemu) to use TCG emulation",
            )
    if transport.is_local(hv.uri):
        pool = Path(hv.pool_path)
        blocked = localhost.qemu_cannot_traverse(pool)
        if blocked is not None:
            raise HypervisorError(
                f"{hv.name}: QEMU (libvirt-qemu) cannot traverse {blocked} on the pool path {pool}",
                hint=f"chmod o+x {blocked}, or put the pool elsewhere",
            )
        if hv.require_nvme:
            nvme, devices = localhost.is_nvme(pool)
            if not nvme:
                raise HypervisorError(
                    f"{hv.name}: require_nvme is set but {pool} is on {devices or 'unknown'}, "
                    "not NVMe",
                    hint="move pool_path to an NVMe filesystem or set require_nvme: false",
                )
    need = sum(r.node.memory_mib for r in renders if conn.domain(r.node.name) is None)
    free = conn.free_memory_mib()
    if need > free:
        raise HypervisorError(
            f"{hv.name}: not enough free memory: new nodes need {need} MiB, {free} MiB free",
            hint="lower memory_mib, or move nodes to another hypervisor",
        )


NODE_DISK_HEADROOM = 1 << 30  # an overlay starts tiny; first boot writes a few hundred MiB


def preflight_disk(
    conn: hypervisor.Connection,
    renders: list[render.NodeRender],
    manifest: image.Manifest,
    ref: golden.GoldenRef,
) -> None:
    """Enough free space in the pool for the artifacts still to upload and the new overlays."""
    hv = renders[0].hypervisor
    have = conn.volumes(hv.pool_name)
    sizes = {a.name: a.size for a in manifest.artifacts}
    need = sum(
        sizes[artifact]
        for artifact, volume in (
            ("rootfs.qcow2", ref.base_volume),
            ("vmlinuz", ref.kernel_volume),
            ("initrd.img", ref.initrd_volume),
        )
        if have.get(volume) != sizes[artifact]
    )
    need += NODE_DISK_HEADROOM * sum(1 for r in renders if domain.disk_volume(r.node) not in have)
    free = conn.pool_free_bytes(hv.pool_name)
    if need > free:
        raise HypervisorError(
            f"{hv.name}: pool {hv.pool_name} has {free >> 20} MiB free, this run needs "
            f"{need >> 20} MiB",
            hint="free space under pool_path, or move nodes to another hypervisor",
        )


def upload_golden(
    conn: hypervisor.Connection,
    inv: Inventory,
    manifest: image.Manifest,
    ref: golden.GoldenRef,
    pool: str,
    emit: Emit,
) -> None:
    """Base image, kernel and initrd go into the pool once per digest, never per node."""
    directory = image.image_dir(store.images_dir(inv.state_dir), inv.image)
    have = conn.volumes(pool)
    for artifact, volume in (
        ("rootfs.qcow2", ref.base_volume),
        ("vmlinuz", ref.kernel_volume),
        ("initrd.img", ref.initrd_volume),
    ):
        size = next(a.size for a in manifest.artifacts if a.name == artifact)
        if have.get(volume) == size:
            continue
        if volume in have:
            # A partial upload from an interrupted run: ours to replace, unless a domain uses it.
            users = [d.name for d in conn.domains() if volume in d.xml]
            if users:
                raise HypervisorError(
                    f"golden volume {volume} has {have[volume]} bytes, the image {size}, "
                    f"and domains use it: {', '.join(users)}",
                    hint="rebuild those nodes, or rebuild the image with `image build --force`",
                )
            conn.delete_volume(pool, volume)
        with phase(emit, "*", "upload", volume):
            conn.upload(
                pool,
                volume,
                directory / artifact,
                domain.raw_volume_xml(volume, 0, "0644"),
                progress=_upload_progress(emit, volume),
            )


def _upload_progress(emit: Emit, volume: str) -> Callable[[int, int], None]:
    """An info event per 10% sent; emitting is also where a cancelled run stops the stream."""
    shown = [-1]

    def report(sent: int, size: int) -> None:
        tenth = sent * 10 // max(size, 1)
        if tenth != shown[0]:
            shown[0] = tenth
            emit(Event("*", "upload", "info", detail=f"{volume} {sent >> 20}/{size >> 20} MiB"))

    return report


SHUTDOWN_TIMEOUT_S = 180.0  # an ACPI power-off under TCG takes 10-30 s here


def converge_node(
    conn: hypervisor.Connection,
    inv: Inventory,
    r: render.NodeRender,
    p: NodePlan,
    emit: Emit,
    opts: Options,
) -> bool:
    """Apply the node's plan; True if anything changed."""
    name, pool = r.node.name, r.hypervisor.pool_name
    if p.action is Action.REFUSE:
        raise HypervisorError(f"{name}: {p.reason}", hint="rename the node or remove that domain")
    fact = conn.domain(name)
    changed = False
    if p.action is Action.RECREATE:
        if not opts.replace:
            raise ProvisionError(f"{name}: {p.reason}", hint="re-run with --replace")
        with phase(emit, name, "replace", ", ".join(c.field for c in p.changes)):
            conn.stop(name)
            conn.undefine(name)
        with pool_op(inv, conn, pool, emit, name, "delete root disk and seed"):
            conn.delete_volume(pool, domain.disk_volume(r.node))
            conn.delete_volume(pool, domain.seed_volume(r.node))
        fact, changed = None, True

    with pool_op(inv, conn, pool, emit, name, "list volumes"):
        vols = conn.volumes(pool)
    disk, seed_vol = domain.disk_volume(r.node), domain.seed_volume(r.node)
    # The seed is deleted only after a successful first boot: while it exists, first boot is
    # unfinished (an earlier run was interrupted, or --no-start) and this run finishes it.
    first_boot_done = disk in vols and seed_vol not in vols
    if r.node.data_disk_gib and domain.data_volume(r.node) not in vols:
        with pool_op(inv, conn, pool, emit, name, "create data disk"):
            conn.create_volume(pool, domain.data_volume_xml(r.node))
        changed = True
    definition = r.booted_xml if first_boot_done else r.domain_xml

    if fact is not None:
        active = fact.active
        if p.action in (Action.UPDATE, Action.REBOOT):
            with phase(emit, name, "redefine", p.action.value):
                conn.define(definition)
                if active:
                    conn.set_metadata(name, domain.metadata_xml(r.meta))
            changed = True
        if p.action is Action.REBOOT and active and opts.start:
            with phase(emit, name, "shutdown"):
                if not conn.shutdown(name, SHUTDOWN_TIMEOUT_S):
                    emit(Event(name, "shutdown", "warn", detail="no ACPI power-off: forced"))
            active = False
        if active and first_boot_done:
            if not changed:
                emit(Event(name, "converge", "info", detail="unchanged"))
            return changed
        if not opts.start:
            emit(Event(name, "converge", "info", detail="left shut off (--no-start)"))
            return changed
        if not active:
            with phase(emit, name, "start"):
                conn.start(name)
        if first_boot_done:
            wait_ssh(inv, r, emit).close()
        else:
            emit(Event(name, "converge", "info", detail="finishing an interrupted first boot"))
            finish_first_boot(conn, inv, r, emit)
        return True

    if first_boot_done:
        # `down` kept this node's disk: define it again without a seed.
        with phase(emit, name, "define"):
            conn.define(r.booted_xml)
        if opts.start:
            with phase(emit, name, "start"):
                conn.start(name)
            wait_ssh(inv, r, emit).close()
        return True
    if disk in vols:
        # Keep the disk (volumes go only with --purge) and boot it with a fresh seed.
        emit(Event(name, "converge", "info", detail="resuming an unfinished first boot"))
    else:
        with pool_op(inv, conn, pool, emit, name, "create root overlay"):
            conn.create_volume(pool, r.overlay_xml)
    with pool_op(inv, conn, pool, emit, name, "upload seed"):
        conn.delete_volume(pool, seed_vol)  # possibly a partial upload; ours, and re-made here
        upload_seed(conn, r)
    with phase(emit, name, "define"):
        conn.define(r.domain_xml)
    if not opts.start:
        emit(Event(name, "converge", "info", detail="defined, left shut off (--no-start)"))
        return True
    with phase(emit, name, "start"):
        conn.start(name)
    finish_first_boot(conn, inv, r, emit)
    return True


def finish_first_boot(
    conn: hypervisor.Connection, inv: Inventory, r: render.NodeRender, emit: Emit
) -> None:
    """Wait for SSH and cloud-init, then make sure first-boot work never runs again."""
    name = r.node.name
    session = wait_ssh(inv, r, emit)
    try:
        with phase(emit, name, "cloud-init"):
            wait_cloud_init(session, name)
        with phase(emit, name, "first-boot-done"):
            # A later boot must not regenerate keys or re-run first-boot work.
            session.run(["sudo", "touch", "/etc/cloud/cloud-init.disabled"])
            conn.detach_disk(name, SEED_TARGET)
        with pool_op(inv, conn, r.hypervisor.pool_name, emit, name, "delete seed"):
            conn.delete_volume(r.hypervisor.pool_name, domain.seed_volume(r.node))  # host key
    finally:
        session.close()


def upload_seed(conn: hypervisor.Connection, r: render.NodeRender) -> None:
    with tempfile.TemporaryDirectory(prefix="provision-seed-") as tmp:
        os.chmod(tmp, 0o700)
        path = seediso.write_seed(Path(tmp) / "seed.img", r.seed)
        volume = domain.seed_volume(r.node)
        conn.upload(r.hypervisor.pool_name, volume, path, domain.raw_volume_xml(volume, 0, "0600"))


def wait_ssh(inv: Inventory, r: render.NodeRender, emit: Emit) -> ssh.Session:
    target = workspace.ssh_target(inv, r)
    with phase(emit, r.node.name, "ssh", f"{target.host}:{target.port}"):
        return ssh.wait_for_ssh(
            target,
            SSH_DEADLINE_S,
            progress=lambda s: emit(Event(r.node.name, "ssh", "info", detail=s)),
        )


def wait_cloud_init(session: ssh.Session, name: str) -> None:
    result = session.run(
        ["sudo", "cloud-init", "status", "--wait", "--long"],
        check=False,
        timeout=CLOUD_INIT_TIMEOUT_S,
    )
    if result.returncode == 0:
        return
    log = session.run(
        ["sudo", "grep", "-E", "WARNING|ERROR|Traceback|Failed", "/var/log/cloud-init.log"],
        check=False,
    )
    lines = log.stdout.strip().splitlines()[-20:]
    raise ProvisionError(
        f"{name}: cloud-init failed:\n  " + "\n  ".join([*result.stdout.splitlines(), *lines]),
        hint=f"`provision ssh {name} -- sudo cat /var/log/cloud-init-output.log` for the rest",
    )


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
                    purged.extend(_purge_unused_golden(conn, hv.pool_name, emit))
    return DownResult(tuple(stopped), tuple(purged), tuple(absent))


def _purge_unused_golden(conn: hypervisor.Connection, pool: str, emit: Emit) -> list[str]:
    """Golden artifacts no remaining domain uses (any inventory's) go too."""
    in_use = "\n".join(d.xml for d in conn.domains())
    purged = []
    for vol in conn.volumes(pool):
        if vol.startswith("golden-") and vol not in in_use:
            with phase(emit, "*", "purge", vol):
                conn.delete_volume(pool, vol)
            purged.append(vol)
    return purged


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
