"""Render everything a run would create, per node: pure, from inventory + image ref + keys.

`provision render` writes it for review; `plan` and `up` compare and apply the same objects.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from provision.baseline import hardening
from provision.config import settings
from provision.core import privfs
from provision.core.model import Accel, Hypervisor, Inventory, Network, NetworkMode, Node
from provision.core.secret import Secret
from provision.desired import domain, policy, seed
from provision.desired.golden import UNRESOLVED, GoldenRef
from provision.desired.hostkeys import KeyPair
from provision.kubernetes import k8s_seed


@dataclass(frozen=True)
class NodeRender:
    node: Node
    hypervisor: Hypervisor
    network: Network
    accel: Accel
    meta: domain.NodeMeta
    domain_xml: str  # first boot: with the NoCloud seed disk
    booted_xml: str  # every later definition: the seed is gone after first boot
    overlay_xml: str
    seed: seed.Seed
    host_key_public: str

    @property
    def ssh_address(self) -> tuple[str, int]:
        """Where SSH answers: the loopback forward (user mode) or the static address."""
        if self.network.mode is NetworkMode.USER:
            assert self.node.ssh_port is not None
            return ("127.0.0.1", self.node.ssh_port)
        assert self.node.address is not None
        return (self.node.address.split("/")[0], 22)


@dataclass(frozen=True)
class Rendered:
    inventory: Inventory
    golden: GoldenRef
    nodes: tuple[NodeRender, ...]

    def pools(self) -> dict[str, str]:
        used = {r.hypervisor.name: r.hypervisor for r in self.nodes}
        return {name: domain.pool_xml(hv) for name, hv in sorted(used.items())}

    def networks(self) -> dict[str, str]:
        used = {
            r.network.name: r.network for r in self.nodes if r.network.mode is NetworkMode.BRIDGE
        }
        return {name: domain.network_xml(net) for name, net in sorted(used.items())}


def templates_digest() -> str:
    """Seed templates are part of the desired state: editing one changes every spec hash."""
    h = hashlib.sha256()
    # Top-level templates are every node's; subdirectories (k8s/) belong to roles, whose nodes
    # hash them with their own seed inputs. Only *.j2: the package's __init__.py is no template.
    names = sorted(p.name for p in seed.TEMPLATES.iterdir() if p.is_file())
    for name in (n for n in names if n.endswith(".j2")):
        h.update(name.encode() + b"\0" + seed.TEMPLATES.joinpath(name).read_bytes() + b"\0")
    return h.hexdigest()


def spec_hash(
    node: Node,
    hypervisor: Hypervisor,
    network: Network,
    golden: GoldenRef,
    host_key_public: str,
    admin_keys: tuple[str, ...],
    templates: str,
    verifier_key: str,
) -> str:
    """Hash of the node's desired state (never of secrets): what `plan` compares."""
    doc = {
        # Waivers and drift ignores judge the node, not build it: editing one changes nothing.
        "node": {k: v for k, v in asdict(node).items() if k not in JUDGING},
        "pool": [hypervisor.pool_name, hypervisor.pool_path],
        "network": asdict(network),
        "golden": asdict(golden),
        "cmdline": hardening.kernel_cmdline(node),
        "host_key": host_key_public,
        "admin_keys": list(admin_keys),
        "verifier_key": verifier_key,
        "templates": templates,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


JUDGING = frozenset({"waivers", "drift_ignores"})

# Node fields that never reach the seed, as the settings table's rows say (seed=False); every other
# field does, so a new setting counts as seed until its row says otherwise and an unknown change
# errs towards recreate.
NOT_IN_SEED = settings.NODE.outside_seed


def policy_fields(
    inventory: str,
    node: Node,
    network: Network,
    golden: GoldenRef,
    accel: Accel,
    bare_domain_xml: str,
    seed_inputs: dict[str, object],
) -> tuple[tuple[str, str], ...]:
    """The node's value for every field of the update policy (provision.policy.POLICY)."""
    node_seed = {k: v for k, v in asdict(node).items() if k not in NOT_IN_SEED}
    return policy.fingerprints(
        {
            "labels": json.dumps(node.labels),
            "memory": str(node.memory_mib),
            "vcpus": str(node.vcpus),
            "accel": accel.value,
            "kernel": f"{golden.kernel_sha256}/{golden.initrd_sha256}",
            "cmdline": hardening.kernel_cmdline(node),
            "ssh-forward": str(node.ssh_port) if network.mode is NetworkMode.USER else "-",
            "data-disk": str(node.data_disk_gib),
            "domain": bare_domain_xml,
            "rootfs": golden.rootfs_sha256 or UNRESOLVED,
            "disk": str(node.disk_gib),
            "seed": json.dumps(
                {
                    "inventory": inventory,
                    "node": node_seed,
                    "network": asdict(network),
                    **seed_inputs,
                },
                sort_keys=True,
                default=str,
            ),
        }
    )


def render(
    inventory: Inventory,
    golden: GoldenRef,
    host_keys: Mapping[str, KeyPair],
    managed_admin_key: str | None,
    accels: Mapping[str, Accel],
    nodes: tuple[Node, ...] | None = None,
    *,
    verifier_key: str,
) -> Rendered:
    """Render the given nodes (all by default). `accels` maps hypervisor -> resolved kvm/qemu.

    `verifier_key` is the public key the verification suite logs in with (account
    hardening.VERIFIER_USER).
    """
    templates = templates_digest()
    out = []
    for node in nodes if nodes is not None else inventory.nodes:
        hv = inventory.hypervisor(node.hypervisor)
        net = inventory.network(node.network)
        key = host_keys[node.name]
        admin_keys = node.admin.ssh_keys
        if node.admin.managed_key and managed_admin_key:
            admin_keys = (*admin_keys, managed_admin_key)
        digest = spec_hash(node, hv, net, golden, key.public, admin_keys, templates, verifier_key)
        accel = accels[hv.name]
        cmdline = hardening.kernel_cmdline(node)
        role_files = k8s_seed.seed_files(inventory, node)
        fields = policy_fields(
            inventory.name,
            node,
            net,
            golden,
            accel,
            domain.domain_xml(node, hv, net, golden, accel, cmdline, None, with_seed=False),
            {
                "host_key": key.public,
                "admin_keys": list(admin_keys),
                "verifier_key": verifier_key,
                "templates": templates,
                # Role files are seed content: a changed manifest or script means a new seed.
                "role_files": [(f.path, f.mode, f.content) for f in role_files],
            },
        )
        meta = domain.node_meta(inventory.name, node, golden, digest, key.fingerprint, fields)
        out.append(
            NodeRender(
                node=node,
                hypervisor=hv,
                network=net,
                accel=accel,
                meta=meta,
                domain_xml=domain.domain_xml(node, hv, net, golden, accel, cmdline, meta),
                booted_xml=domain.domain_xml(
                    node,
                    hv,
                    net,
                    golden,
                    accel,
                    cmdline,
                    meta,
                    with_seed=False,
                ),
                overlay_xml=domain.overlay_volume_xml(node, hv, golden),
                seed=seed.render_seed(
                    inventory.name,
                    node,
                    net,
                    key,
                    admin_keys,
                    f"{node.name}-{digest[:12]}",
                    verifier_key,
                    role_files,
                    k8s_seed.private_dirs(inventory, node),
                ),
                host_key_public=key.public,
            )
        )
    return Rendered(inventory, golden, tuple(out))


def known_hosts(rendered: Rendered) -> str:
    """OpenSSH known_hosts pinning each node's generated host key at its SSH address."""
    lines = []
    for r in rendered.nodes:
        host, port = r.ssh_address
        name = host if port == 22 else f"[{host}]:{port}"
        key_type, key_b64 = r.host_key_public.split()[:2]
        lines.append(f"{name} {key_type} {key_b64}")
    return "\n".join(lines) + "\n"


def write(rendered: Rendered, outdir: Path) -> list[Path]:
    """Write every artifact for review. Files holding secrets are created 0600 in a 0700 folder.

    `outdir` and the folders below it must be ours and writable by nobody else (core.privfs), and
    every file is replaced through a fresh name: a planted `.tmp` or symlink there can neither
    capture a host key nor redirect a write onto another file.
    """
    written: list[Path] = []

    def put(path: Path, content: str | Secret) -> None:
        secret = isinstance(content, Secret)
        privfs.ensure_dir(path.parent, 0o700 if secret else 0o755)
        data = content.reveal() if isinstance(content, Secret) else content
        privfs.write_file(path, data.encode(), 0o600 if secret else 0o644)
        written.append(path)

    privfs.ensure_dir(outdir, 0o755)
    for r in rendered.nodes:
        d = outdir / r.node.name
        put(d / "domain.xml", r.domain_xml)
        put(d / "volume.xml", r.overlay_xml)
        privfs.ensure_dir(d / "seed", 0o700)
        for name, content in r.seed.files().items():
            put(d / "seed" / name, content)
    for name, xml in rendered.pools().items():
        put(outdir / "pools" / f"{name}.xml", xml)
    for name, xml in rendered.networks().items():
        put(outdir / "networks" / f"{name}.xml", xml)
    put(outdir / "known_hosts", known_hosts(rendered))
    return written
