"""The Kubernetes airgap bundle: its format, and its verification on this machine before use.

Format (version 1): one tar file, optionally gzip-compressed, whose members are exactly

    bin/kubeadm  bin/kubelet  bin/kubectl        the upstream linux/amd64 binaries, unchanged
    archives/crictl-v<v>-linux-amd64.tar.gz      the upstream cri-tools release tarball, unchanged
    archives/cni-plugins-linux-amd64-v<v>.tgz    the upstream CNI plugins release tarball, unchanged
    images/<name>.tar                            one `ctr -n k8s.io images export` archive per image
    SHA256SUMS                                   `sha256sum` lines for every other regular file

plus the directories holding them (a leading `./` is accepted). crictl and the CNI plugins stay in
their release tarballs because upstream publishes the checksum of the tarball only: a bundle
builder must not repack anything it wants verified against `k8s_pins`.

`images/` holds the images `kubeadm config images list` names for the pinned version:
kube-apiserver, kube-controller-manager, kube-scheduler and kube-proxy, tagged `v<version>`
(kubeadm tags the control-plane images with the Kubernetes version), and coredns, pause and
etcd. The tags of the last three change between patch releases and no authoritative upstream
table was found for 1.34.x, so here they are checked by repository name only; on the node,
`cloudinit/k8s/bundle install` checks every image the installed (pinned) kubeadm lists.
An image archive's names are read from its OCI `index.json` (annotation
`io.containerd.image.name`, written by `ctr images export`) or a Docker `manifest.json`.

A bundle is refused, with every problem listed at once, when its sha256 differs from the
inventory's `bundle_sha256`, when a member is absolute, climbs with `..`, is not a regular file
or directory (symlink, hard link, device, fifo), is duplicated or unexpected, when SHA256SUMS
does not cover exactly the other files or disagrees with one, when a pinned artifact is missing
or differs from its pin, or when an expected image is missing. The tar is read, never extracted.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from provision.core.errors import ProvisionError
from provision.kubernetes import k8s_pins
from provision.kubernetes.k8s_pins import Pin

SUMS = "SHA256SUMS"
BINARIES = ("kubeadm", "kubelet", "kubectl")
REGISTRY = "registry.k8s.io"
# Images kubeadm deploys; the first four carry the Kubernetes version as their tag.
VERSIONED_IMAGES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
OTHER_IMAGES = ("coredns/coredns", "pause", "etcd")

_NAME = re.compile(r"[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*")  # also safe for the node's shell
_SUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")
_CHUNK = 1 << 20
IMAGE_NAME = "io.containerd.image.name"  # index.json annotation written by ctr export


class BundleError(ProvisionError):
    """The airgap bundle was refused; carries every problem found."""

    def __init__(self, path: Path, problems: Iterable[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"Kubernetes bundle {path} refused ({len(self.problems)} problem"
            f"{'s' if len(self.problems) != 1 else ''}):\n{lines}",
            hint="rebuild the bundle from the pinned upstream artifacts and update "
            "kubernetes.bundle_sha256",
        )


@dataclass(frozen=True)
class BundleReport:
    """What a verified bundle holds."""

    path: Path
    sha256: str
    version: str
    members: tuple[tuple[str, str], ...]  # (member, sha256) of every regular file, sorted
    artifacts: tuple[tuple[str, str], ...]  # (artifact, member) checked against its pin
    images: tuple[str, ...]  # image references found in images/*.tar, sorted


def member_for(pin: Pin) -> str:
    """Where a pinned artifact lives in the bundle."""
    if pin.artifact in BINARIES:
        return f"bin/{pin.filename}"
    return f"archives/{pin.filename}"


def pins_sha256(pins: Iterable[Pin]) -> str:
    """The node's `/etc/provision/k8s/pins.sha256`: `<sha256>  <member>` per pinned artifact.

    `cloudinit/k8s/bundle` checks the extracted bundle against it (`sha256sum -c` format).
    """
    return "".join(f"{p.sha256}  {member_for(p)}\n" for p in pins)


def expected_images(version: str) -> tuple[str, ...]:
    """Repository prefixes the bundle must hold; `:v<version>` is part of the first four."""
    v = version.removeprefix("v")
    return tuple(f"{REGISTRY}/{name}:v{v}" for name in VERSIONED_IMAGES) + tuple(
        f"{REGISTRY}/{name}:" for name in OTHER_IMAGES
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stream_sha256(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symlink (to {member.linkname})"
    if member.islnk():
        return f"a hard link (to {member.linkname})"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a fifo"
    return "not a regular file or directory"


def _normalise(name: str) -> tuple[str | None, str | None]:
    """(clean name, None) for a safe member name, else (None, why it is refused)."""
    if name.startswith("/"):
        return None, "is an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return None, "climbs out of the bundle with '..'"
    clean = posixpath.normpath(name)
    if clean == ".":
        return ".", None
    if _NAME.fullmatch(clean) is None:
        return None, "has characters outside [A-Za-z0-9._+-/]"
    return clean, None


def _parse_sums(text: str) -> tuple[dict[str, str], list[str]]:
    sums: dict[str, str] = {}
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _SUM_LINE.fullmatch(line)
        if match is None:
            problems.append(f"{SUMS} line {number} is not '<sha256>  <file>': {line[:80]!r}")
            continue
        name, why = _normalise(match.group(2))
        if name is None:
            problems.append(f"{SUMS} line {number}: {match.group(2)!r} {why}")
        elif name in sums:
            problems.append(f"{SUMS} lists {name} twice")
        else:
            sums[name] = match.group(1).lower()
    return sums, problems


def _read_json(archive: tarfile.TarFile, member: tarfile.TarInfo) -> object:
    stream = archive.extractfile(member)
    if stream is None:  # pragma: no cover - regular files always have data
        raise ValueError(f"{member.name} cannot be read")
    return json.load(stream)


def _image_names(archive: IO[bytes]) -> list[str]:
    """Image references in an exported image archive (OCI index.json or Docker manifest.json)."""
    names: list[str] = []
    with tarfile.open(fileobj=archive, mode="r:") as inner:
        by_name = {posixpath.normpath(m.name): m for m in inner.getmembers() if m.isreg()}
        if "index.json" not in by_name and "manifest.json" not in by_name:
            raise ValueError("it has neither index.json nor manifest.json")
        if "index.json" in by_name:
            index = _read_json(inner, by_name["index.json"])
            manifests = index.get("manifests", []) if isinstance(index, dict) else []
            for manifest in manifests if isinstance(manifests, list) else []:
                annotations = manifest.get("annotations") if isinstance(manifest, dict) else None
                ref = annotations.get(IMAGE_NAME) if isinstance(annotations, dict) else None
                if isinstance(ref, str):
                    names.append(ref)
        if "manifest.json" in by_name:
            entries = _read_json(inner, by_name["manifest.json"])
            for entry in entries if isinstance(entries, list) else []:
                tags = entry.get("RepoTags") if isinstance(entry, dict) else None
                names.extend(t for t in tags or [] if isinstance(t, str))
    return names


@dataclass
class _Scan:
    hashes: dict[str, str]  # regular files but SHA256SUMS
    sums_text: str | None
    images: list[str]
    problems: list[str]


def _scan(path: Path, pinned: Iterable[str]) -> _Scan:
    """Read every member once: refuse unsafe ones, hash regular files, read image names."""
    scan = _Scan({}, None, [], [])
    allowed_files = {SUMS, *pinned}
    seen: set[str] = set()
    with tarfile.open(path, mode="r:*") as tar:
        for member in tar.getmembers():
            name, why = _normalise(member.name)
            if name is None:
                scan.problems.append(f"member {member.name!r} {why}")
                continue
            if not (member.isreg() or member.isdir()):
                scan.problems.append(f"member {name} is {_kind(member)}")
                continue
            if name in seen:
                scan.problems.append(f"member {name} appears twice")
                continue
            seen.add(name)
            if member.isdir():
                continue
            image = name.startswith("images/") and name.count("/") == 1 and name.endswith(".tar")
            if not (image or name in allowed_files):
                scan.problems.append(f"unexpected member {name}")
            stream = tar.extractfile(member) or io.BytesIO()
            if name == SUMS:
                scan.sums_text = stream.read().decode("utf-8", errors="replace")
                continue
            scan.hashes[name] = _stream_sha256(stream)
            if image:
                try:
                    scan.images.extend(_image_names(tar.extractfile(member) or io.BytesIO()))
                except (tarfile.TarError, ValueError, OSError) as exc:
                    scan.problems.append(f"{name} is not an image archive from ctr export: {exc}")
    return scan


def _check_sums(scan: _Scan) -> list[str]:
    """SHA256SUMS covers exactly the other regular files and agrees with each."""
    if scan.sums_text is None:
        return [f"{SUMS} is missing"]
    sums, problems = _parse_sums(scan.sums_text)
    hashes = scan.hashes
    for name in sorted(set(hashes) - set(sums)):
        problems.append(f"member {name} is not listed in {SUMS}")
    for name in sorted(set(sums) - set(hashes)):
        problems.append(f"{SUMS} lists {name}, which is not in the bundle")
    for name in sorted(set(sums) & set(hashes)):
        if sums[name] != hashes[name]:
            problems.append(f"{name}: sha256 {hashes[name]} differs from {SUMS} ({sums[name]})")
    return problems


def verify_bundle(
    path: Path, expected_sha256: str, version: str, pins: tuple[Pin, ...] | None = None
) -> BundleReport:
    """Verify the bundle at `path` against the inventory's sha256 and the pins of `version`.

    `pins` defaults to `k8s_pins.pins_for(version)` (PinError for an unpinned version); unit
    tests pass their own, since the real binaries are not reachable. Raises BundleError listing
    every problem.
    """
    pins = k8s_pins.pins_for(version) if pins is None else pins
    if not path.is_file():
        raise BundleError(path, [f"{path} is not a file"])
    problems: list[str] = []
    actual = file_sha256(path)
    expected = expected_sha256.strip().lower().removeprefix("sha256:")
    if not k8s_pins.is_sha256(expected):
        problems.append(f"bundle_sha256 {expected_sha256!r} is not a sha256 (64 hex digits)")
    elif actual != expected:
        problems.append(f"bundle sha256 is {actual}, the inventory's bundle_sha256 is {expected}")

    pinned = {member_for(p): p for p in pins}
    try:
        scan = _scan(path, pinned)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(path, [*problems, f"not a readable tar archive: {exc}"]) from exc
    problems += scan.problems
    problems += _check_sums(scan)

    artifacts: list[tuple[str, str]] = []
    for name, p in sorted(pinned.items()):
        if name not in scan.hashes:
            problems.append(f"{p.artifact} {p.version} is missing (expected {name})")
        elif scan.hashes[name] != p.sha256:
            problems.append(
                f"{name}: sha256 {scan.hashes[name]} differs from the pinned upstream "
                f"{p.artifact} {p.version} ({p.sha256}, {p.source_url})"
            )
        else:
            artifacts.append((p.artifact, name))

    for prefix in expected_images(version):
        if not any(ref.startswith(prefix) for ref in scan.images):
            wanted = f"{prefix[:-1]} (any tag)" if prefix.endswith(":") else prefix
            problems.append(f"image {wanted} is missing from images/")

    if problems:
        raise BundleError(path, problems)
    return BundleReport(
        path=path,
        sha256=actual,
        version=version,
        members=tuple(sorted(scan.hashes.items())),
        artifacts=tuple(artifacts),
        images=tuple(sorted(scan.images)),
    )
