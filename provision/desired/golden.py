"""A node's reference to its golden image: the image id (cache key) and, once built, its digests.

Before the image is built the digests are unresolved (None) and rendered as such, never invented.
"""

from __future__ import annotations

from dataclasses import dataclass

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
