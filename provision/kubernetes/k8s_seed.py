"""What a Kubernetes node's seed adds: the rendered cluster files, the pinned checksums, the
manifests and the on-node bootstrap scripts (cloudinit/k8s/). Pure.

Nothing here is a secret: the encryption key, join token and CA hash are placeholders that the
on-node scripts fill (cloudinit/k8s/init, join). Node-specific values come from the inventory.
"""

from __future__ import annotations

import ipaddress
from importlib.resources import files
from importlib.resources.abc import Traversable

from provision.core.model import Inventory, Network, NetworkMode, Node, Role, SeedFile
from provision.kubernetes import k8s_bundle, k8s_config, k8s_manifests, k8s_pins

# Package data of provision.cloudinit (the top-level cloudinit/k8s/), read through
# importlib.resources like the seed templates.
SCRIPTS_SRC: Traversable = files("provision.cloudinit") / "k8s"
SCRIPTS_DIR = "/usr/local/libexec/provision/k8s"
ETC = "/etc/provision/k8s"
SCRIPTS = ("prereqs", "bundle", "init", "join", "policies")
SCRIPT_DATA = ("lib.sh", "kubelet.service", "10-kubeadm.conf")
# QEMU user-mode networking gives every guest this address; its nodes cannot reach each other,
# so a user-mode cluster is a single control-plane node (the local test environment).
USER_MODE_ADDRESS = "10.0.2.15"


def is_k8s(node: Node) -> bool:
    return bool(set(node.roles) & {Role.K8S_CONTROL_PLANE, Role.K8S_WORKER})


def control_plane(inv: Inventory) -> Node:
    """The inventory loader guarantees exactly one when any node has a Kubernetes role."""
    return next(n for n in inv.nodes if Role.K8S_CONTROL_PLANE in n.roles)


def address(node: Node, network: Network) -> str:
    if network.mode is NetworkMode.USER or node.address is None:
        return USER_MODE_ADDRESS
    return str(ipaddress.ip_interface(node.address).ip)


def script(name: str) -> str:
    return (SCRIPTS_SRC / name).read_text(encoding="utf-8")


def private_dirs(inv: Inventory, node: Node) -> tuple[str, ...]:
    """Directories made 0700 root on a Kubernetes node (k8s_config.DIRECTORIES)."""
    if inv.kubernetes is None or not is_k8s(node):
        return ()
    return tuple(d for d, mode in k8s_config.DIRECTORIES if mode == 0o700)


def seed_files(inv: Inventory, node: Node) -> tuple[SeedFile, ...]:
    """The files a Kubernetes node's seed writes, beyond the hardening set; () for other nodes."""
    k8s = inv.kubernetes
    if k8s is None or not is_k8s(node):
        return ()
    cp = control_plane(inv)
    cp_address = address(cp, inv.network(cp.network))
    if Role.K8S_CONTROL_PLANE in node.roles:
        rendered = k8s_config.cluster_files(k8s, node, cp_address)
    else:
        rendered = k8s_config.worker_files(k8s, node, cp_address)
    files = [
        SeedFile(f"{ETC}/version", "0644", k8s.version),
        # Pins for the version; an unpinned version was refused before anything was rendered.
        SeedFile(
            f"{ETC}/pins.sha256",
            "0644",
            k8s_bundle.pins_sha256(k8s_pins.pins_for(k8s.version)).rstrip("\n"),
        ),
    ]
    for name, text in rendered.items():
        place = k8s_config.PLACEMENTS[name]
        files.append(SeedFile(place.path, f"{place.mode:04o}", text.rstrip("\n")))
    if Role.K8S_CONTROL_PLANE in node.roles:
        files.append(
            SeedFile(
                f"{ETC}/manifests/workloads.yaml",
                "0600",
                k8s_manifests.to_yaml(k8s_manifests.manifests(k8s)).rstrip("\n"),
            )
        )
    files += [SeedFile(f"{SCRIPTS_DIR}/{s}", "0755", script(s).rstrip("\n")) for s in SCRIPTS]
    files += [SeedFile(f"{SCRIPTS_DIR}/{s}", "0644", script(s).rstrip("\n")) for s in SCRIPT_DATA]
    return tuple(files)
