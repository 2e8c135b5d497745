"""The NoCloud seed image: label, exact file names and contents, and how it lands on disk."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pycdlib
import pytest

from provision.boundary.process import run
from provision.core.secret import Secret
from provision.desired import seediso
from provision.desired.seed import Seed

FILES = {
    "user-data": "#cloud-config\nssh_keys:\n  ed25519_private: |\n    SECRET-KEY-MATERIAL\n",
    "meta-data": "instance-id: node1-0001\nlocal-hostname: node1\n",
    "network-config": "version: 2\nethernets: {}\n",
}
SEED = Seed(Secret(FILES["user-data"]), FILES["meta-data"], FILES["network-config"])


def _open(image: bytes) -> pycdlib.PyCdlib:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    return iso


def _read(iso: pycdlib.PyCdlib, **path: str) -> str:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **path)
    return out.getvalue().decode()


def test_volume_label_is_cidata_in_primary_and_joliet_descriptors() -> None:
    iso = _open(seediso.seed_image(FILES))
    assert iso.pvd.volume_identifier.decode().rstrip() == "cidata"
    assert iso.joliet_vd.volume_identifier.decode("utf-16-be").rstrip() == "cidata"


def test_files_keep_exact_names_and_content_in_rock_ridge_and_joliet() -> None:
    iso = _open(seediso.seed_image(FILES))
    for name, text in FILES.items():
        assert _read(iso, rr_path=f"/{name}") == text
        assert _read(iso, joliet_path=f"/{name}") == text
        assert _read(iso, iso_path=f"/{name.upper().replace('-', '_')}.;1") == text
    names = {c.rock_ridge.name().decode() for c in iso.list_children(rr_path="/") if c.is_file()}
    assert names == set(FILES)


def test_bytes_and_str_contents_give_the_same_files() -> None:
    as_bytes = {name: text.encode() for name, text in FILES.items()}
    iso = _open(seediso.seed_image(as_bytes))
    assert _read(iso, rr_path="/meta-data") == FILES["meta-data"]


def test_blkid_sees_an_iso9660_labelled_cidata_as_cloud_init_looks_it_up(tmp_path: Path) -> None:
    # cloud-init 22.4 finds the seed with blkid: TYPE=iso9660 and LABEL=cidata (or CIDATA).
    image = tmp_path / "seed.iso"
    image.write_bytes(seediso.seed_image(FILES))
    out = run(["blkid", "-p", "-o", "export", image]).stdout.splitlines()
    assert "TYPE=iso9660" in out
    assert "LABEL=cidata" in out


def test_an_independent_reader_sees_label_and_files(tmp_path: Path) -> None:
    image = tmp_path / "seed.iso"
    image.write_bytes(seediso.seed_image(FILES))
    if shutil.which("isoinfo") is None:  # genisoimage is optional; pycdlib is the fallback
        iso = _open(image.read_bytes())
        assert iso.pvd.volume_identifier.decode().rstrip() == "cidata"
        assert {name: _read(iso, rr_path=f"/{name}") for name in FILES} == FILES
        return
    assert "Volume id: cidata" in run(["isoinfo", "-d", "-i", image]).stdout
    for name, text in FILES.items():
        assert run(["isoinfo", "-R", "-i", image, "-x", f"/{name}"]).stdout == text


def test_unusual_file_name_is_refused() -> None:
    with pytest.raises(ValueError, match="not a seed file name"):
        seediso.seed_image({"../user-data": "x"})


def test_write_seed_creates_an_owner_only_file_even_with_a_permissive_umask(
    tmp_path: Path,
) -> None:
    old = os.umask(0)
    try:
        path = seediso.write_seed(tmp_path / "seed.img", SEED)
    finally:
        os.umask(old)
    assert path == tmp_path / "seed.img"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["seed.img"]  # no temporary file left
    iso = _open(path.read_bytes())
    assert _read(iso, rr_path="/user-data") == FILES["user-data"]  # the secret, revealed once


def test_write_seed_replaces_an_existing_image_and_keeps_it_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "seed.img"
    path.write_text("old")
    path.chmod(0o644)
    (tmp_path / "seed.img.tmp").write_text("stale")  # left by an interrupted run
    seediso.write_seed(path, SEED)
    assert path.stat().st_mode & 0o777 == 0o600
    assert _read(_open(path.read_bytes()), rr_path="/network-config") == FILES["network-config"]
    # Never written through nor reused (fresh O_EXCL names now); no temporary of ours is left.
    assert (tmp_path / "seed.img.tmp").read_text() == "stale"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.img", "seed.img.tmp"]
