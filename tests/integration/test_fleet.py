"""Two real nodes on a real libvirtd: parallel bring-up, run locks, and the update policy.

One `up` boots both nodes concurrently; while it runs, a second `up` is refused (the run lock) and
a third waits for the lock. Then each update class is applied to the booted nodes: labels in
place, memory by a reboot, a seed change by a recreate that keeps the data disk. Before those,
`provision drift` of the fresh fleet (clean), of changes on both layers (and `up` repairing the
definition: a reboot), and with one node's sshd stopped. Five guest boots in all (two concurrent,
two reboots, one recreate). Tests run in file order.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest
import yaml

from provision.boundary import ssh
from provision.config import inventory
from provision.state import workspace

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("PROVISION_TEST_STATE", "/var/lib/provision-test"))
POOL = "provision-fleet"
A, B = "pv-fl-a", "pv-fl-b"
CLI = [sys.executable, "-m", "provision.cli"]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.stdout.splitlines() if x.startswith('{"t"')]


def provision(*args: str) -> Run:
    p = subprocess.run([*CLI, *args], capture_output=True, text=True, check=False, timeout=2400)
    return Run(p.returncode, p.stdout, p.stderr)


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "inventories" / "local.yaml").read_text())
    doc["name"] = "fleet-it"
    doc["state_dir"] = str(STATE)
    doc["hypervisors"]["local"]["pool_name"] = POOL
    doc["hypervisors"]["local"]["pool_path"] = str(STATE / "fleet-pool")
    # Light nodes: the policy and concurrency are under test, not Docker (test_lifecycle has it).
    doc["defaults"].update({"docker": "none", "memory_mib": 1024})
    doc["nodes"] = {A: {"ssh_port": 10131}, B: {"ssh_port": 10132, "data_disk_gib": 1}}
    doc["playbooks"] = [str(ROOT / "playbooks" / "post-boot.yaml")]
    return doc


class Fleet:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.doc = _doc()
        self.write()

    def write(self) -> None:
        self.path.write_text(yaml.safe_dump(self.doc, sort_keys=False))

    def run(self, *args: str) -> Run:
        return provision(*args, "-i", str(self.path))

    def plan(self) -> dict[str, dict[str, Any]]:
        run = self.run("plan", "--json")
        assert run.returncode == 0, run.stderr
        return {p["node"]: p for p in json.loads(run.stdout)["nodes"]}

    def sh(self, node: str, *argv: str) -> str:
        inv = inventory.load(self.path)
        rendered, _ = workspace.render_inventory(inv, (inv.node(node),))
        with ssh.connect(workspace.ssh_target(inv, rendered.nodes[0])) as s:
            return s.run(list(argv)).stdout.strip()

    def boot_id(self, node: str) -> str:
        return self.sh(node, "cat", "/proc/sys/kernel/random/boot_id")


@dataclass
class Bringup:
    first: Run
    refused: Run
    waited: Run


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, golden_image: object) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("fleet") / "fleet-it.yaml")
    f.run("down", "--purge")  # whatever an aborted earlier run left
    yield f
    f.run("down", "--purge")


@pytest.fixture(scope="module")
def bringup(fleet: Fleet) -> Bringup:
    """Both nodes in one parallel `up`; a second `up` while it runs, and a third that waits."""
    first = subprocess.Popen(
        [*CLI, "up", "-i", str(fleet.path), "--json", "--no-verify", "--parallel", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert first.stdout is not None and first.stderr is not None
    lines = []
    for line in first.stdout:
        lines.append(line)
        e = json.loads(line)
        if (e.get("phase"), e.get("status")) == ("plan", "done"):
            break  # the run locks are held from before the plan until the end
    refused = fleet.run("up", "--no-verify")
    waiter = subprocess.Popen(
        [*CLI, "up", "-i", str(fleet.path), "--no-verify", "--wait-lock", "2400", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rest, err = first.communicate(timeout=2400)
    out_w, err_w = waiter.communicate(timeout=2400)
    return Bringup(
        Run(first.returncode, "".join(lines) + rest, err),
        refused,
        Run(waiter.returncode, out_w, err_w),
    )


def _intervals(events: list[dict[str, Any]], phase: str) -> list[tuple[str, str, float, float]]:
    """(node, detail, start, end) of every completed phase, by matching start and done events."""
    open_: dict[tuple[str, str], float] = {}
    out = []
    for e in events:
        key = (e["node"], e["phase"])
        if e["phase"] != phase:
            continue
        if e["status"] == "start":
            open_[key] = e["t"]
        elif e["status"] == "done":
            out.append((e["node"], e["detail"], open_.pop(key), e["t"]))
    return out


def test_both_nodes_come_up(bringup: Bringup) -> None:
    assert bringup.first.returncode == 0, bringup.first.stderr
    summary = json.loads(bringup.first.stdout.splitlines()[-1])
    assert sorted(summary["changed"]) == [A, B] and summary["failed"] == []


def test_boots_overlap_and_pool_operations_never_do(bringup: Bringup) -> None:
    events = bringup.first.events()
    # A node's boot: from its start phase to the end of its first boot.
    boot = {}
    for node in (A, B):
        starts = [e["t"] for e in events if (e["node"], e["phase"]) == (node, "start")]
        ends = [
            e["t"]
            for e in events
            if (e["node"], e["phase"], e["status"]) == (node, "first-boot-done", "done")
        ]
        boot[node] = (min(starts), max(ends))
    (a0, a1), (b0, b1) = boot[A], boot[B]
    overlap = min(a1, b1) - max(a0, b0)
    assert overlap > 0, boot
    pool_ops = sorted(_intervals(events, "pool"), key=lambda x: x[2])
    assert {n for n, *_ in pool_ops} >= {A, B, "*"}, pool_ops
    for (n1, d1, s1, e1), (n2, d2, s2, _) in itertools.pairwise(pool_ops):
        assert e1 <= s2, f"pool operations overlap: {n1} {d1} [{s1}, {e1}] and {n2} {d2} [{s2}]"
    print(f"\nboots overlapped {overlap:.0f}s; {len(pool_ops)} pool operations, none overlapping")


def test_second_up_is_refused_while_the_first_runs(bringup: Bringup) -> None:
    r = bringup.refused
    assert r.returncode == 3, r.stderr
    assert "inventory fleet-it on hypervisor local is locked by pid" in r.stderr, r.stderr
    assert "--wait-lock" in r.stderr and "Traceback" not in r.stderr


def test_a_waiting_up_runs_after_the_lock_is_released_and_changes_nothing(
    bringup: Bringup,
) -> None:
    w = bringup.waited
    assert w.returncode == 0, w.stderr
    waits = [e for e in w.events() if e["phase"] == "lock"]
    assert waits and "waiting up to" in waits[0]["detail"], w.stdout[:2000]
    assert sorted(json.loads(w.stdout.splitlines()[-1])["unchanged"]) == [A, B]


def test_plan_after_up_is_nothing(fleet: Fleet, bringup: Bringup) -> None:
    assert {n: p["action"] for n, p in fleet.plan().items()} == {A: "nothing", B: "nothing"}


def test_playbook_steps_ran_after_first_boot_and_plan_shows_them_done(
    fleet: Fleet, bringup: Bringup
) -> None:
    events = bringup.first.events()
    played = [e for e in events if e["phase"] == "playbook"]
    assert {e["node"] for e in played} == {A, B}, played
    # A step finishes on every node before the next step starts anywhere.
    order = [(e["detail"].split()[0], e["node"]) for e in played if " start" not in e["detail"]]
    steps = [step for step, _ in order]
    assert steps == sorted(steps, key=steps.index), order
    assert "managed by provision" in fleet.sh(A, "cat", "/etc/motd")
    run = fleet.run("plan", "--json")
    rows = json.loads(run.stdout)["playbooks"]
    assert rows and {r["status"] for r in rows if r["status"] != "wait"} == {"ok"}, rows
    # The waiting second `up` ran the checks only.
    assert not [e for e in bringup.waited.events() if "applied" in e.get("detail", "")]


def _drift(fleet: Fleet, *args: str) -> tuple[Run, dict[str, Any]]:
    run = fleet.run("drift", "--json", *args)
    assert run.returncode in (0, 2, 3), run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    return run, json.loads(run.stdout)


def _keys(doc: dict[str, Any], node: str) -> set[tuple[str, str]]:
    return {(i["layer"], i["key"]) for i in doc["items"] if i["node"] == node}


def test_drift_of_a_fresh_fleet_is_clean(fleet: Fleet, bringup: Bringup) -> None:
    """No false positives: every catalogue id, file, package, rule and definition field of two
    nodes just built, from libvirt (read-only) and the verifier's snapshot."""
    run, doc = _drift(fleet)
    assert run.returncode == 0, run.stdout[-4000:]
    assert doc["items"] == [] and doc["unreachable"] == [], run.stdout[-4000:]
    assert sorted(doc["nodes"]) == [A, B]
    assert set(doc["seconds"]) >= {A, B, "local"}  # both nodes and the hypervisor were compared


