"""Preflight against libvirt's test driver (a 100 GiB pool): disk space and memory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from provision.boundary import hypervisor
from provision.config import inventory
from provision.converge import prepare
from provision.core.errors import HypervisorError, ImageError
from provision.image import image, store
from tests import test_image
from tests.helpers import GOLDEN, LOCAL, render_inv

POOL = "default-pool"  # the test driver's built-in pool: 100 GiB free


def _renders(memory_mib: int = 1536) -> list:  # type: ignore[type-arg]
    inv = inventory.load(LOCAL)
    hv = dataclasses.replace(inv.hypervisors[0], uri="test:///default", pool_name=POOL)
    node = dataclasses.replace(inv.nodes[0], name="preflight-node", memory_mib=memory_mib)
    return list(render_inv(dataclasses.replace(inv, hypervisors=(hv,), nodes=(node,))).nodes)


def _manifest(rootfs_size: int) -> image.Manifest:
    arts = (("rootfs.qcow2", rootfs_size), ("vmlinuz", 1 << 20), ("initrd.img", 1 << 20))
    return image.Manifest(
        image_id=GOLDEN.image_id,
        name="x",
        created="",
        kernel_version="",
        artifacts=tuple(image.Artifact(n, "0" * 64, s) for n, s in arts),
        packages=(),
        inputs={},
    )


def test_enough_space_passes() -> None:
    with hypervisor.connect("test:///default") as conn:
        prepare.preflight_disk(conn, _renders(), _manifest(1 << 30), GOLDEN)


def test_not_enough_space_names_free_and_needed() -> None:
    with hypervisor.connect("test:///default") as conn, pytest.raises(HypervisorError) as exc:
        prepare.preflight_disk(conn, _renders(), _manifest(200 << 30), GOLDEN)
    assert "MiB free, this run needs" in str(exc.value)


def test_not_enough_memory_is_refused() -> None:
    with hypervisor.connect("test:///default") as conn, pytest.raises(HypervisorError) as exc:
        prepare.preflight(conn, _renders(memory_mib=4_000_000))
    assert "not enough free memory" in str(exc.value)


def test_a_tampered_golden_image_is_refused_naming_the_image_and_the_nodes(
    tmp_path: Path,
) -> None:
    """Issue #15: the refusal named neither the image directory nor the nodes it would reach."""
    inv = inventory.load(LOCAL)
    inv = dataclasses.replace(inv, state_dir=tmp_path, image=test_image.SPEC)
    directory = test_image._fake_image(store.images_dir(tmp_path))
    with (directory / "vmlinuz").open("r+b") as f:
        f.write(b"X")  # same size, other bytes
    with pytest.raises(ImageError) as err:
        prepare.ensure_image(inv, lambda _e: None, inv.nodes)
    assert str(directory) in str(err.value) and "vmlinuz: sha256 differs" in str(err.value)
    assert all(n.name in str(err.value) for n in inv.nodes)
    assert "image build --force" in str(err.value)
