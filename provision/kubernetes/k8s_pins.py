"""Pinned upstream checksums of the Kubernetes node binaries, each citing where it was read.

Nothing here is computed or fetched: every sha256 was copied by hand from a published upstream
record, and `up` refuses the Kubernetes role for any version without pins here.

Source of the values. The binaries are not reachable from the development machine, so the values
were read from kubernetes-sigs/kubespray `roles/kubespray_defaults/vars/main/checksums.yml`
(commit in `RECORDED_IN`), which mirrors the `.sha256` files upstream publishes next to each
artifact (`https://dl.k8s.io/release/v<ver>/bin/linux/<arch>/<binary>.sha256`, and the
`.sha256` release assets of kubernetes-sigs/cri-tools and containernetworking/plugins).
kubespray downloads from exactly those URLs (`roles/kubespray_defaults/defaults/main/download.yml`).

The version: 1.34.4 is the newest 1.34 patch for which that file holds kubeadm, kubelet and
kubectl (linux/amd64) together (it lists kubelet/kubectl/kubeadm 1.34.0 to 1.34.4; 1.35.0/1.35.1
are newer minors). crictl 1.34.0 is the cri-tools minor matching Kubernetes 1.34 (kubespray picks
the newest crictl below the next Kubernetes minor); CNI plugins 1.8.0 is kubespray's default
(`cni_version`), needed because kubeadm does not ship the plugins (HN-K8S-13: `/opt/cni/bin`).

To add a version: copy the five values from a newer `checksums.yml` (or from the `.sha256` files
themselves), update `RECORDED_IN` for that version, never type a value from memory.

The apt path (`install: apt`): the repository URL is a documented pattern, but the signing key's
fingerprint was not found in an authoritative upstream source (kubernetes/website documents the
key only by URL, with a placeholder fingerprint), so it is not pinned and `apt_source` refuses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from provision.core.errors import ProvisionError

ARCH = "amd64"

RECORDED_IN = (
    "kubernetes-sigs/kubespray roles/kubespray_defaults/vars/main/checksums.yml"
    " @ 005bdce7f1867958838a2d0bb4f7e67893d98f64"
)

_SHA256 = re.compile(r"[0-9a-f]{64}")


class PinError(ProvisionError):
    """A Kubernetes version, artifact or repository key has no pinned upstream checksum."""


@dataclass(frozen=True)
class Pin:
    """One upstream artifact and the sha256 upstream published for it."""

    artifact: str  # kubeadm, kubelet, kubectl, crictl, cni-plugins
    version: str  # of the artifact itself (crictl and the CNI plugins version apart)
    arch: str
    sha256: str
    source_url: str  # the upstream `.sha256` file the value is published in
    recorded_in: str  # where we read it (repository, path @ commit)

    @property
    def download_url(self) -> str:
        """The artifact itself: the checksum file's URL without `.sha256`."""
        return self.source_url.removesuffix(".sha256")

    @property
    def filename(self) -> str:
        """The upstream file name, e.g. `kubeadm` or `crictl-v1.34.0-linux-amd64.tar.gz`."""
        return self.download_url.rsplit("/", 1)[-1]


def _dl_k8s_io(binary: str, version: str, sha256: str) -> Pin:
    url = f"https://dl.k8s.io/release/v{version}/bin/linux/{ARCH}/{binary}.sha256"
    return Pin(binary, version, ARCH, sha256, url, RECORDED_IN)


def _crictl(version: str, sha256: str) -> Pin:
    url = (
        f"https://github.com/kubernetes-sigs/cri-tools/releases/download/v{version}/"
        f"crictl-v{version}-linux-{ARCH}.tar.gz.sha256"
    )
    return Pin("crictl", version, ARCH, sha256, url, RECORDED_IN)


def _cni_plugins(version: str, sha256: str) -> Pin:
    url = (
        f"https://github.com/containernetworking/plugins/releases/download/v{version}/"
        f"cni-plugins-linux-{ARCH}-v{version}.tgz.sha256"
    )
    return Pin("cni-plugins", version, ARCH, sha256, url, RECORDED_IN)


