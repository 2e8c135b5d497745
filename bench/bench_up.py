"""`provision up` per-phase times and the tool's overhead against the boot floor (by hand only).

The floor is the same golden image, overlay, seed and domain XML started with plain `virsh` in
the same run, timed until cloud-init reports done over OpenSSH. Both runs boot one node on a
bench pool and port, and clean up after themselves.

    .venv/bin/python bench/bench_up.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

from provision.boundary.process import run
from provision.cli import app
from provision.config import inventory as inventory_file
from provision.desired import domain, seediso
from provision.state import workspace

ROOT = Path(__file__).resolve().parent.parent
NODE, PORT, POOL = "pv-bench1", 10222, "provision-bench"


def inventory(tmp: Path) -> Path:
    doc = yaml.safe_load((ROOT / "inventories" / "local.yaml").read_text())
    doc["playbooks"] = [str(ROOT / "playbooks" / "post-boot.yaml")]
    doc["hypervisors"]["local"]["pool_name"] = POOL
    doc["hypervisors"]["local"]["pool_path"] = "/var/lib/provision/pools/bench"
    doc["nodes"] = {NODE: {"ssh_port": PORT}}
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def provision_up(inv: Path) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "provision.cli", "up", "-i", str(inv), "--json", "--no-verify"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = time.perf_counter() - t0
    phases: dict[str, float] = defaultdict(float)
    for line in out.splitlines():
        e = json.loads(line)
        if e.get("status") == "done" and e.get("elapsed") is not None:
            phases[f"{e['node']}:{e['phase']}"] += e["elapsed"]
    return total, dict(phases)


def down(inv: Path) -> None:
    run([sys.executable, "-m", "provision.cli", "down", "-i", inv, "--nodes", NODE])
    for vol in (f"{NODE}.qcow2", f"{NODE}-seed.img"):
        run(["virsh", "vol-delete", "--pool", POOL, vol], check=False)


def virsh_floor(inv_path: Path, tmp: Path) -> float:
    """Same artifacts, started by hand: overlay, seed upload, define, start, cloud-init done."""
    inv = inventory_file.load(inv_path)
    rendered, _ = workspace.render_inventory(inv, inv.nodes, create_keys=True)
    r = rendered.nodes[0]
    (tmp / "vol.xml").write_text(r.overlay_xml)
    (tmp / "dom.xml").write_text(r.domain_xml)
    seed = seediso.write_seed(tmp / "seed.img", r.seed)
    (tmp / "seed.xml").write_text(
        domain.raw_volume_xml(domain.seed_volume(r.node), seed.stat().st_size)
    )
    cfg = tmp / "ssh_config"
    cfg.write_text(app.ssh_config(inv, inv.nodes))
    t0 = time.perf_counter()
    run(["virsh", "vol-create", POOL, tmp / "vol.xml"])
    run(["virsh", "vol-create", POOL, tmp / "seed.xml"])
    run(["virsh", "vol-upload", "--pool", POOL, domain.seed_volume(r.node), seed])
    run(["virsh", "define", tmp / "dom.xml"])
    run(["virsh", "start", NODE])
    while True:
        probe = run(
            [
                "ssh",
                "-F",
                cfg,
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                NODE,
                "cloud-init",
                "status",
                "--wait",
            ],
            check=False,
            timeout=900,
        )
        if probe.returncode == 0:
            break
        time.sleep(1)
    return time.perf_counter() - t0


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        inv = inventory(tmp)
        down(inv)
        total, phases = provision_up(inv)  # first run also uploads the golden image: not timed
        down(inv)
        total, phases = provision_up(inv)
        down(inv)
        floor = virsh_floor(inv, tmp)
        down(inv)
        run(["virsh", "vol-delete", "--pool", POOL, f"{NODE}.qcow2"], check=False)
    for name, seconds in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"{name:<28} {seconds:8.2f} s")
    print(f"provision up (boot to cloud-init done, incl. image check): {total:8.1f} s")
    print(f"plain virsh, same artifacts:                                {floor:8.1f} s")
    print(f"overhead: {100 * (total - floor) / floor:+.1f}%  (target: within 10%)")


if __name__ == "__main__":
    main()