def test_drift_reports_each_change_on_its_layer_and_up_repairs_the_definition(
    fleet: Fleet, bringup: Bringup, conn: libvirt.virConnect
) -> None:
    dropin = "/etc/ssh/sshd_config.d/10-provision-hardening.conf"
    fleet.sh(A, "sudo", "sysctl", "-q", "-w", "kernel.kptr_restrict=1")
    fleet.sh(A, "sudo", "sh", "-c", f"echo 'X11Forwarding yes' >> {dropin}")
    # A comment only: a rule in it would outrank the admin's NOPASSWD one (the last match wins).
    fleet.sh(A, "sudo", "sh", "-c", "umask 337; echo '# by hand' > /etc/sudoers.d/zz-extra")
    # `virsh setmaxmem --config`: the stored definition changes, the running guest does not.
    flags = libvirt.VIR_DOMAIN_MEM_MAXIMUM | libvirt.VIR_DOMAIN_AFFECT_CONFIG
    conn.lookupByName(A).setMemoryFlags(1280 * 1024, flags)
    junit = fleet.path.with_name("drift.xml")
    try:
        run, doc = _drift(fleet, "--junit", str(junit))
        keys = _keys(doc, A)
        assert run.returncode == 2, run.stdout[-4000:]
        for want in (
            ("guest", "HN-SYS-01"),  # kernel.kptr_restrict, live
            ("guest", f"file:{dropin}"),  # the seed's file, changed
            ("guest", "file:/etc/sudoers.d/zz-extra"),  # nobody's file
            ("hypervisor", "memory"),
        ):
            assert want in keys, (want, sorted(keys))
        assert _keys(doc, B) == set()  # the other node has not drifted
        by_key = {i["key"]: i for i in doc["items"] if i["node"] == A}
        assert (by_key["memory"]["expected"], by_key["memory"]["actual"]) == (
            "1024 MiB",
            "1280 MiB",
        )
        assert by_key["memory"]["fix"] == "provision up"
        assert junit.read_text().count("<failure") == len(doc["items"])
        # The fix the report names for the definition: `up` (plan sees it too).
        assert fleet.plan()[A]["action"] == "reboot"
    finally:  # the guest by hand; the definition (and the live sysctl) by `up`'s reboot
        fleet.sh(A, "sudo", "sh", "-c", f"sed -i '/^X11Forwarding yes$/d' {dropin}")
        fleet.sh(A, "sudo", "rm", "-f", "/etc/sudoers.d/zz-extra")
        up = fleet.run("up", "--no-verify")
    assert up.returncode == 0, up.stderr
    run, doc = _drift(fleet)
    assert run.returncode == 0, run.stdout[-4000:]


