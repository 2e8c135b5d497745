"""The local image store under state_dir/images, and a node's reference to what it holds."""

from __future__ import annotations

from pathlib import Path

from provision.core.model import ImageSpec
from provision.desired.golden import GoldenRef
from provision.image import image


def images_dir(state_dir: Path) -> Path:
    return state_dir / "images"


def resolve(spec: ImageSpec, state_dir: Path) -> GoldenRef:
    """The reference for `spec`: digests from the built image's manifest, or unresolved."""

    manifest = image.find_image(images_dir(state_dir), spec)
    if manifest is None:
        return GoldenRef(image.inputs_hash(spec), None, None, None, None)
    return GoldenRef(
        image_id=manifest.image_id,
        rootfs_sha256=manifest.digest("rootfs.qcow2"),
        kernel_sha256=manifest.digest("vmlinuz"),
        initrd_sha256=manifest.digest("initrd.img"),
        kernel_version=manifest.kernel_version,
    )
