"""The inventory after parsing: frozen dataclasses, the only currency past the loader."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path


class Accel(StrEnum):
    AUTO = "auto"
    KVM = "kvm"
    QEMU = "qemu"


class NetworkMode(StrEnum):
    USER = "user"  # QEMU user-mode networking, SSH forwarded to 127.0.0.1:<ssh_port>
    BRIDGE = "bridge"  # a host bridge; static address rendered into network-config


class DockerMode(StrEnum):
    ROOTLESS = "rootless"  # rootless daemon for the workload user; system dockerd disabled
    ROOTFUL = "rootful"  # system daemon with userns-remap (plus rootless for the workload user)
    NONE = "none"


class Role(StrEnum):
    K8S_CONTROL_PLANE = "k8s-control-plane"
    K8S_WORKER = "k8s-worker"


@dataclass(frozen=True)
class ImageSpec:
    """What goes into a golden image; its hash is the image's cache key."""

    name: str
    suite: str
    mirror: str
    snapshot: str | None  # snapshot.debian.org timestamp, e.g. 20261101T000000Z
    kernel_flavour: str  # e.g. cloud-amd64 -> linux-image-cloud-amd64
    extra_packages: tuple[str, ...]
    source_date_epoch: int  # fixed timestamp for reproducible builds
    # Debian's security archive; None: the mirror's `-security` sibling (image.apt.security_url).
    security_mirror: str | None = None


@dataclass(frozen=True)
class Hypervisor:
    name: str
    uri: str
    pool_name: str
    pool_path: str  # a path on the hypervisor, which may be remote: kept as text
    accel: Accel
    require_nvme: bool
    known_hosts: Path | None  # pinned host keys of a remote hypervisor
    identity_file: Path | None = None  # private key for the hypervisor's SSH login (remote URIs)


@dataclass(frozen=True)
class Network:
    name: str
    mode: NetworkMode
    bridge: str | None
    cidr: str | None  # e.g. 10.20.0.0/24 (bridge mode)
    gateway: str | None
    dns: tuple[str, ...]


@dataclass(frozen=True)
class Admin:
    """The operator's login on every node."""

    name: str
    ssh_keys: tuple[str, ...]  # public keys authorised for the admin
    managed_key: bool  # provision generates and keeps an operator key pair in the state dir
    identity_file: Path | None  # the private key provision logs in with, if not the managed one


@dataclass(frozen=True)
class Waiver:
    """A named exception to one verification check, with its reason and optional expiry."""

    check_id: str
    reason: str
    expires: date | None


@dataclass(frozen=True)
class DriftIgnore:
    """An inventory exception to `provision drift`: items whose key matches `pattern` (fnmatch,
    e.g. `file:/etc/motd` or `package:*`) are listed as ignored, not drift, until `expires`."""

    pattern: str
    reason: str
    expires: date | None


@dataclass(frozen=True)
class Node:
    name: str
    hypervisor: str
    network: str
    address: str | None  # static interface address (bridge mode), e.g. 10.20.0.11/24
    ssh_port: int | None  # loopback forward (user mode)
    vcpus: int
    memory_mib: int
    disk_gib: int
    data_disk_gib: int  # 0: none; a data disk survives `up --replace` (only --purge deletes it)
    cmdline_extra: tuple[str, ...]
    roles: tuple[Role, ...]
    docker: DockerMode
    admin: Admin
    workload_user: str
    sysctl: tuple[tuple[str, str], ...]  # overrides on top of the hardening set, sorted
    labels: tuple[tuple[str, str], ...]  # owner/env labels, sorted
    groups: tuple[str, ...]
    waivers: tuple[Waiver, ...] = ()  # verification exceptions; not part of the node's state
    drift_ignores: tuple[DriftIgnore, ...] = ()  # drift exceptions; neither


class K8sInstall(StrEnum):
    APT = "apt"  # kubeadm/kubelet/kubectl from pkgs.k8s.io, added to the golden image at build
    BUNDLE = "bundle"  # an airgap bundle (binaries + images), sha256-checked, carried to the node
    PREREQUISITES = "prerequisites"  # prepare nodes only: no binaries, no bootstrap


@dataclass(frozen=True)
class AllowRule:
    """An extra NetworkPolicy on top of a namespace's default-deny: ingress to `pods` from the
    listed namespaces and/or same-namespace pods, on TCP `ports` (all ports when empty)."""

    name: str
    pods: tuple[tuple[str, str], ...]  # podSelector matchLabels of the pods it opens
    from_namespaces: tuple[str, ...]
    from_pods: tuple[tuple[str, str], ...]  # matchLabels of same-namespace client pods
    ports: tuple[int, ...]


@dataclass(frozen=True)
class WorkloadNamespace:
    name: str
    allow: tuple[AllowRule, ...]
    sample_workload: bool  # deploy the restricted sample Deployment here


@dataclass(frozen=True)
class Kubernetes:
    version: str  # e.g. 1.34.3: every binary is pinned to it by checksum
    install: K8sInstall
    bundle: Path | None  # install: bundle: the airgap bundle on this machine
    bundle_sha256: str | None  # of the bundle file, as its builder published it
    pod_cidr: str
    service_cidr: str
    api_port: int
    namespaces: tuple[WorkloadNamespace, ...]


@dataclass(frozen=True)
class Inventory:
    name: str
    source: Path
    state_dir: Path
    image: ImageSpec
    hypervisors: tuple[Hypervisor, ...]
    networks: tuple[Network, ...]
    nodes: tuple[Node, ...]
    playbooks: tuple[Path, ...] = ()  # post-boot steps, run in order after the nodes are up
    kubernetes: Kubernetes | None = None  # the cluster of the nodes with Kubernetes roles

    def hypervisor(self, name: str) -> Hypervisor:
        return next(h for h in self.hypervisors if h.name == name)

    def network(self, name: str) -> Network:
        return next(n for n in self.networks if n.name == name)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)


@dataclass(frozen=True)
class SeedFile:
    """A file cloud-init writes (write_files), owned by root. Roles (Kubernetes) add
    their own to the seed, so the type lives here, below both."""

    path: str
    mode: str  # octal text, as cloud-init takes it
    content: str
