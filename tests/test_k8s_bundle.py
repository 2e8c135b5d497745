"""The airgap bundle verifier: a good bundle passes; tampering of any kind is refused, all at once.

The real Kubernetes binaries are not reachable here, so the bundles are small fakes built in
tmp_path with the real layout, verified against a pin table with the fakes' checksums
(`verify_bundle(..., pins=FAKE_PINS)`). The builders are shared with test_k8s_scripts.py, which
runs the node's `bundle verify` on the same bundles.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from provision.core.errors import ProvisionError
from provision.kubernetes import k8s_bundle, k8s_pins
from provision.kubernetes.k8s_bundle import BundleError, verify_bundle

VERSION = "1.34.4"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_content(artifact: str) -> bytes:
    return f"fake {artifact} for the bundle tests, not the upstream file\n".encode()


FAKE_PINS = tuple(
    replace(p, sha256=sha256(fake_content(p.artifact))) for p in k8s_pins.pins_for(VERSION)
)

# The images kubeadm 1.34 deploys; coredns, pause and etcd carry placeholder tags on purpose
# (the verifier checks those by repository only).
IMAGE_REFS = {
    "images/kube-apiserver.tar": f"registry.k8s.io/kube-apiserver:v{VERSION}",
    "images/kube-controller-manager.tar": f"registry.k8s.io/kube-controller-manager:v{VERSION}",
    "images/kube-scheduler.tar": f"registry.k8s.io/kube-scheduler:v{VERSION}",
    "images/kube-proxy.tar": f"registry.k8s.io/kube-proxy:v{VERSION}",
    "images/coredns.tar": "registry.k8s.io/coredns/coredns:test",
    "images/pause.tar": "registry.k8s.io/pause:test",
    "images/etcd.tar": "registry.k8s.io/etcd:test",
}


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def image_archive(ref: str) -> bytes:
    """The shape of `ctr images export`: an OCI layout whose index names the image."""
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": "sha256:" + sha256(ref.encode()),
                "size": 0,
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1],
                },
            }
        ],
    }
    return _tar_bytes(
        {
            "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
            "index.json": json.dumps(index).encode(),
        }
    )


def good_files() -> dict[str, bytes]:
    files = {k8s_bundle.member_for(p): fake_content(p.artifact) for p in FAKE_PINS}
    files.update({name: image_archive(ref) for name, ref in IMAGE_REFS.items()})
    return files


def sums_for(files: dict[str, bytes]) -> bytes:
    return "".join(f"{sha256(d)}  {n}\n" for n, d in sorted(files.items())).encode()


@dataclass(frozen=True)
class Odd:
    """A member that is not a regular file: symlink, hard link, device, fifo."""

    name: str
    type: bytes
    linkname: str = ""


def write_bundle(
    path: Path,
    files: dict[str, bytes],
    *,
    sums: bytes | None = None,
    odd: tuple[Odd, ...] = (),
    gz: bool = False,
    prefix: str = "",
    with_sums: bool = True,
) -> str:
    """Write a bundle tar (SHA256SUMS computed from `files` unless given); return its sha256."""
    members = dict(files)
    if with_sums:
        members[k8s_bundle.SUMS] = sums if sums is not None else sums_for(files)
    with tarfile.open(path, mode="w:gz" if gz else "w") as tar:
        if prefix:
            for d in (".", "bin", "archives", "images"):
                info = tarfile.TarInfo(f"{prefix}{d}" if d != "." else ".")
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            info.mode = 0o755 if name.startswith(("bin/", "archives/")) else 0o644
            tar.addfile(info, io.BytesIO(data))
        for o in odd:
            info = tarfile.TarInfo(o.name)
            info.type = o.type
            info.linkname = o.linkname
            tar.addfile(info)
    return sha256(path.read_bytes())


def refused(path: Path, digest: str, pins: tuple[k8s_pins.Pin, ...] = FAKE_PINS) -> str:
    with pytest.raises(BundleError) as excinfo:
        verify_bundle(path, digest, VERSION, pins=pins)
    return str(excinfo.value)


# --- a good bundle ---


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("prefix", ["", "./"])
def test_a_good_bundle_verifies(tmp_path: Path, gz: bool, prefix: str) -> None:
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, good_files(), gz=gz, prefix=prefix)
    report = verify_bundle(path, digest, VERSION, pins=FAKE_PINS)
    assert report.sha256 == digest
    assert {a for a, _ in report.artifacts} == set(k8s_pins.ARTIFACTS)
    assert set(report.images) == set(IMAGE_REFS.values())
    assert len(report.members) == len(good_files())


def test_the_inventory_digest_may_carry_a_sha256_prefix_and_upper_case(tmp_path: Path) -> None:
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, good_files())
    verify_bundle(path, "sha256:" + digest.upper(), VERSION, pins=FAKE_PINS)


def test_the_layout_puts_binaries_in_bin_and_release_tarballs_in_archives() -> None:
    members = {p.artifact: k8s_bundle.member_for(p) for p in k8s_pins.pins_for(VERSION)}
    assert members == {
        "kubeadm": "bin/kubeadm",
        "kubelet": "bin/kubelet",
        "kubectl": "bin/kubectl",
        "crictl": "archives/crictl-v1.34.0-linux-amd64.tar.gz",
        "cni-plugins": "archives/cni-plugins-linux-amd64-v1.8.0.tgz",
    }


def test_pins_sha256_is_in_sha256sum_format_for_the_node() -> None:
    text = k8s_bundle.pins_sha256(k8s_pins.pins_for(VERSION))
    lines = text.splitlines()
    assert len(lines) == 5
    assert lines[0] == (
        "b967f1fa0e36621c402d38bb560eb4a943954d5cf5a00e5150842f6f5da73455  bin/kubeadm"
    )
    assert text.endswith("\n")


# --- tampering ---


def test_a_bundle_whose_digest_differs_from_the_inventory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bundle.tar"
    write_bundle(path, good_files())
    message = refused(path, "0" * 64)
    assert "the inventory's bundle_sha256 is " + "0" * 64 in message


def test_a_malformed_inventory_digest_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bundle.tar"
    write_bundle(path, good_files())
    assert "is not a sha256" in refused(path, "abc")


def test_one_changed_byte_in_a_binary_is_refused_even_with_a_matching_sha256sums(
    tmp_path: Path,
) -> None:
    files = good_files()
    data = bytearray(files["bin/kubeadm"])
    data[0] ^= 1
    files["bin/kubeadm"] = bytes(data)
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, files)  # SHA256SUMS recomputed: only the pin catches it
    message = refused(path, digest)
    assert "bin/kubeadm: sha256" in message
    assert "differs from the pinned upstream kubeadm 1.34.4" in message
    assert "SHA256SUMS (" not in message


def test_one_changed_byte_under_the_original_sha256sums_is_reported_twice(tmp_path: Path) -> None:
    files = good_files()
    original = sums_for(files)
    files["bin/kubelet"] = files["bin/kubelet"][:-1] + b"?"
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, files, sums=original)
    message = refused(path, digest)
    assert "bin/kubelet: sha256" in message
    assert "differs from SHA256SUMS" in message
    assert "differs from the pinned upstream kubelet" in message


def test_an_extra_file_is_refused(tmp_path: Path) -> None:
    files = good_files() | {"bin/helper": b"#!/bin/sh\n"}
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, files)
    assert "unexpected member bin/helper" in refused(path, digest)


def test_an_extra_file_missing_from_sha256sums_is_reported(tmp_path: Path) -> None:
    files = good_files()
    sums = sums_for(files)
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, files | {"images/extra.tar": image_archive("x/y:z")}, sums=sums)
    assert "member images/extra.tar is not listed in SHA256SUMS" in refused(path, digest)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../evil", "climbs out of the bundle"),
        ("bin/../../evil", "climbs out of the bundle"),
        ("/etc/cron.d/evil", "is an absolute path"),
        ("bin/ev il", "has characters outside"),
    ],
)
def test_unsafe_member_names_are_refused(tmp_path: Path, name: str, why: str) -> None:
    path = tmp_path / "bundle.tar"
    files = good_files()
    with tarfile.open(path, "w") as tar:
        for n, data in (files | {k8s_bundle.SUMS: sums_for(files), name: b"x"}).items():
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    message = refused(path, sha256(path.read_bytes()))
    assert f"member {name!r} {why}" in message


@pytest.mark.parametrize(
    ("odd", "why"),
    [
        (Odd("bin/kubeadm", tarfile.SYMTYPE, "/usr/bin/true"), "is a symlink (to /usr/bin/true)"),
        (Odd("bin/kubeadm", tarfile.LNKTYPE, "bin/kubelet"), "is a hard link (to bin/kubelet)"),
        (Odd("images/null.tar", tarfile.CHRTYPE), "is a device"),
        (Odd("images/pipe.tar", tarfile.FIFOTYPE), "is a fifo"),
    ],
)
def test_links_devices_and_fifos_are_refused(tmp_path: Path, odd: Odd, why: str) -> None:
    files = good_files()
    if odd.name in files:
        del files[odd.name]
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, files, odd=(odd,))
    assert f"member {odd.name} {why}" in refused(path, digest)


def test_a_duplicated_member_is_refused(tmp_path: Path) -> None:
    files = good_files()
    path = tmp_path / "bundle.tar"
    # A second bin/kubectl after the verified one would win on extraction.
    digest = write_bundle(path, files, odd=())
    with tarfile.open(path, "a") as tar:
        info = tarfile.TarInfo("bin/kubectl")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    digest = sha256(path.read_bytes())
    assert "member bin/kubectl appears twice" in refused(path, digest)


def test_a_missing_binary_is_refused(tmp_path: Path) -> None:
    files = good_files()
    del files["bin/kubelet"]
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, files)
    assert "kubelet 1.34.4 is missing (expected bin/kubelet)" in refused(path, digest)


def test_a_bundle_without_sha256sums_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, good_files(), with_sums=False)
    assert "SHA256SUMS is missing" in refused(path, digest)


def test_sha256sums_listing_a_file_not_in_the_bundle_is_refused(tmp_path: Path) -> None:
    files = good_files()
    sums = sums_for(files) + f"{'0' * 64}  bin/ghost\n".encode()
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, files, sums=sums)
    assert "SHA256SUMS lists bin/ghost, which is not in the bundle" in refused(path, digest)


def test_a_malformed_sha256sums_line_is_refused(tmp_path: Path) -> None:
    files = good_files()
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, files, sums=sums_for(files) + b"not a checksum line\n")
    assert "SHA256SUMS line 13 is not" in refused(path, digest)


def test_a_missing_image_is_refused(tmp_path: Path) -> None:
    files = good_files()
    del files["images/etcd.tar"]
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, files)
    assert "image registry.k8s.io/etcd (any tag) is missing" in refused(path, digest)


def test_a_control_plane_image_of_another_version_is_refused(tmp_path: Path) -> None:
    files = good_files()
    files["images/kube-apiserver.tar"] = image_archive("registry.k8s.io/kube-apiserver:v1.34.3")
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, files)
    assert "image registry.k8s.io/kube-apiserver:v1.34.4 is missing" in refused(path, digest)


def test_an_image_member_that_is_not_an_image_archive_is_refused(tmp_path: Path) -> None:
    files = good_files() | {"images/junk.tar": _tar_bytes({"hello": b"world"})}
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, files)
    message = refused(path, digest)
    assert "images/junk.tar is not an image archive from ctr export" in message


def test_a_file_that_is_not_a_tar_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bundle.tar"
    path.write_bytes(b"this is not a tar archive" * 40)
    message = refused(path, sha256(path.read_bytes()))
    assert "not a readable tar archive" in message


def test_a_missing_bundle_file_is_refused(tmp_path: Path) -> None:
    assert "is not a file" in refused(tmp_path / "nowhere.tar", "0" * 64)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    files = good_files()
    original = sums_for(files)
    files["bin/kubeadm"] += b"!"
    del files["images/pause.tar"]
    path = tmp_path / "bundle.tar"
    write_bundle(path, files | {"notes.txt": b"hi"}, sums=original, odd=(Odd("../x", b"0"),))
    with pytest.raises(BundleError) as excinfo:
        verify_bundle(path, "f" * 64, VERSION, pins=FAKE_PINS)
    problems = excinfo.value.problems
    assert len(problems) >= 6, problems
    assert isinstance(excinfo.value, ProvisionError)
    text = str(excinfo.value)
    for fragment in (
        "bundle_sha256",
        "'../x' climbs",
        "unexpected member notes.txt",
        "bin/kubeadm: sha256",
        "SHA256SUMS lists images/pause.tar",
        "image registry.k8s.io/pause (any tag) is missing",
    ):
        assert fragment in text


def test_the_default_pins_are_the_real_upstream_ones(tmp_path: Path) -> None:
    """Without injected pins the fakes fail against the pinned upstream checksums."""
    path = tmp_path / "bundle.tar"
    digest = write_bundle(path, good_files())
    with pytest.raises(BundleError) as excinfo:
        verify_bundle(path, digest, VERSION)
    text = str(excinfo.value)
    assert "https://dl.k8s.io/release/v1.34.4/bin/linux/amd64/kubeadm.sha256" in text
    assert len([p for p in excinfo.value.problems if "pinned upstream" in p]) == 5


def test_an_unpinned_version_is_refused_before_reading_the_bundle(tmp_path: Path) -> None:
    with pytest.raises(k8s_pins.PinError, match=r"no pinned checksums for Kubernetes 1\.99\.0"):
        verify_bundle(tmp_path / "nowhere.tar", "0" * 64, "1.99.0")
