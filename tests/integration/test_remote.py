"""A "remote" hypervisor reached over SSH with a pinned host key: the real libvirtd of this machine
behind a throwaway sshd on 127.0.0.1, so every libvirt call really travels through ssh (or
libssh) and virt-ssh-helper on the far side, and sshd's log proves it.

The node is only defined (`up --no-start`), never booted: what is under test is the transport.
Tests run in file order; a finalizer removes the domain, the volumes and the pool whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
import yaml

from provision.desired import hostkeys
from tests.sshd import Sshd, running_sshd

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("PROVISION_TEST_STATE", "/var/lib/provision-test"))
INVENTORY_NAME = "remote-it"
NODE = "pv-rt-node1"
LOCAL_NODE = "pv-rt-node2"  # the second hypervisor's node (local URI)
POOL = "provision-remote-it"
LOCAL_POOL = "provision-remote-it-local"
POOL_PATH = STATE / "remote-pool"
PORT = 10190
PROVISION = Path(sys.executable).parent / "provision"  # the venv's console script


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def provision(*args: str) -> Run:
    p = subprocess.run(
        [PROVISION, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
        # No controlling terminal: if anything ever asked whether to trust a host key, it must
        # fail at once rather than wait for an answer.
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    return Run(p.returncode, p.stdout, p.stderr)


def write_inventory(path: Path, uri: str, known_hosts: Path, identity: Path) -> Path:
    """The shipped local inventory, moved onto the remote hypervisor and a test pool and node."""
    doc = yaml.safe_load((ROOT / "inventories" / "local.yaml").read_text())
    doc.pop("playbooks", None)  # nothing boots here
    doc["name"] = INVENTORY_NAME
    doc["state_dir"] = str(STATE)  # shares the golden image built by the other integration tests
    doc["hypervisors"] = {
        "remote": {
            "uri": uri,
            "pool_name": POOL,
            "pool_path": str(POOL_PATH),
            "accel": "auto",
            "require_nvme": False,
            "known_hosts": str(known_hosts),
            "identity_file": str(identity),
        }
    }
    doc["defaults"]["hypervisor"] = "remote"
    doc["nodes"] = {NODE: {"ssh_port": PORT}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _cleanup() -> None:
    """Remove what this module may have created, through the local socket (not the transport)."""
    conn = libvirt.open("qemu:///system")
    try:
        for node in (NODE, LOCAL_NODE):
            try:
                dom = conn.lookupByName(node)
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        for name in (POOL, LOCAL_POOL):
            try:
                pool = conn.storagePoolLookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
                continue
            if not pool.isActive():
                pool.create(0)
            pool.refresh(0)
            for vol in pool.listAllVolumes(0):
                vol.delete(0)
            pool.destroy()
            try:
                pool.delete(0)  # the (now empty) pool directory
            finally:
                pool.undefine()
    finally:
        conn.close()
    # Keys, known_hosts and the ssh wrapper provision keeps for this inventory; the pools' locks.
    shutil.rmtree(STATE / "inventories" / INVENTORY_NAME, ignore_errors=True)
    for name in (POOL, LOCAL_POOL):
        for lock in (STATE / "locks").glob(f"pool-{name}-*.lock"):
            lock.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with running_sshd(tmp_path_factory.mktemp("remote-sshd")) as server:
        yield server


@pytest.fixture(scope="module", autouse=True)
def clean_slate() -> Iterator[None]:
    _cleanup()  # what an earlier aborted run may have left
    yield
    _cleanup()


def _libssh_missing() -> str | None:
    """Why this libvirt build cannot use qemu+libssh://, or None if it can.

    Probes a closed loopback port: "connection refused" means the transport exists.
    """
    try:
        libvirt.open("qemu+libssh://root@127.0.0.1:1/system?known_hosts=/dev/null").close()
    except libvirt.libvirtError as exc:
        text = str(exc)
        if "not recognised" in text or "not enabled" in text or "not supported" in text:
            return f"this libvirt build has no libssh transport: {text}"
    return None


@pytest.fixture(params=["qemu+ssh", "qemu+libssh"])
def scheme(request: pytest.FixtureRequest) -> str:
    scheme: str = request.param
    if scheme == "qemu+libssh" and (why := _libssh_missing()) is not None:
        pytest.skip(why)
    return scheme


def _uri(scheme: str, sshd: Sshd) -> str:
    return f"{scheme}://root@127.0.0.1:{sshd.port}/system"


def test_plan_goes_through_the_pinned_transport(
    scheme: str, sshd: Sshd, tmp_path: Path, golden_image: object
) -> None:
    inv = write_inventory(
        tmp_path / "inv.yaml", _uri(scheme, sshd), sshd.known_hosts(), sshd.identity
    )
    before = len(sshd.accepted_logins())
    run = provision("plan", "-i", str(inv), "--json")
    assert run.returncode == 0, run.stderr
    assert [(n["node"], n["action"]) for n in json.loads(run.stdout)["nodes"]] == [(NODE, "create")]
    logins = sshd.accepted_logins()[before:]
    assert logins and all("Accepted publickey for root from 127.0.0.1" in x for x in logins), (
        sshd.log_text()
    )


def test_a_wrong_pinned_key_is_refused_in_one_line(
    scheme: str, sshd: Sshd, tmp_path: Path, golden_image: object
) -> None:
    other = hostkeys.generate("not-the-hypervisor").public
    wrong = sshd.known_hosts(other, name=f"wrong_known_hosts_{scheme.replace('+', '_')}")
    inv = write_inventory(tmp_path / "inv.yaml", _uri(scheme, sshd), wrong, sshd.identity)
    before = len(sshd.accepted_logins())
    run = provision("plan", "-i", str(inv), "--json")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ") and "host key" in lines[0], lines[0]
    assert str(wrong) in lines[0]
    assert sshd.accepted_logins()[before:] == [], sshd.log_text()
    assert wrong.read_text().split()[2] == other.split()[1]  # the pin was not rewritten


def test_up_defines_the_node_over_the_transport_without_starting_it(
    sshd: Sshd, tmp_path: Path, golden_image: object
) -> None:
    inv = write_inventory(
        tmp_path / "inv.yaml", _uri("qemu+ssh", sshd), sshd.known_hosts(), sshd.identity
    )
    before = len(sshd.accepted_logins())
    run = provision("up", "--no-start", "-i", str(inv), "--no-verify")
    assert run.returncode == 0, run.stdout + run.stderr
    assert sshd.accepted_logins()[before:], "up did not go through sshd"

    info = subprocess.run(
        ["virsh", "-c", "qemu:///system", "dominfo", NODE],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    state = next(line for line in info.splitlines() if line.startswith("State:"))
    assert state.split(":", 1)[1].strip() == "shut off", info

    plan = provision("plan", "-i", str(inv), "--json")
    assert plan.returncode == 0, plan.stderr
    assert [n["action"] for n in json.loads(plan.stdout)["nodes"]] == ["nothing"], plan.stdout

    down = provision("down", "-i", str(inv), "--purge", "--nodes", NODE)
    assert down.returncode == 0, down.stdout + down.stderr
    gone = subprocess.run(
        ["virsh", "-c", "qemu:///system", "dominfo", NODE],
        capture_output=True,
        text=True,
        check=False,
    )
    assert gone.returncode != 0 and "failed to get domain" in gone.stderr, gone.stderr


def test_one_run_converges_nodes_on_two_hypervisors(
    sshd: Sshd, tmp_path: Path, golden_image: object
) -> None:
    """A remote hypervisor (pinned qemu+ssh) and the local one in one `up`: each gets its pool,
    golden artifacts and node, concurrently, under one run lock per hypervisor."""
    path = write_inventory(
        tmp_path / "inv.yaml", _uri("qemu+ssh", sshd), sshd.known_hosts(), sshd.identity
    )
    doc = yaml.safe_load(path.read_text())
    doc["hypervisors"]["local"] = {
        "uri": "qemu:///system",
        "pool_name": LOCAL_POOL,
        "pool_path": str(STATE / "remote-it-local-pool"),
    }
    doc["nodes"][LOCAL_NODE] = {"ssh_port": PORT + 1, "hypervisor": "local"}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))

    run = provision("up", "--no-start", "-i", str(path), "--no-verify", "--json")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    events = [json.loads(x) for x in run.stdout.splitlines() if x.startswith('{"t"')]
    prepared = {e["detail"] for e in events if e["phase"] == "preflight" and e["status"] == "done"}
    assert prepared == {"remote", "local"}, prepared
    defined = {e["node"] for e in events if e["phase"] == "define" and e["status"] == "done"}
    assert defined == {NODE, LOCAL_NODE}
    locks = sorted(p.name for p in (STATE / "inventories" / INVENTORY_NAME / "locks").iterdir())
    assert locks == ["local.lock", "remote.lock"]

    plan = provision("plan", "-i", str(path), "--json")
    assert {n["node"]: n["action"] for n in json.loads(plan.stdout)["nodes"]} == {
        NODE: "nothing",
        LOCAL_NODE: "nothing",
    }
    down = provision("down", "-i", str(path), "--purge")
    assert down.returncode == 0, down.stdout + down.stderr
