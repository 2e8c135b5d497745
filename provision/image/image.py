"""Golden images: build with mmdebstrap, cache by the hash of the build inputs, verify by digest.

An image is a directory named by its inputs hash holding `rootfs.qcow2` (an ext4 filesystem on the
whole disk: the kernel boots with root=/dev/vda), `vmlinuz`, `initrd.img`, a CycloneDX SBOM and
`manifest.json` (digests, kernel version, package list, build inputs), written last, and the
rootfs's file list `files.json.gz` (provision/image/files.py) for drift.
The image carries packages, not policy: all hardening arrives through the seed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provision.boundary.process import run
from provision.core.errors import ImageError
from provision.core.model import ImageSpec
from provision.image import aide, apt
from provision.image import files as file_list

BUILDER_VERSION = "4"  # bump when the recipe below changes: every cached image is then stale

BASE_PACKAGES: tuple[str, ...] = (
    "systemd-sysv",
    "udev",
    "dbus",
    "cloud-init",
    "openssh-server",
    "sudo",
    "ifupdown",
    "isc-dhcp-client",
    "docker.io",
    "containerd",
    "rootlesskit",
    "uidmap",
    "slirp4netns",
    "dbus-user-session",
    "nftables",
    "auditd",
    "apparmor",
    "systemd-timesyncd",
    "busybox-static",
    "python3",
    "procps",
    "iproute2",
    "kmod",
    "e2fsprogs",
    "ca-certificates",
    # Kubernetes nodes (kubeadm preflight, kube-proxy, the bootstrap scripts): in every image so
    # one golden image serves every role and nodes install nothing at boot.
    "iptables",
    "conntrack",
    "socat",
    "ethtool",
    "openssl",
    # Integrity and accounting (HN-FS-11, HN-LOG-07): AIDE's database is made at build time;
    # debsums checks package files against dpkg's md5sums; acct and sysstat keep the process
    # and load history an incident needs.
    "aide",
    "aide-common",  # the daily check timer and /var/lib/aide (only recommended by aide)
    "debsums",
    "acct",
    "sysstat",
    # PAM (HN-USR-10/11): password quality for any password ever set, a private $TMPDIR per
    # login. Their package scripts add them to common-password and common-session.
    "libpam-pwquality",
    "libpam-tmpdir",
    # SSH brute force (HN-SSH-13): fail2ban reads sshd from the journal (python3-systemd) and
    # bans through nftables in its own table.
    "fail2ban",
    "python3-systemd",
    # Not needrestart: it depends on binutils, an assembler and a linker on every node (Lynis
    # HRDN-7220/7222 found them there).
)


# files.json.gz (provision/image/files.py): the rootfs file list drift compares a node against.
ARTIFACTS = ("rootfs.qcow2", "vmlinuz", "initrd.img", "sbom.cdx.json", file_list.FILES_ARTIFACT)
Progress = Callable[[str], None]
BOOT_ARTIFACTS = ARTIFACTS[:3]  # uploaded to the pool: the base image, kernel and initrd


@dataclass(frozen=True)
class Artifact:
    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    image_id: str
    name: str
    created: str
    kernel_version: str
    artifacts: tuple[Artifact, ...]
    packages: tuple[tuple[str, str, str], ...]
    inputs: dict[str, Any]
    # (package, suite it was installed from): the suite, -updates or -security (HN-SC-05).
    origins: tuple[tuple[str, str], ...] = ()
    aide_db_sha256: str = ""  # the AIDE database made at build time (HN-FS-11)

    def digest(self, name: str) -> str:
        for a in self.artifacts:
            if a.name == name:
                return a.sha256
        raise ImageError(f"image {self.image_id[:16]} has no artifact {name}")

    def to_json(self) -> str:
        doc = {
            "image_id": self.image_id,
            "name": self.name,
            "created": self.created,
            "kernel_version": self.kernel_version,
            "artifacts": [a.__dict__ for a in self.artifacts],
            "packages": [list(p) for p in self.packages],
            "inputs": self.inputs,
            "origins": [list(o) for o in self.origins],
            "aide_db_sha256": self.aide_db_sha256,
        }
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str) -> Manifest:
        doc = json.loads(text)
        return Manifest(
            image_id=doc["image_id"],
            name=doc["name"],
            created=doc["created"],
            kernel_version=doc["kernel_version"],
            artifacts=tuple(Artifact(**a) for a in doc["artifacts"]),
            packages=tuple((p[0], p[1], p[2]) for p in doc["packages"]),
            inputs=doc["inputs"],
            # Older manifests have neither: their images predate the security sources.
            origins=tuple((o[0], o[1]) for o in doc.get("origins", ())),
            aide_db_sha256=doc.get("aide_db_sha256", ""),
        )


def packages(spec: ImageSpec) -> tuple[str, ...]:
    return tuple(
        sorted({*BASE_PACKAGES, f"linux-image-{spec.kernel_flavour}", *spec.extra_packages})
    )


def inputs(spec: ImageSpec) -> dict[str, Any]:
    """Everything that decides the image's content (the name does not)."""
    return {
        "builder": BUILDER_VERSION,
        "suite": spec.suite,
        "mirror": apt.mirror_url(spec),
        "sources": list(apt.sources(spec)),
        # The AIDE policy is baked into the image with its database: a change means a rebuild.
        "aide_conf_sha256": hashlib.sha256(aide.conf().encode()).hexdigest(),
        "snapshot": spec.snapshot,
        "packages": list(packages(spec)),
        "source_date_epoch": spec.source_date_epoch,
    }


