"""Integration fixtures: the golden image, built once per run with real mmdebstrap."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provision.config import inventory
from provision.image import image, store

ROOT = Path(__file__).resolve().parents[2]
# The lifecycle tests use this state dir too, so they boot the image built here.
STATE = Path(os.environ.get("PROVISION_TEST_STATE", "/var/lib/provision-test"))


@pytest.fixture(scope="session")
def golden_image() -> image.Manifest:
    spec = inventory.load(ROOT / "inventories" / "local.yaml").image
    manifest, _built = image.build_image(spec, store.images_dir(STATE))
    return manifest


@pytest.fixture(scope="session")
def golden_dir(golden_image: image.Manifest) -> Path:
    spec = inventory.load(ROOT / "inventories" / "local.yaml").image
    return image.image_dir(store.images_dir(STATE), spec)
