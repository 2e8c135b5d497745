"""The golden image, built for real with mmdebstrap from the Debian mirror (once per run)."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from provision.boundary.process import run
from provision.config import inventory
from provision.image import apt, image, store
from provision.image.files import FILES_ARTIFACT, image_files
from tests.integration.conftest import ROOT, STATE

pytestmark = pytest.mark.integration


def test_manifest_matches_the_files(golden_image: image.Manifest, golden_dir: Path) -> None:
    assert image.verify_image(golden_dir) == []
    names = {a.name for a in golden_image.artifacts}
    assert names == {"rootfs.qcow2", "vmlinuz", "initrd.img", "sbom.cdx.json", FILES_ARTIFACT}
    listed = image_files(golden_dir)  # what drift compares a node's files with
    assert listed["/etc/ssh/sshd_config"].sha256 and listed["/usr/sbin/dockerd"].type == "f"
    assert listed["/bin"].type == "l" and listed["/bin"].target == "usr/bin"
    assert golden_image.kernel_version.endswith("cloud-amd64")
    installed = {p[0] for p in golden_image.packages}
    for pkg in (
        "cloud-init",
        "openssh-server",
        "docker.io",
        "rootlesskit",
        "uidmap",
        "nftables",
        "auditd",
        "apparmor",
        "busybox-static",
        "python3",
        "containerd",
        "aide",
        "debsums",
        "acct",
        "sysstat",
        "libpam-pwquality",
        "libpam-tmpdir",
    ):
        assert pkg in installed, pkg


def test_every_package_has_its_suite_and_fixes_come_from_security(
    golden_image: image.Manifest,
) -> None:
    origins = dict(golden_image.origins)
    assert set(origins) == {p[0] for p in golden_image.packages}
    suites = set(origins.values())
    assert suites <= {"bookworm", "bookworm-updates", "bookworm-security"}, suites
    # Between point releases -security always carries something an image needs (OpenSSL,
    # OpenSSH, the kernel...); an image built from the release alone would have none.
    assert "bookworm-security" in suites, suites


def test_the_aide_database_is_the_one_the_manifest_names(
    golden_image: image.Manifest, golden_dir: Path, tmp_path: Path
) -> None:
    raw = tmp_path / "root.raw"
    run(["qemu-img", "convert", "-O", "raw", golden_dir / "rootfs.qcow2", raw])
    db = tmp_path / "aide.db"
    run(["debugfs", "-R", f"dump -p /var/lib/aide/aide.db {db}", raw])
    assert image.sha256_file(db) == golden_image.aide_db_sha256
    assert db.stat().st_mode & 0o777 == 0o600
    sources = run(["debugfs", "-R", "cat /etc/apt/sources.list", raw]).stdout
    assert [line for line in sources.splitlines() if line.startswith("deb ")] == list(
        apt.sources(inventory.load(ROOT / "inventories/local.yaml").image)
    )


def test_rootfs_is_a_qcow2_with_an_ext4_filesystem(golden_dir: Path) -> None:
    info = json.loads(
        run(["qemu-img", "info", "--output=json", golden_dir / "rootfs.qcow2"]).stdout
    )
    assert info["format"] == "qcow2" and "backing-filename" not in info
    assert info.get("compressed") in (None, False)


def test_identity_is_scrubbed(golden_dir: Path, tmp_path: Path) -> None:
    raw = tmp_path / "root.raw"
    run(["qemu-img", "convert", "-O", "raw", golden_dir / "rootfs.qcow2", raw])

    def debugfs(request: str) -> str:
        return run(["debugfs", "-R", request, raw]).stdout

    assert "ssh_host_" not in debugfs("ls -l /etc/ssh")
    assert re.search(r"Size: 0\b", debugfs("stat /etc/machine-id"))
    assert "source /etc/network/interfaces.d/*" in debugfs("cat /etc/network/interfaces")
    assert "/dev/vda / ext4" in debugfs("cat /etc/fstab")
    # Not the build host's resolver: a node takes its own from DHCP or its seed.
    assert debugfs("cat /etc/resolv.conf").strip() == ""
    assert "Size: 0" in debugfs("stat /etc/resolv.conf")
    lists = debugfs("ls /var/lib/apt/lists").split()
    assert [x for x in lists if x.endswith("_Packages")] == []


def test_sbom_matches_the_package_list(golden_image: image.Manifest, golden_dir: Path) -> None:
    from provision.image import sbom

    text = (golden_dir / "sbom.cdx.json").read_text()
    sbom.validate_sbom(text)
    purls = {c["purl"] for c in json.loads(text)["components"]}
    assert purls == {sbom.package_purl(p).to_string() for p in golden_image.packages}


def test_unchanged_spec_is_cached(golden_image: image.Manifest) -> None:
    spec = inventory.load(ROOT / "inventories" / "local.yaml").image
    t0 = time.monotonic()
    manifest, built = image.build_image(spec, store.images_dir(STATE))
    took = time.monotonic() - t0
    assert not built and manifest == golden_image
    print(f"cached rebuild took {took:.3f}s")


def test_verify_names_a_tampered_artifact(golden_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "img"
    copy.mkdir()
    for name in ("manifest.json", "vmlinuz", "initrd.img", "sbom.cdx.json", FILES_ARTIFACT):
        shutil.copy(golden_dir / name, copy / name)
    (copy / "rootfs.qcow2").symlink_to(golden_dir / "rootfs.qcow2")
    assert image.verify_image(copy) == []
    with (copy / "initrd.img").open("r+b") as f:
        f.seek(100)
        f.write(b"X")
    assert image.verify_image(copy) == ["initrd.img: sha256 differs from the manifest"]
