"""Deterministic inputs for unit tests: fixed keys, a resolved golden ref, rendering helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from provision.config import inventory
from provision.core.model import Accel, Inventory
from provision.desired import hostkeys, render
from provision.desired.golden import GoldenRef

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / "inventories" / "local.yaml"
OSLO = ROOT / "inventories" / "oslo.yaml"

GOLDEN = GoldenRef(
    image_id="1" * 64,
    rootfs_sha256="a" * 64,
    kernel_sha256="b" * 64,
    initrd_sha256="c" * 64,
    kernel_version="6.1.0-99-cloud-amd64",
)
UNBUILT = GoldenRef("1" * 64, None, None, None, None)
ADMIN_KEY = hostkeys.from_private_bytes(b"\xaa" * 32, "provision@test")
VERIFIER_KEY = hostkeys.from_private_bytes(b"\xbb" * 32, "verifier@test")


def keys_for(inv: Inventory) -> dict[str, hostkeys.KeyPair]:
    """One fixed host key per node (seeded by its position) so golden files are stable."""
    return {
        n.name: hostkeys.from_private_bytes(bytes([i + 1]) * 32, n.name)
        for i, n in enumerate(inv.nodes)
    }


def render_inv(
    inv: Inventory, golden: GoldenRef = GOLDEN, accel: Accel = Accel.QEMU
) -> render.Rendered:
    return render.render(
        inv,
        golden,
        keys_for(inv),
        ADMIN_KEY.public,
        {h.name: accel for h in inv.hypervisors},
        verifier_key=VERIFIER_KEY.public,
    )


def load_text(tmp_path: Path, text: str, name: str = "inv.yaml") -> Inventory:
    path = tmp_path / name
    path.write_text(text)
    return inventory.load(path)


def run_cli(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as users run it: a fresh process, from the repository root."""
    env = dict(os.environ)
    if home is not None:
        env["HOME"] = str(home)  # oslo.yaml keeps its state under ~
    return subprocess.run(
        [sys.executable, "-m", "provision.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=env,
    )


def loopback_inventory_text(name: str, state: Path, pool: str, ports: dict[str, int]) -> str:
    """A minimal inventory on libvirt's test driver: `ports` maps each node to its loopback port."""
    nodes = "".join(f"  {n}:\n    ssh_port: {port}\n" for n, port in ports.items())
    return (
        f"name: {name}\n"
        f"state_dir: {state}\n"
        "image: {name: bookworm-node, suite: bookworm, kernel_flavour: cloud-amd64}\n"
        "hypervisors:\n"
        "  local:\n"
        "    uri: test:///default\n"
        f"    pool_name: {pool}\n"
        f"    pool_path: {state}/pool\n"
        "    accel: qemu\n"
        "networks:\n  loopback: {mode: user}\n"
        "defaults:\n"
        "  hypervisor: local\n"
        "  network: loopback\n"
        "  admin: {name: ops, managed_key: true}\n"
        f"nodes:\n{nodes}"
    )
