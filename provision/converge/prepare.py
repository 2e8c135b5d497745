"""Before any node converges: the golden image (once per run), then per hypervisor the preflight
checks, the storage pool and the golden artifacts in it (once per hypervisor and run).

Which artifacts to upload is decided by converge.steps.golden_steps; this module reads the facts
and executes those steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from provision.boundary import hypervisor, localhost, transport
from provision.converge import steps
from provision.converge.pool import pool_op
from provision.converge.steps import GoldenKind
from provision.core.errors import HypervisorError, ImageError
from provision.core.events import Emit, Event, phase
from provision.core.model import Accel, Inventory, Node
from provision.desired import domain, golden, render
from provision.desired.facts import choose_accel, cpu_flags
from provision.image import image, store

NODE_DISK_HEADROOM = 1 << 30  # an overlay starts tiny; first boot writes a few hundred MiB


def ensure_image(inv: Inventory, emit: Emit, nodes: Sequence[Node] = ()) -> image.Manifest:
    """The golden image, built or cached, checked against its manifest before libvirt is touched:
    a changed artifact is never uploaded, and the refusal names the nodes it would have reached."""
    images = store.images_dir(inv.state_dir)
    directory = image.image_dir(images, inv.image)
    for_nodes = f" for {', '.join(n.name for n in nodes)}" if nodes else ""
    hint = "rebuild it with `provision image build --force`, then re-run; nothing was changed"
    with phase(emit, "*", "image"):
        try:
            manifest, built = image.build_image(
                inv.image, images, progress=lambda s: emit(Event("*", "image", "info", detail=s))
            )
        except ImageError as exc:
            if not (directory / "manifest.json").exists():
                raise  # a failed build says what failed
            raise ImageError(f"golden image{for_nodes}: {exc.message}", hint) from exc
        emit(Event("*", "image", "info", detail="built" if built else "cached"))
    with phase(emit, "*", "image-verify"):
        problems = image.verify_image(directory)
    if problems:
        raise ImageError(
            f"golden image {directory}{for_nodes} does not match its manifest: "
            + "; ".join(problems),
            hint=hint,
        )
    return manifest


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
        upload_golden(conn, inv, manifest, ref, hv.pool_name, hv.pool_path, emit)


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


def preflight_disk(
    conn: hypervisor.Connection,
    renders: list[render.NodeRender],
    manifest: image.Manifest,
    ref: golden.GoldenRef,
) -> None:
    """Enough free space in the pool for the artifacts still to upload and the new overlays."""
    hv = renders[0].hypervisor
    have = conn.volumes(hv.pool_name)
    need = sum(
        a.size for a in steps.golden_artifacts(manifest, ref) if have.get(a.volume) != a.size
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
    pool_path: str,
    emit: Emit,
) -> None:
    """Base image, kernel and initrd go into the pool once per digest, never per node."""
    directory = image.image_dir(store.images_dir(inv.state_dir), inv.image)
    todo = steps.golden_steps(
        steps.golden_artifacts(manifest, ref), conn.volumes(pool), conn.domains(), pool_path
    )
    for step in todo:
        volume = step.artifact.volume
        match step.kind:
            case GoldenKind.REFUSE:
                raise HypervisorError(step.detail, hint=step.hint)
            case GoldenKind.DELETE_PARTIAL:
                conn.delete_volume(pool, volume)
            case GoldenKind.UPLOAD:
                with phase(emit, "*", "upload", volume):
                    conn.upload(
                        pool,
                        volume,
                        directory / step.artifact.file,
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
