"""A node's reference to its golden image: the image id (cache key) and, once built, its digests.

Before the image is built the digests are unresolved (None) and rendered as such, never invented.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from provision.core.model import ImageSpec

UNRESOLVED = "unresolved"


@dataclass(frozen=True)
class GoldenRef:
    image_id: str  # inputs hash of the image spec
    rootfs_sha256: str | None
    kernel_sha256: str | None
    initrd_sha256: str | None
    kernel_version: str | None

    @property
    def resolved(self) -> bool:
        return None not in (self.rootfs_sha256, self.kernel_sha256, self.initrd_sha256)

    @property
    def stem(self) -> str:
        return f"golden-{self.image_id[:16]}"

    @property
    def base_volume(self) -> str:
        return f"{self.stem}.qcow2"

    @property
    def kernel_volume(self) -> str:
        return f"{self.stem}.vmlinuz"

    @property
    def initrd_volume(self) -> str:
        return f"{self.stem}.initrd"


def images_dir(state_dir: Path) -> Path:
    return state_dir / "images"


def resolve(spec: ImageSpec, state_dir: Path) -> GoldenRef:
    """The reference for `spec`: digests from the built image's manifest, or unresolved."""
    from provision.image import image

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