def test_drift_reports_an_unreachable_node_and_still_the_others(
    fleet: Fleet, bringup: Bringup
) -> None:
    # sshd stops; a timer brings it back, so no console is needed to repair the node.
    fleet.sh(A, "sudo", "systemd-run", "--on-active=120", "systemctl", "start", "ssh.service")
    fleet.sh(A, "sudo", "systemctl", "stop", "ssh.service")
    junit = fleet.path.with_name("drift-unreachable.xml")
    try:
        run = fleet.run("drift", "--junit", str(junit))  # the table, as cron mails it
        assert run.returncode == 3, run.stdout[-4000:]
        assert "Traceback" not in run.stderr, run.stderr[-3000:]
        lines = run.stdout.splitlines()
        assert [x for x in lines if x.startswith("UNREACHABLE")] == [
            x for x in lines if x.startswith(f"UNREACHABLE {A} (guest): ")
        ]
        assert len([x for x in lines if x.startswith("UNREACHABLE")]) == 1, run.stdout
        assert lines[-1].startswith("drift: 0 items on 0 of 2 nodes, 1 unreachable"), run.stdout
        # B compared clean, and A's definition too: one error, no failure.
        xml = junit.read_text()
        assert xml.count("<error") == 1 and "<failure" not in xml, xml
        assert f'name="{B}"' in xml
    finally:
        inv = inventory.load(fleet.path)
        rendered, _ = workspace.render_inventory(inv, (inv.node(A),))
        ssh.wait_for_ssh(workspace.ssh_target(inv, rendered.nodes[0]), 600).close()


