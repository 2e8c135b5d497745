"""Pure preflight checks on recorded host data: NVMe detection from sysfs trees, traversal."""

from __future__ import annotations

import os
from pathlib import Path

from provision.desired.facts import block_device_is_nvme, untraversable


def _sysfs(
    root: Path, devices: dict[str, str], links: dict[str, str], slaves: dict[str, list[str]]
) -> Path:
    """Build a sysfs-like tree: devices/<path> dirs, dev/block/M:N and class/block/NAME links."""
    sysfs = root / "sys"
    for name, devpath in devices.items():
        d = sysfs / "devices" / devpath
        d.mkdir(parents=True)
        (sysfs / "class" / "block").mkdir(parents=True, exist_ok=True)
        os.symlink(d, sysfs / "class" / "block" / name)
    (sysfs / "dev" / "block").mkdir(parents=True)
    for majmin, name in links.items():
        os.symlink(os.readlink(sysfs / "class" / "block" / name), sysfs / "dev" / "block" / majmin)
    for name, under in slaves.items():
        s = sysfs / "class" / "block" / name
        (s.resolve() / "slaves").mkdir()
        for u in under:
            os.symlink(sysfs / "class" / "block" / u, s.resolve() / "slaves" / u)
    return sysfs


# Recorded shapes (paths trimmed) of an NVMe partition, a virtio disk and LVM on NVMe.
NVME = "pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1"
VIRTIO = "pci0000:00/0000:00:04.0/virtio2/block/vda"


def test_partition_on_nvme_is_nvme(tmp_path: Path) -> None:
    sysfs = _sysfs(
        tmp_path,
        {"nvme0n1": NVME, "nvme0n1p2": f"{NVME}/nvme0n1p2"},
        {"259:2": "nvme0n1p2"},
        {},
    )
    (sysfs / "devices" / NVME / "nvme0n1p2" / "partition").write_text("2\n")
    ok, devices = block_device_is_nvme(sysfs, 259, 2)
    assert ok and devices == "nvme0n1"


def test_virtio_disk_is_not_nvme(tmp_path: Path) -> None:
    sysfs = _sysfs(tmp_path, {"vda": VIRTIO}, {"254:0": "vda"}, {})
    ok, devices = block_device_is_nvme(sysfs, 254, 0)
    assert not ok and devices == "vda"


def test_lvm_needs_every_slave_on_nvme(tmp_path: Path) -> None:
    sysfs = _sysfs(
        tmp_path,
        {
            "nvme0n1": NVME,
            "vda": VIRTIO,
            "dm-0": "virtual/block/dm-0",
            "dm-1": "virtual/block/dm-1",
        },
        {"253:0": "dm-0", "253:1": "dm-1"},
        {"dm-0": ["nvme0n1"], "dm-1": ["nvme0n1", "vda"]},
    )
    assert block_device_is_nvme(sysfs, 253, 0) == (True, "nvme0n1")
    ok, devices = block_device_is_nvme(sysfs, 253, 1)
    assert not ok and "vda" in devices


def test_unknown_device_is_not_nvme(tmp_path: Path) -> None:
    sysfs = _sysfs(tmp_path, {"vda": VIRTIO}, {"254:0": "vda"}, {})
    ok, why = block_device_is_nvme(sysfs, 8, 0)
    assert not ok and "no sysfs entry" in why


def test_untraversable_directory_is_named() -> None:
    path = Path("/srv/secret/pool")
    modes = {
        Path("/"): (0o40755, 0, 0),
        Path("/srv"): (0o40755, 0, 0),
        Path("/srv/secret"): (0o40700, 0, 0),
        path: (0o40711, 0, 0),
    }
    assert untraversable(path, modes, uid=64055, gids={64055}) == Path("/srv/secret")
    assert untraversable(path, modes, uid=0, gids={0}) is None
    modes[Path("/srv/secret")] = (0o40710, 0, 64055)  # group access is enough
    assert untraversable(path, modes, uid=64055, gids={64055}) is None