def inputs_hash(spec: ImageSpec) -> str:
    canonical = json.dumps(inputs(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def image_dir(store: Path, spec: ImageSpec) -> Path:
    return store / inputs_hash(spec)[:16]


def load_manifest(directory: Path) -> Manifest:
    path = directory / "manifest.json"
    try:
        return Manifest.from_json(path.read_text())
    except FileNotFoundError as exc:
        raise ImageError(
            f"no image at {directory} (manifest.json missing)",
            hint="build it with `provision image build`",
        ) from exc
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ImageError(f"{path} is corrupt: {exc}", hint="rebuild with --force") from exc


def find_image(store: Path, spec: ImageSpec) -> Manifest | None:
    directory = image_dir(store, spec)
    if not (directory / "manifest.json").exists():
        return None
    return load_manifest(directory)


def list_images(store: Path) -> list[Manifest]:
    if not store.is_dir():
        return []
    found = [
        load_manifest(d)
        for d in sorted(store.iterdir())
        if not d.name.startswith(".") and (d / "manifest.json").exists()  # not a build in progress
    ]
    return sorted(found, key=lambda m: m.created)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify_image(directory: Path) -> list[str]:
    """One message per artifact that is missing or differs from the manifest; empty if intact."""
    try:
        manifest = load_manifest(directory)
    except ImageError as exc:
        return [str(exc)]
    listed = {a.name for a in manifest.artifacts}
    # What a node boots from must be listed: an edit that drops an entry is tampering too.
    problems = [f"{name}: not in the manifest" for name in BOOT_ARTIFACTS if name not in listed]
    for a in manifest.artifacts:
        path = directory / a.name
        if not path.exists():
            problems.append(f"{a.name}: missing")
        elif path.stat().st_size != a.size:
            problems.append(f"{a.name}: size {path.stat().st_size}, manifest says {a.size}")
        elif sha256_file(path) != a.sha256:
            problems.append(f"{a.name}: sha256 differs from the manifest")
    return problems


def build_image(
    spec: ImageSpec,
    store: Path,
    *,
    progress: Progress = lambda s: None,
    force: bool = False,
) -> tuple[Manifest, bool]:
    """The image for `spec`, built now (True) or from the cache (False)."""
    final = image_dir(store, spec)
    if not force and (final / "manifest.json").exists():
        progress(f"image {final.name} is cached: nothing to rebuild")
        return load_manifest(final), False
    store.mkdir(parents=True, exist_ok=True)
    with _store_lock(store, progress):
        if not force and (final / "manifest.json").exists():
            progress(f"image {final.name} was built while we waited: nothing to rebuild")
            return load_manifest(final), False
        remove_stale_builds(store, progress)
        work = Path(tempfile.mkdtemp(prefix=f".build-{final.name}-", dir=store))
        try:
            manifest = _build(spec, work, progress)
            if final.exists():
                remove_tree(final)
            os.rename(work, final)  # atomic: a cached image is always a complete one
        except BaseException:
            # If mounts are left behind, keep the directory: the next build names them.
            with contextlib.suppress(ImageError):
                remove_tree(work)
            raise
    progress(f"image {final.name} built")
    return manifest, True


@contextlib.contextmanager
def _store_lock(store: Path, progress: Progress) -> Iterator[None]:
    """One build at a time per store: a build's temp dir is then never another build's."""
    with (store / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another image build in {store}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # the lock goes with the file descriptor


def remove_stale_builds(store: Path, progress: Progress) -> None:
    """Remove the temp dirs of interrupted builds (callers hold the store lock)."""
    for stale in sorted(store.glob(".build-*")):
        progress(f"removing unfinished build {stale.name}")
        remove_tree(stale)


def mounts_below(path: Path, mountinfo: str) -> list[str]:
    """Mount points at or below `path` in /proc/self/mountinfo text (octal escapes decoded)."""
    top = str(path)
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        if point == top or point.startswith(top + "/"):
            points.append(point)
    return points


def remove_tree(path: Path, mountinfo: str | None = None) -> None:
    """rmtree, but never through a mount point.

    A killed mmdebstrap (Ctrl-C makes subprocess SIGKILL it before its cleanup runs) leaves the
    host's /dev/shm bind-mounted in the rootfs, with /proc, /sys and /dev/pts: rmtree would empty
    the host's /dev/shm through it.
    """
    if not path.exists():
        return
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    if points := mounts_below(path.resolve(), mountinfo):
        raise ImageError(
            f"{path} still has mounts from an interrupted build: {', '.join(points)}",
            hint=f"unmount them (umount {' '.join(reversed(points))}) and retry",
        )
    shutil.rmtree(path)


def _build(spec: ImageSpec, work: Path, progress: Progress) -> Manifest:
    rootfs = work / "rootfs"
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "SOURCE_DATE_EPOCH": str(spec.source_date_epoch),
        "LC_ALL": "C.UTF-8",
    }
    pkgs = packages(spec)
    progress(f"mmdebstrap {spec.suite}: {len(pkgs)} packages from {', '.join(apt.suites(spec))}")
    run(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--mode=root",
            "--format=directory",
            f"--include={','.join(pkgs)}",
            # Documentation is dead weight on a node; the copyright files (licences) stay.
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            # The package indexes say which suite each package came from (package_origins);
            # _scrub removes them afterwards.
            "--skip=cleanup/apt/lists",
            spec.suite,
            rootfs,
            *apt.sources(spec),
        ],
        env=env,
        timeout=3600,
    )
    progress("initialising the AIDE database of /usr and /boot")
    aide_db_sha256 = aide.initialise(rootfs, env)
    installed = _dpkg_list(rootfs)
    origins = apt.package_origins(installed, apt.indexes(rootfs / "var/lib/apt/lists"))
    security = sum(1 for _, suite in origins if suite.endswith("-security"))
    progress(f"{len(origins)} packages, {security} of them from {spec.suite}-security")
    progress("scrubbing identity and caches")
    _scrub(rootfs)
    # The rootfs is final here: recorded before mkfs.ext4 copies it (modes, owners and mtimes
    # survive the copy) and it is removed.
    count = file_list.write_files_list(rootfs, work / file_list.FILES_ARTIFACT)
    progress(f"recorded {count} files under {', '.join(file_list.ROOTS)}")
    kernel_version = _copy_kernel(rootfs, work)
    progress(f"kernel {kernel_version}; making the ext4 root filesystem")
    raw = work / "rootfs.raw"
    size_mib = _used_mib(rootfs) * 13 // 10 + 512
    run(
        [
            "mkfs.ext4",
            "-q",
            "-L",
            "root",
            "-E",
            "root_owner=0:0",
            "-d",
            rootfs,
            raw,
            f"{size_mib}M",
        ],
        env={**env, "E2FSPROGS_FAKE_TIME": str(spec.source_date_epoch)},
    )
    remove_tree(rootfs)
    progress("converting to qcow2")
    run(["qemu-img", "convert", "-O", "qcow2", raw, work / "rootfs.qcow2"])
    raw.unlink()
    # Imported here: the schema validator takes ~2 s to import, and a cached build must not pay it.
    from provision.image import sbom

    image_id = inputs_hash(spec)
    sbom_text = sbom.sbom_json(
        installed,
        image_id,
        spec.name,
        timestamp=datetime.fromtimestamp(spec.source_date_epoch, UTC),
    )
    sbom.validate_sbom(sbom_text)
    (work / "sbom.cdx.json").write_text(sbom_text)
    progress("hashing artifacts")
    manifest = Manifest(
        image_id=image_id,
        name=spec.name,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        kernel_version=kernel_version,
        artifacts=tuple(
            Artifact(name, sha256_file(work / name), (work / name).stat().st_size)
            for name in ARTIFACTS
        ),
        packages=installed,
        inputs=inputs(spec),
        origins=origins,
        aide_db_sha256=aide_db_sha256,
    )
    (work / "manifest.json").write_text(manifest.to_json())
    return manifest


def _scrub(rootfs: Path) -> None:
    """No identity and no leftovers: every node gets its own keys, machine-id and logs."""
    for key in (rootfs / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc" / "machine-id").write_text("")  # empty: systemd makes one at first boot
    dbus_id = rootfs / "var" / "lib" / "dbus" / "machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
    for pattern in (
        "var/lib/apt/lists/*",
        "var/cache/apt/*.bin",
        "var/cache/debconf/*-old",
        "tmp/*",
        "var/tmp/*",
    ):
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.name != "lock":
                path.unlink()
    for log in (rootfs / "var" / "log").rglob("*"):
        if log.is_file():
            log.unlink()
    # ifupdown only reads cloud-init's network config if interfaces sources interfaces.d.
    interfaces = rootfs / "etc" / "network" / "interfaces"
    text = interfaces.read_text() if interfaces.exists() else ""
    if "source /etc/network/interfaces.d/*" not in text:
        interfaces.write_text(text + "source /etc/network/interfaces.d/*\n")
    (rootfs / "etc" / "fstab").write_text("/dev/vda / ext4 defaults,errors=remount-ro 0 1\n")
    hostname = rootfs / "etc" / "hostname"
    if hostname.exists():
        hostname.unlink()
    # mmdebstrap leaves the build host's resolver here. A node gets its own from DHCP; unlink
    # first, as writing through a symlink would change a file on the build host.
    resolv = rootfs / "etc" / "resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text("")


def _dpkg_list(rootfs: Path) -> tuple[tuple[str, str, str], ...]:
    out = run(
        [
            "dpkg-query",
            f"--admindir={rootfs / 'var/lib/dpkg'}",
            "-W",
            "-f",
            "${Package}\t${Version}\t${Architecture}\n",
        ]
    ).stdout
    rows = [tuple(line.split("\t")) for line in out.splitlines() if line]
    return tuple(sorted((r[0], r[1], r[2]) for r in rows))


def _copy_kernel(rootfs: Path, work: Path) -> str:
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise ImageError(f"expected one kernel in the image, found {[k.name for k in kernels]}")
    version = kernels[0].name.removeprefix("vmlinuz-")
    initrd = rootfs / "boot" / f"initrd.img-{version}"
    if not initrd.exists():
        raise ImageError(f"the image has no initrd for kernel {version}")
    for src, name in ((kernels[0], "vmlinuz"), (initrd, "initrd.img")):
        shutil.copyfile(src, work / name)
        os.chmod(work / name, 0o644)
    return version


def _used_mib(rootfs: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(rootfs):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.lstat(p).st_size + 4096
    return total // (1 << 20) + 1