def test_label_change_updates_in_place(fleet: Fleet, bringup: Bringup) -> None:
    before = fleet.boot_id(A)
    fleet.doc["nodes"][A]["labels"] = {"owner": "platform", "env": "local", "tier": "gold"}
    fleet.write()
    p = fleet.plan()
    assert p[A]["action"] == "update" and [c["field"] for c in p[A]["changes"]] == ["labels"]
    assert p[B]["action"] == "nothing"
    run = fleet.run("up", "--no-verify")
    assert run.returncode == 0, run.stderr
    assert fleet.boot_id(A) == before  # not restarted
    assert fleet.plan()[A]["action"] == "nothing"


def test_memory_change_reboots(fleet: Fleet, bringup: Bringup, conn: libvirt.virConnect) -> None:
    before = fleet.boot_id(A)
    fleet.doc["nodes"][A]["memory_mib"] = 1280
    fleet.write()
    p = fleet.plan()[A]
    assert p["action"] == "reboot", p
    assert {"field": "memory", "action": "reboot", "old": "1024", "new": "1280"} in p["changes"]
    run = fleet.run("up", "--no-verify", "--json")
    assert run.returncode == 0, run.stderr
    phases = {(e["node"], e["phase"]) for e in run.events() if e["status"] == "done"}
    assert {(A, "redefine"), (A, "shutdown"), (A, "start"), (A, "ssh")} <= phases
    assert not {ph for n, ph in phases if n == B} & {"redefine", "shutdown", "start"}
    assert fleet.boot_id(A) != before
    assert conn.lookupByName(A).maxMemory() == 1280 * 1024
    assert fleet.plan()[A]["action"] == "nothing"


def test_seed_change_needs_replace_and_keeps_the_data_disk(fleet: Fleet, bringup: Bringup) -> None:
    marker = f"provision-data-{time.time_ns()}"
    fleet.sh(B, "sudo", "sh", "-c", f"printf {marker} | dd of=/dev/vdc conv=fsync status=none")
    fleet.sh(B, "sudo", "touch", "/var/tmp/on-the-old-root-disk")
    before = fleet.boot_id(B)
    fleet.doc["nodes"][B]["sysctl"] = {"vm.swappiness": "7"}
    fleet.write()
    p = fleet.plan()[B]
    assert p["action"] == "recreate" and [c["field"] for c in p["changes"]] == ["seed"], p

    refused = fleet.run("up", "--no-verify")
    assert refused.returncode == 1, refused.stderr
    assert "--replace" in refused.stderr and "nothing was changed" in refused.stderr
    assert fleet.boot_id(B) == before

    run = fleet.run("up", "--no-verify", "--replace", "--json")
    assert run.returncode == 0, run.stderr
    phases = {(e["node"], e["phase"]) for e in run.events() if e["status"] == "done"}
    assert (B, "replace") in phases and (B, "cloud-init") in phases
    assert not {ph for n, ph in phases if n == A} & {"replace", "start"}
    assert fleet.sh(B, "cat", "/proc/sys/vm/swappiness") == "7"
    absent = fleet.sh(B, "sh", "-c", "test -e /var/tmp/on-the-old-root-disk; echo $?")
    assert absent == "1"  # a new root disk
    data = fleet.sh(B, "sudo", "dd", "if=/dev/vdc", f"bs={len(marker)}", "count=1", "status=none")
    assert data == marker  # the data disk is the same one
    assert fleet.plan()[B]["action"] == "nothing"


def test_down_keeps_the_data_disk_and_purge_deletes_it(
    fleet: Fleet, bringup: Bringup, conn: libvirt.virConnect
) -> None:
    run = fleet.run("down", "--nodes", B)
    assert run.returncode == 0, run.stderr
    pool = conn.storagePoolLookupByName(POOL)
    pool.refresh(0)
    assert {f"{B}.qcow2", f"{B}-data.qcow2"} <= set(pool.listVolumes())
    run = fleet.run("down", "--purge")
    assert run.returncode == 0, run.stderr
    pool.refresh(0)
    assert pool.listVolumes() == []


@pytest.fixture(scope="module")
def conn() -> Iterator[libvirt.virConnect]:
    c = libvirt.open("qemu:///system")
    yield c
    c.close()
