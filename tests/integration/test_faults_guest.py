"""Issue #15, outside faults: cloud-init failing inside a real guest (one boot).

The fault is one a user can make: a sysctl override the inventory accepts (the key exists, the
value is a number) and the guest's kernel refuses (vm.swappiness is 0-200 on 6.1), so the
node's hardening script fails inside cloud-init. `up` must exit non-zero with one line that
names the node, carries what the guest reported and the next step, and leave the node and the
other node of the inventory as they are (nothing deleted).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
import yaml

from provision.boundary import ssh
from provision.config import inventory
from provision.state import workspace

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
POOL = "provision-fb"
# Outside /tmp/pytest-of-root (0700): QEMU runs as libvirt-qemu and must reach the pool.
POOL_PATH = Path("/var/lib/provision-fb/pool")
BAD, OK = "pv-fb-bad", "pv-fb-ok"
CLI = [sys.executable, "-m", "provision.cli"]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Site:
    path: Path
    up: Run  # the failing `up` of BAD

    def run(self, *args: str) -> Run:
        return provision(*args, "-i", str(self.path))

    def guest(self, *argv: str) -> str:
        inv = inventory.load(self.path)
        rendered, _ = workspace.render_inventory(inv, (inv.node(BAD),))
        with ssh.connect(workspace.ssh_target(inv, rendered.nodes[0])) as s:
            return s.run(list(argv), check=False).stdout


def provision(*args: str) -> Run:
    p = subprocess.run([*CLI, *args], capture_output=True, text=True, check=False, timeout=2400)
    return Run(p.returncode, p.stdout, p.stderr)


def _doc(state: Path) -> dict[str, object]:
    doc: dict[str, object] = yaml.safe_load((ROOT / "inventories" / "local.yaml").read_text())
    doc["name"] = "faults-fb"
    doc["state_dir"] = str(state)
    hv = doc["hypervisors"]["local"]  # type: ignore[index]
    hv.update({"pool_name": POOL, "pool_path": str(POOL_PATH)})
    doc["defaults"].update({"docker": "none", "memory_mib": 1024})  # type: ignore[attr-defined]
    doc["playbooks"] = []
    doc["nodes"] = {
        BAD: {"ssh_port": 10321, "sysctl": {"vm.swappiness": "500"}},
        OK: {"ssh_port": 10322},
    }
    return doc


def _cleanup(path: Path) -> None:
    provision("down", "--purge", "-i", str(path))
    for verb in ("pool-destroy", "pool-undefine"):
        subprocess.run(["virsh", "-c", "qemu:///system", verb, POOL], capture_output=True)
    shutil.rmtree(POOL_PATH.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, golden_dir: Path) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("faults-guest")
    state = tmp / "state"
    # The cached golden image, copied (never built, never touched where it is cached).
    shutil.copytree(golden_dir, state / "images" / golden_dir.name)
    path = tmp / "faults-fb.yaml"
    path.write_text(yaml.safe_dump(_doc(state), sort_keys=False))
    _cleanup(path)  # whatever an aborted earlier run left
    try:
        defined = provision("up", "--no-start", "--no-verify", "-i", str(path))
        assert defined.returncode == 0, defined.stderr
        up = provision("up", "--nodes", BAD, "--no-verify", "-i", str(path))
        yield Site(path, up)
    finally:
        _cleanup(path)


def _volumes() -> set[str]:
    conn = libvirt.open("qemu:///system")
    try:
        pool = conn.storagePoolLookupByName(POOL)
        pool.refresh()
        return set(pool.listVolumes())
    finally:
        conn.close()


def _domain(name: str) -> tuple[int, str]:
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByName(name)
        return dom.state()[0], dom.XMLDesc()
    finally:
        conn.close()


def test_cloud_init_failure_is_one_line_naming_the_node_what_failed_and_the_next_step(
    site: Site,
) -> None:
    up = site.up
    print(up.stderr)  # the report quotes it
    assert up.returncode == 1, up.stdout + up.stderr
    errors = [line for line in up.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, up.stderr
    line = errors[0]
    assert line.startswith(f"error: {BAD}: cloud-init failed in the guest: "), line
    # What the guest itself reported: the failed module, from result.json, and the kernel's
    # refusal the hardening script printed.
    reported = json.loads(site.guest("sudo", "cat", "/run/cloud-init/result.json"))
    assert reported["v1"]["errors"], reported
    for error in reported["v1"]["errors"]:
        assert str(error) in line, (error, line)
    assert "swappiness" in line, line
    assert f"`provision up --replace --nodes {BAD}`" in line, line
    assert "private host key" in line, line  # the seed that stays attached is named


def test_a_failed_first_boot_deletes_nothing_and_leaves_the_other_node_as_it_was(
    site: Site,
) -> None:
    state, xml = _domain(BAD)
    assert state == libvirt.VIR_DOMAIN_RUNNING  # left for the operator to look at
    assert f"{BAD}-seed.img" in xml  # first boot unfinished: the seed is still attached
    assert {f"{BAD}.qcow2", f"{BAD}-seed.img", f"{OK}.qcow2", f"{OK}-seed.img"} <= _volumes()
    assert _domain(OK)[0] == libvirt.VIR_DOMAIN_SHUTOFF
    status = site.run("status")
    assert status.returncode == 0, status.stderr
    assert any(line.split()[:1] == [OK] for line in status.stdout.splitlines()), status.stdout
