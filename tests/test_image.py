"""Golden-image bookkeeping without building: cache keys, manifests, verification, SBOM."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from provision.core.errors import ImageError
from provision.core.model import ImageSpec
from provision.image import apt, image, sbom

SPEC = ImageSpec(
    name="bookworm-node",
    suite="bookworm",
    mirror="http://deb.debian.org/debian",
    snapshot=None,
    kernel_flavour="cloud-amd64",
    extra_packages=(),
    source_date_epoch=1700000000,
)
PACKAGES = (("libc6", "2.36-9+deb12u9", "amd64"), ("openssh-server", "1:9.2p1-2+deb12u3", "amd64"))


def test_inputs_hash_is_stable_and_ignores_the_name() -> None:
    assert image.inputs_hash(SPEC) == image.inputs_hash(SPEC)
    assert image.inputs_hash(dataclasses.replace(SPEC, name="other")) == image.inputs_hash(SPEC)


@pytest.mark.parametrize(
    "change",
    [
        {"suite": "trixie"},
        {"mirror": "http://mirror.example/debian"},
        {"snapshot": "20261101T000000Z"},
        {"kernel_flavour": "amd64"},
        {"extra_packages": ("jq",)},
        {"source_date_epoch": 1700000001},
        {"security_mirror": "http://security.example/debian-security"},
    ],
)
def test_every_build_input_changes_the_hash(change: dict[str, object]) -> None:
    assert image.inputs_hash(dataclasses.replace(SPEC, **change)) != image.inputs_hash(SPEC)  # type: ignore[arg-type]


def test_package_set_has_the_kernel_flavour_and_extras() -> None:
    pkgs = image.packages(dataclasses.replace(SPEC, extra_packages=("jq",)))
    assert "linux-image-cloud-amd64" in pkgs and "jq" in pkgs and "cloud-init" in pkgs
    assert list(pkgs) == sorted(set(pkgs))


def _fake_image(store: Path) -> Path:
    """A tiny image directory with real files and a matching manifest."""
    directory = image.image_dir(store, SPEC)
    directory.mkdir(parents=True)
    for name in image.ARTIFACTS:
        (directory / name).write_bytes(name.encode() * 100)
    manifest = image.Manifest(
        image_id=image.inputs_hash(SPEC),
        name=SPEC.name,
        created="2026-11-22T00:00:00+00:00",
        kernel_version="6.1.0-99-cloud-amd64",
        artifacts=tuple(
            image.Artifact(n, image.sha256_file(directory / n), (directory / n).stat().st_size)
            for n in image.ARTIFACTS
        ),
        packages=PACKAGES,
        inputs=image.inputs(SPEC),
    )
    (directory / "manifest.json").write_text(manifest.to_json())
    return directory


def test_manifest_round_trip(tmp_path: Path) -> None:
    directory = _fake_image(tmp_path)
    m = image.load_manifest(directory)
    assert image.Manifest.from_json(m.to_json()) == m
    assert m.digest("vmlinuz") == image.sha256_file(directory / "vmlinuz")
    with pytest.raises(ImageError):
        m.digest("nope")


def test_find_and_list(tmp_path: Path) -> None:
    assert image.find_image(tmp_path, SPEC) is None
    assert image.list_images(tmp_path / "missing") == []
    _fake_image(tmp_path)
    found = image.find_image(tmp_path, SPEC)
    assert found is not None and found.image_id == image.inputs_hash(SPEC)
    assert [m.image_id for m in image.list_images(tmp_path)] == [found.image_id]


def test_verify_names_each_bad_file(tmp_path: Path) -> None:
    directory = _fake_image(tmp_path)
    assert image.verify_image(directory) == []
    (directory / "vmlinuz").write_bytes(b"v" * 1000)  # same file, other bytes, other size
    (directory / "initrd.img").unlink()
    data = bytearray((directory / "sbom.cdx.json").read_bytes())
    data[0] ^= 1
    (directory / "sbom.cdx.json").write_bytes(bytes(data))  # same size, other digest
    problems = image.verify_image(directory)
    assert problems == [
        "vmlinuz: size 1000, manifest says 700",
        "initrd.img: missing",
        "sbom.cdx.json: sha256 differs from the manifest",
    ]


def test_corrupt_or_missing_manifest_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"manifest\.json missing"):
        image.load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ImageError, match="corrupt"):
        image.load_manifest(tmp_path)
    assert image.verify_image(tmp_path)[0].endswith("(rebuild with --force)")


def test_cached_image_is_not_rebuilt(tmp_path: Path) -> None:
    _fake_image(tmp_path)
    messages: list[str] = []
    manifest, built = image.build_image(SPEC, tmp_path, progress=messages.append)
    assert not built and manifest.image_id == image.inputs_hash(SPEC)
    assert "cached" in messages[0]


def test_sbom_purls_match_packages_and_pass_the_schema() -> None:
    text = sbom.sbom_json(PACKAGES, "f" * 64, "bookworm-node")
    sbom.validate_sbom(text)
    purls = [c["purl"] for c in json.loads(text)["components"]]
    assert purls == [
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u9?arch=amd64&distro=debian-12",
        "pkg:deb/debian/openssh-server@1:9.2p1-2%2Bdeb12u3?arch=amd64&distro=debian-12",
    ]


def test_sbom_validation_can_fail() -> None:
    doc = json.loads(sbom.sbom_json(PACKAGES, "f" * 64, "x"))
    doc["components"][0]["type"] = "not-a-type"
    with pytest.raises(ImageError, match="schema"):
        sbom.validate_sbom(json.dumps(doc))


# Recorded from a mmdebstrap (root mode) killed with SIGKILL mid-build; the last line is made up
# to check the octal escape of a space.
MOUNTINFO = """\
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684084k
58 27 0:40 / /store/.build-x/rootfs/dev/pts rw,nosuid - devpts none rw,mode=620,ptmxmode=666
59 27 0:27 / /store/.build-x/rootfs/dev/shm rw,relatime - tmpfs tmpfs rw,size=24684084k
61 27 0:22 / /store/.build-x/rootfs/sys ro,nosuid,nodev,noexec,relatime - sysfs sys rw
64 27 0:41 / /store/.build-x/rootfs/proc ro,relatime - proc proc ro
70 27 0:42 / /store/.build-xy/a\\040b rw - tmpfs tmpfs rw
"""


def test_mounts_below_finds_what_a_killed_mmdebstrap_left() -> None:
    assert image.mounts_below(Path("/store/.build-x"), MOUNTINFO) == [
        "/store/.build-x/rootfs/dev/pts",
        "/store/.build-x/rootfs/dev/shm",
        "/store/.build-x/rootfs/sys",
        "/store/.build-x/rootfs/proc",
    ]
    assert image.mounts_below(Path("/store/.build-xy"), MOUNTINFO) == ["/store/.build-xy/a b"]
    assert image.mounts_below(Path("/store/.build-z"), MOUNTINFO) == []


def test_stale_build_is_removed_but_never_through_a_mount(tmp_path: Path) -> None:
    """An rmtree through the host's /dev/shm bind mount would empty the host's /dev/shm."""
    stale = tmp_path / ".build-abc-123"
    (stale / "rootfs" / "dev" / "shm").mkdir(parents=True)
    (stale / "rootfs" / "dev" / "shm" / "host-file").write_text("not ours")
    mounted = f"59 27 0:27 / {stale.resolve()}/rootfs/dev/shm rw - tmpfs tmpfs rw\n"
    with pytest.raises(ImageError, match=r"rootfs/dev/shm") as err:
        image.remove_tree(stale, mountinfo=mounted)
    assert f"umount {stale.resolve()}/rootfs/dev/shm" in err.value.hint
    assert (stale / "rootfs" / "dev" / "shm" / "host-file").exists()
    messages: list[str] = []
    image.remove_stale_builds(tmp_path, messages.append)
    assert not stale.exists() and messages == ["removing unfinished build .build-abc-123"]


def test_scrub_leaves_no_identity_and_never_writes_outside_the_rootfs(tmp_path: Path) -> None:
    rootfs, outside = tmp_path / "rootfs", tmp_path / "host-resolv.conf"
    files = {
        "etc/ssh/ssh_host_ed25519_key": "private",
        "etc/ssh/sshd_config": "keep",
        "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
        "etc/hostname": "buildhost\n",
        "etc/network/interfaces": "auto lo\n",
        "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease": "x",
        "var/cache/apt/pkgcache.bin": "x",
        "var/log/apt/history.log": "x",
        "var/log/dpkg.log": "x",
    }
    for name, text in files.items():
        (rootfs / name).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / name).write_text(text)
    outside.write_text("nameserver 10.255.255.53\n")
    (rootfs / "etc/resolv.conf").symlink_to(outside)  # as a host with systemd-resolved has
    image._scrub(rootfs)
    assert sorted(p.name for p in (rootfs / "etc/ssh").iterdir()) == ["sshd_config"]
    assert (rootfs / "etc/machine-id").read_text() == ""
    assert not (rootfs / "etc/hostname").exists()
    assert not (rootfs / "etc/resolv.conf").is_symlink()
    assert (rootfs / "etc/resolv.conf").read_text() == ""
    assert outside.read_text() == "nameserver 10.255.255.53\n"
    assert "source /etc/network/interfaces.d/*" in (rootfs / "etc/network/interfaces").read_text()
    assert (rootfs / "etc/fstab").read_text() == "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n"
    assert list((rootfs / "var/lib/apt/lists").iterdir()) == []
    assert list((rootfs / "var/cache/apt").iterdir()) == []
    assert [p for p in (rootfs / "var/log").rglob("*") if p.is_file()] == []


def test_list_images_ignores_a_build_in_progress(tmp_path: Path) -> None:
    directory = _fake_image(tmp_path)
    shutil.copytree(directory, tmp_path / ".build-0123456789abcdef-x")
    assert len(image.list_images(tmp_path)) == 1


def test_an_older_manifest_without_the_file_list_still_reads_and_verifies(tmp_path: Path) -> None:
    """Images built before the file list (files.json.gz) still load; their inputs hash differs
    (BUILDER_VERSION), so `image build` makes a new one instead of reusing them."""
    directory = _fake_image(tmp_path)
    doc = json.loads((directory / "manifest.json").read_text())
    doc["artifacts"] = [a for a in doc["artifacts"] if a["name"] != "files.json.gz"]
    doc["inputs"]["builder"] = "2"
    (directory / "files.json.gz").unlink()
    (directory / "manifest.json").write_text(json.dumps(doc))
    old = image.load_manifest(directory)
    assert [a.name for a in old.artifacts] == list(image.ARTIFACTS[:-1])
    assert image.verify_image(directory) == []
    assert image.inputs(SPEC)["builder"] != "2"


def test_the_file_list_is_an_artifact_verify_checks(tmp_path: Path) -> None:
    directory = _fake_image(tmp_path)
    assert "files.json.gz" in image.ARTIFACTS
    (directory / "files.json.gz").write_bytes(b"f" * 1300)  # same size, other bytes
    assert image.verify_image(directory) == ["files.json.gz: sha256 differs from the manifest"]


def test_a_manifest_that_drops_a_boot_artifact_is_tampering(tmp_path: Path) -> None:
    """Issue #15: an edited manifest without initrd.img verified clean, and `up` then failed later
    without naming the image."""
    directory = _fake_image(tmp_path)
    doc = json.loads((directory / "manifest.json").read_text())
    doc["artifacts"] = [a for a in doc["artifacts"] if a["name"] != "initrd.img"]
    (directory / "manifest.json").write_text(json.dumps(doc))
    assert image.verify_image(directory) == ["initrd.img: not in the manifest"]


def test_sources_are_the_release_updates_and_security_all_signed() -> None:
    lines = apt.sources(SPEC)
    assert [line.split()[-2] for line in lines] == [
        "bookworm",
        "bookworm-updates",
        "bookworm-security",
    ]
    keyring = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
    assert all(line.split()[1] == keyring for line in lines)
    assert lines[2].split()[2] == "http://deb.debian.org/debian-security"
    assert image.inputs(SPEC)["sources"] == list(lines)


def test_security_archive_follows_the_mirror_unless_named() -> None:
    mirror = dataclasses.replace(SPEC, mirror="http://mirror.example/debian/")
    assert apt.security_url(mirror) == "http://mirror.example/debian-security"
    named = dataclasses.replace(mirror, security_mirror="http://sec.example/ds")
    assert apt.security_url(named) == "http://sec.example/ds"
    snap = dataclasses.replace(SPEC, snapshot="20261101T000000Z")
    assert apt.security_url(snap) == (
        "http://snapshot.debian.org/archive/debian-security/20261101T000000Z"
    )
    assert image.inputs_hash(named) != image.inputs_hash(mirror)


INDEXES = {
    "bookworm": "Package: libc6\nVersion: 2.36-9+deb12u9\n\nPackage: openssh-server\n"
    "Version: 1:9.2p1-2+deb12u2\n",
    "bookworm-security": "Package: openssh-server\nVersion: 1:9.2p1-2+deb12u3\n",
    "bookworm-updates": "Package: libc6\nVersion: 2.36-9+deb12u9\n",
}


def test_each_package_is_credited_to_the_most_specific_suite_that_has_its_version() -> None:
    # libc6's version is in the release and in -updates: -updates shipped it.
    assert apt.package_origins(PACKAGES, INDEXES) == (
        ("libc6", "bookworm-updates"),
        ("openssh-server", "bookworm-security"),
    )


def test_a_package_no_index_has_is_refused() -> None:
    stray = (*PACKAGES, ("evil", "1.0", "amd64"))
    with pytest.raises(ImageError, match=r"evil 1\.0"):
        apt.package_origins(stray, INDEXES)


def test_indexes_are_read_by_suite_from_apts_lists(tmp_path: Path) -> None:
    base = "deb.debian.org_debian"
    (tmp_path / f"{base}_dists_bookworm_main_binary-amd64_Packages").write_text("Package: a\n")
    (tmp_path / f"{base}-security_dists_bookworm-security_main_binary-amd64_Packages").write_text(
        "Package: b\n"
    )
    (tmp_path / f"{base}_dists_bookworm_InRelease").write_text("signed")
    found = apt.indexes(tmp_path)
    assert found == {"bookworm": "Package: a\n", "bookworm-security": "Package: b\n"}
    with pytest.raises(ImageError, match="no package indexes"):
        apt.indexes(tmp_path / "nothing")


def test_manifests_without_origins_still_load(tmp_path: Path) -> None:
    directory = _fake_image(tmp_path)
    doc = json.loads((directory / "manifest.json").read_text())
    del doc["origins"], doc["aide_db_sha256"]
    (directory / "manifest.json").write_text(json.dumps(doc))
    m = image.load_manifest(directory)
    assert m.origins == () and m.aide_db_sha256 == ""