# Copied verbatim (without the `sha256:` prefix) from RECORDED_IN:
#   kubeadm_checksums.amd64."1.34.4", kubelet_checksums.amd64."1.34.4",
#   kubectl_checksums.amd64."1.34.4", crictl_checksums.amd64."1.34.0",
#   cni_binary_checksums.amd64."1.8.0".
PINS: dict[str, tuple[Pin, ...]] = {
    "1.34.4": (
        _dl_k8s_io(
            "kubeadm", "1.34.4", "b967f1fa0e36621c402d38bb560eb4a943954d5cf5a00e5150842f6f5da73455"
        ),
        _dl_k8s_io(
            "kubelet", "1.34.4", "03b8fea715a7ef82eeaf518dee34c72670c57cc7bc40dc1320c04fbf4f15172f"
        ),
        _dl_k8s_io(
            "kubectl", "1.34.4", "d50c359d95e0841eaad08ddc27c7be37cba8fdccfba5c8e2ded65e121ff112db"
        ),
        _crictl("1.34.0", "a8ff2a3edb37a98daf3aba7c3b284fe0aa5bff24166d896ab9ef64c8913c9f51"),
        _cni_plugins("1.8.0", "ab3bda535f9d90766cccc90d3dddb5482003dd744d7f22bcf98186bf8eea8be6"),
    ),
}

ARTIFACTS = ("kubeadm", "kubelet", "kubectl", "crictl", "cni-plugins")


def supported_versions() -> tuple[str, ...]:
    return tuple(sorted(PINS))


def pins_for(version: str) -> tuple[Pin, ...]:
    """Every pinned artifact of Kubernetes `version`; PinError when none are pinned."""
    pins = PINS.get(version.removeprefix("v"))
    if pins is None:
        raise PinError(
            f"no pinned checksums for Kubernetes {version}: "
            f"supported: {', '.join(supported_versions())}",
            hint="set kubernetes.version to a supported version, or pin the new version's "
            "upstream checksums in provision/kubernetes/k8s_pins.py with their source",
        )
    return pins


def pin(version: str, artifact: str) -> Pin:
    """The pin of one artifact of Kubernetes `version`."""
    for p in pins_for(version):
        if p.artifact == artifact:
            return p
    raise PinError(f"no pinned checksum for {artifact} of Kubernetes {version}")


def minor(version: str) -> str:
    """`1.34.4` -> `1.34` (the pkgs.k8s.io repositories are per minor)."""
    parts = version.removeprefix("v").split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        raise PinError(f"not a Kubernetes version: {version!r}")
    return f"{parts[0]}.{parts[1]}"


def apt_repository_url(version: str) -> str:
    """The pkgs.k8s.io Debian repository of `version`'s minor (documented URL pattern)."""
    return f"https://pkgs.k8s.io/core:/stable:/v{minor(version)}/deb/"


# The OpenPGP fingerprint of the pkgs.k8s.io signing key. None: not found in an authoritative
# upstream source (kubernetes/website shows the key only by URL; its zypper example prints a
# placeholder fingerprint). Pin it here, with its source, once upstream publishes it.
APT_SIGNING_KEY_FINGERPRINT: str | None = None
APT_SIGNING_KEY_SOURCE: str | None = None


@dataclass(frozen=True)
class AptSource:
    url: str  # e.g. https://pkgs.k8s.io/core:/stable:/v1.34/deb/
    suite: str  # flat repository: "/"
    key_url: str  # where the armoured key is published
    key_fingerprint: str  # the key must match this before apt trusts it
    key_source: str


def apt_source(version: str) -> AptSource:
    """The pinned apt source for `version`; refuses while the signing key is not pinned."""
    pins_for(version)  # the binaries inside the packages are pinned too
    url = apt_repository_url(version)
    if APT_SIGNING_KEY_FINGERPRINT is None or APT_SIGNING_KEY_SOURCE is None:
        raise PinError(
            f"install: apt for Kubernetes {version} is refused: the signing-key fingerprint of "
            f"{url} is not pinned",
            hint="use install: bundle, or pin the key's fingerprint with its upstream source "
            "in provision/kubernetes/k8s_pins.py",
        )
    return AptSource(
        url, "/", f"{url}Release.key", APT_SIGNING_KEY_FINGERPRINT, APT_SIGNING_KEY_SOURCE
    )


def is_sha256(value: str) -> bool:
    return _SHA256.fullmatch(value) is not None
