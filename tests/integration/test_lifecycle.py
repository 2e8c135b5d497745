"""One real node, end to end: `up` on a real libvirtd with QEMU (TCG here) from our golden image.

Guest boots are the expensive part (~50 s each under TCG), so one node is shared by the whole
module: read-only checks first, then re-runs and fault tests, then `down`, a re-`up` from the kept
disk, and finally `down --purge`. Tests run in file order.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
import yaml

from provision.boundary import hypervisor, ssh
from provision.config import inventory
from provision.core.errors import SSHError
from provision.core.model import Inventory
from provision.desired import hostkeys
from provision.image import image
from provision.state import keys, paths, workspace

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("PROVISION_TEST_STATE", "/var/lib/provision-test"))
NODE = "pv-it-node1"
POOL = "provision-it"
POOL_PATH = STATE / "pool"
PORT = 10122


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def provision(*args: str) -> Run:
    p = subprocess.run(
        [sys.executable, "-m", "provision.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    return Run(p.returncode, p.stdout, p.stderr)


@pytest.fixture(scope="module")
def inv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped local inventory, pointed at a test state dir, pool and port."""
    doc = yaml.safe_load((ROOT / "inventories" / "local.yaml").read_text())
    doc["state_dir"] = str(STATE)
    doc["hypervisors"]["local"]["pool_name"] = POOL
    doc["hypervisors"]["local"]["pool_path"] = str(POOL_PATH)
    doc["nodes"] = {NODE: {"ssh_port": PORT}}
    doc["playbooks"] = [str(ROOT / "playbooks" / "post-boot.yaml")]
    path = tmp_path_factory.mktemp("inv") / "local-it.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def inv(inv_path: Path) -> Inventory:
    return inventory.load(inv_path)


@pytest.fixture(scope="module")
def conn() -> Iterator[libvirt.virConnect]:
    c = libvirt.open("qemu:///system")
    yield c
    c.close()


@pytest.fixture(scope="module")
def first_up(inv_path: Path, golden_image: object) -> Run:
    """`up` from nothing (after clearing what an earlier aborted run may have left)."""
    provision("down", "-i", str(inv_path), "--purge")
    run = provision("up", "-i", str(inv_path), "--json")
    # Exit 1 is a verification failure after a successful up: its own test reports it, so the
    # node stays usable for the others.
    assert run.returncode in (0, 1) and '"summary"' in run.stdout, run.stderr + run.stdout
    return run


def _session(inv: Inventory) -> ssh.Session:
    rendered, _ = workspace.render_inventory(inv, inv.nodes)
    return ssh.connect(workspace.ssh_target(inv, rendered.nodes[0]))


def _events(run: Run) -> list[dict[str, object]]:
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"t"')]


def test_up_reports_each_phase_with_timings(first_up: Run) -> None:
    events = _events(first_up)
    done = {(e["node"], e["phase"]) for e in events if e["status"] == "done"}
    for phase in ("define", "start", "ssh", "cloud-init", "first-boot-done"):
        assert (NODE, phase) in done, (phase, sorted(done))
    pool_ops = [e["detail"] for e in events if e["phase"] == "pool" and e["status"] == "done"]
    for op in ("create root overlay", "upload seed", "delete seed"):
        assert op in pool_ops, pool_ops
    assert all(isinstance(e["elapsed"], float) for e in events if e["status"] == "done")
    assert '"changed": ["' + NODE in first_up.stdout


def test_node_answers_with_pinned_key_and_cloud_init_finished(
    inv: Inventory, first_up: Run
) -> None:
    with _session(inv) as s:
        assert s.run(["hostname"]).stdout.strip() == NODE
        # cloud-init finished without errors, then was disabled for every later boot.
        result = json.loads(s.run(["sudo", "cat", "/var/lib/cloud/data/result.json"]).stdout)
        assert result["v1"]["errors"] == [], result
        assert "DataSourceNoCloud" in result["v1"]["datasource"]
        assert "status: disabled" in s.run(["cloud-init", "status"], check=False).stdout
        assert s.run(["test", "-e", "/etc/cloud/cloud-init.disabled"], check=False).returncode == 0
        keys = s.run(["sudo", "sh", "-c", "ls /etc/ssh/ssh_host_*_key.pub"]).stdout.split()
        assert keys == ["/etc/ssh/ssh_host_ed25519_key.pub"]  # the pinned one, nothing generated


def test_seed_is_detached_and_deleted(conn: libvirt.virConnect, first_up: Run) -> None:
    dom = conn.lookupByName(NODE)
    for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
        assert f"{NODE}-seed.img" not in dom.XMLDesc(flags)  # (metadata names a "seed" field)
        assert 'dev="vdb"' not in dom.XMLDesc(flags).replace("'", '"')
    pool = conn.storagePoolLookupByName(POOL)
    pool.refresh(0)
    assert f"{NODE}-seed.img" not in pool.listVolumes()
    assert f"{NODE}.qcow2" in pool.listVolumes()


def test_seed_sysctls_are_live(inv: Inventory, first_up: Run) -> None:
    with _session(inv) as s:
        for key, want in (
            ("kernel.kptr_restrict", "2"),
            ("kernel.dmesg_restrict", "1"),
            ("net.core.bpf_jit_harden", "2"),
            ("net.ipv4.tcp_syncookies", "1"),
        ):
            path = f"/proc/sys/{key.replace('.', '/')}"
            assert s.run(["sudo", "cat", path]).stdout.strip() == want  # some are root-only
        cmdline = s.run(["cat", "/proc/cmdline"]).stdout
        assert "slab_nomerge" in cmdline and "root=/dev/vda" in cmdline


def test_rootless_docker_runs_for_the_workload_user(inv: Inventory, first_up: Run) -> None:
    with _session(inv) as s:
        info = s.run(["sudo", "-iu", "app", "docker", "info", "--format", "{{.SecurityOptions}}"])
        assert "rootless" in info.stdout, info.stdout
        # The local inventory's node is rootful too: the system daemon runs with userns-remap.
        system = s.run(["sudo", "docker", "info", "--format", "{{.SecurityOptions}}"])
        assert "userns" in system.stdout, system.stdout


def test_second_up_changes_nothing(
    inv: Inventory, inv_path: Path, conn: libvirt.virConnect, first_up: Run
) -> None:
    xml_before = conn.lookupByName(NODE).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    with _session(inv) as s:
        boot_before = s.run(["cat", "/proc/sys/kernel/random/boot_id"]).stdout
    run = provision("up", "-i", str(inv_path), "--no-verify")
    assert run.returncode == 0, run.stderr
    assert "up: 0 changed, 1 unchanged" in run.stdout
    assert " upload " not in run.stderr  # the golden artifacts are uploaded once per digest
    assert conn.lookupByName(NODE).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == xml_before
    with _session(inv) as s:
        assert s.run(["cat", "/proc/sys/kernel/random/boot_id"]).stdout == boot_before


def test_plan_says_nothing_to_do(inv_path: Path, first_up: Run) -> None:
    run = provision("plan", "-i", str(inv_path), "--json")
    assert run.returncode == 0, run.stderr
    assert [n["action"] for n in json.loads(run.stdout)["nodes"]] == ["nothing"]


def test_status_lists_the_running_node(inv_path: Path, first_up: Run) -> None:
    run = provision("status", "-i", str(inv_path), "--json")
    assert run.returncode == 0, run.stderr
    [row] = json.loads(run.stdout)
    assert row["state"] == "running" and row["address"] == f"127.0.0.1:{PORT}"
    assert row["uptime_s"] and row["uptime_s"] > 0


def test_ssh_config_works_with_openssh(inv_path: Path, first_up: Run, tmp_path: Path) -> None:
    run = provision("ssh-config", "-i", str(inv_path))
    assert "StrictHostKeyChecking yes" in run.stdout
    cfg = tmp_path / "cfg"
    cfg.write_text(run.stdout)
    out = subprocess.run(
        ["ssh", "-F", str(cfg), "-o", "BatchMode=yes", NODE, "hostname"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.strip() == NODE, out.stderr


def test_other_host_key_is_refused_before_any_command(
    inv: Inventory, first_up: Run, tmp_path: Path
) -> None:
    marker = "/tmp/provision-wrong-key-marker"
    impostor = hostkeys.generate("impostor")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{PORT} {' '.join(impostor.public.split()[:2])}\n")
    rendered, _ = workspace.render_inventory(inv, inv.nodes)
    good = workspace.ssh_target(inv, rendered.nodes[0])
    bad = ssh.Target(good.host, good.port, good.user, good.identity, known)
    with pytest.raises(SSHError) as exc, ssh.connect(bad) as s:
        s.run(["touch", marker])
    assert "mismatch" in str(exc.value).lower()
    with ssh.connect(good) as s:
        assert s.run(["test", "-e", marker], check=False).returncode != 0


KEY_FILES = ("ssh_host_ed25519_key", "admin_ed25519", "verifier_ed25519")


def test_no_private_key_material_left_behind(
    inv: Inventory, inv_path: Path, first_up: Run, conn: libvirt.virConnect, tmp_path: Path
) -> None:
    """Issue #15: everything a full `up` leaves behind (state dir, render output, logs, --json
    events, domain XML with its metadata, the console log, the pool) holds no private key."""
    secrets = [
        keys.load_or_create(paths.node_host_key(inv, NODE), NODE).private.reveal(),
        keys.load_or_create(paths.admin_key(inv), "x").private.reveal(),
        keys.load_or_create(paths.verifier_key(inv), "x").private.reveal(),
    ]
    # The first base64 lines of an OpenSSH key are a header and the public key, the same or
    # public for every ed25519 key: the secret scalar is in the lines after them.
    needles = [line for s in secrets for line in s.splitlines()[4:-1]]
    assert all(len(n) >= 20 for n in needles) and len(needles) >= 3
    dom = conn.lookupByName(NODE)
    out = tmp_path / "render"
    rendered = provision("render", "-i", str(inv_path), "-o", str(out))
    assert rendered.returncode == 0, rendered.stderr
    status = provision("status", "-i", str(inv_path), "--json")
    places: list[tuple[str, str]] = [
        ("up output and --json events", first_up.stdout + first_up.stderr),
        ("render output", rendered.stdout + rendered.stderr),
        ("status --json", status.stdout + status.stderr),
        ("domain XML", dom.XMLDesc(0)),
        ("inactive domain XML", dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)),
    ]
    # The seed's user-data is the one rendered file that must hold the host key: 0600 in 0700.
    user_data = out / NODE / "seed" / "user-data"
    assert any(n in user_data.read_text() for n in needles)
    assert stat.S_IMODE(user_data.stat().st_mode) == 0o600
    assert stat.S_IMODE(user_data.parent.stat().st_mode) == 0o700
    for path in out.rglob("*"):
        if path.is_file() and path != user_data:
            places.append((str(path), path.read_text(errors="replace")))
    logs = [
        Path("/var/log/libvirt/qemu") / f"{NODE}.log",
        Path("/var/log/libvirt/qemu") / f"{NODE}-serial.log",
    ]
    for path in [*logs, *paths.inventory_dir(inv).rglob("*")]:
        if path.is_file() and path.name not in KEY_FILES:
            places.append((str(path), path.read_text(errors="replace")))
    for path in POOL_PATH.iterdir():
        if path.name != f"{NODE}.qcow2":  # the node's own disk holds its own key, 0600
            places.append((str(path), path.read_bytes()[:50_000_000].decode("latin-1")))
    for name, text in places:
        for needle in needles:
            assert needle not in text, f"private key material in {name}"
    for key in (paths.node_host_key(inv, NODE), paths.admin_key(inv), paths.verifier_key(inv)):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("provision-seed-*"))


def test_the_guest_reaches_nothing_through_user_networking(inv: Inventory, first_up: Run) -> None:
    """Issue #15: QEMU user networking without restrict=on let the guest connect to this
    machine's loopback services through 10.0.2.2 (other nodes' SSH forwards, a local sshd)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(0)
        port = listener.getsockname()[1]
        with _session(inv) as s:
            addr = s.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
            assert "10.0.2.15/" in addr, addr  # the user network itself is up (DHCP answered)
            own = s.run(["timeout", "10", "bash", "-c", ": >/dev/tcp/127.0.0.1/22"], check=False)
            assert own.returncode == 0, own.stderr  # the probe itself works
            for target_port in (port, PORT):  # a local listener, and the node's own forward
                probe = s.run(
                    # Not `exec 3<>…`: a failed redirection of exec does not fail bash -c.
                    ["timeout", "10", "bash", "-c", f": >/dev/tcp/10.0.2.2/{target_port}"],
                    check=False,
                )
                assert probe.returncode != 0, f"the guest reached 10.0.2.2:{target_port}"
        with pytest.raises(BlockingIOError):
            listener.accept()  # and nothing arrived


def _verify(inv_path: Path, *args: str) -> tuple[Run, dict[str, str]]:
    """`provision verify --json`: the run and each catalogue id's status on the node."""
    run = provision("verify", "-i", str(inv_path), "--json", *args)
    doc = json.loads(run.stdout)
    [node] = doc["nodes"]
    return run, {r["id"]: r["status"] for r in node["results"]}


def test_up_verifies_the_node_and_every_applicable_check_passes(first_up: Run) -> None:
    """The main job: `up` ends with `provision verify` of the node it brought up."""
    assert first_up.returncode == 0, first_up.stdout.splitlines()[-1][-3000:]
    [node] = json.loads(first_up.stdout.splitlines()[-1])["verify"]["nodes"]
    status = {r["id"]: r["status"] for r in node["results"]}
    bad = {cid: s for cid, s in status.items() if s in ("fail", "error")}
    assert not bad and node["error"] is None, (bad, node["error"])
    # Under TCG the CPU vulnerability flags are QEMU's model, not evidence: the only WARN allowed.
    assert {cid for cid, s in status.items() if s == "warn"} <= {"HN-BOOT-08"}
    assert sum(s == "pass" for s in status.values()) >= 80, status
    for cid in ("HN-SYS-01", "HN-SSH-02", "HN-DKRL-03", "HN-DKRL-11", "HN-SSH-12", "HN-VM-01"):
        assert status[cid] == "pass", cid


def _journal_count(inv: Inventory, needle: str) -> int:
    with _session(inv) as s:
        out = s.run(["sudo", "journalctl", "-q", "--no-pager", "_COMM=sshd"]).stdout
    return out.count(needle)


def test_verify_reports_exactly_the_checks_broken_on_purpose(
    inv: Inventory, inv_path: Path, first_up: Run, tmp_path: Path
) -> None:
    uid_env = "XDG_RUNTIME_DIR=/run/user/$(id -u app)"
    rootless = f"sudo -u app env {uid_env} systemctl --user"
    with _session(inv) as s:
        s.run(["sudo", "sysctl", "-w", "kernel.kptr_restrict=1"])
        s.run(
            [
                "sudo",
                "sh",
                "-c",
                "umask 077; echo 'PasswordAuthentication yes' "
                "> /etc/ssh/sshd_config.d/00-broken.conf && systemctl reload ssh",
            ]
        )
        s.run(["sh", "-c", f"cd /; {rootless} stop docker-rootless.service"])
    junit = tmp_path / "verify.xml"
    try:
        run, status = _verify(inv_path, "--junit", str(junit))
        failed = {cid for cid, s in status.items() if s in ("fail", "error")}
        assert run.returncode == 1
        assert failed == {"HN-SYS-01", "HN-SSH-02", "HN-DKRL-03"}, run.stdout[-3000:]
        cases = ET.parse(junit).getroot().findall(".//testcase")
        assert len(cases) == len(status)
        failures = {c.get("name", "").split()[0] for c in cases if c.find("failure") is not None}
        assert failures == failed
    finally:
        with _session(inv) as s:
            s.run(["sudo", "sysctl", "-w", "kernel.kptr_restrict=2"])
            s.run(
                [
                    "sudo",
                    "sh",
                    "-c",
                    "rm -f /etc/ssh/sshd_config.d/00-broken.conf && systemctl reload ssh",
                ]
            )
            s.run(["sh", "-c", f"cd /; {rootless} start docker-rootless.service"])
    run, status = _verify(inv_path, "-k", "kptr or no_passwords or rootless_service")
    assert run.returncode == 0, run.stdout[-3000:]


def test_verify_refuses_a_node_with_another_host_key(inv: Inventory, inv_path: Path) -> None:
    """The pinned key changes on our side: the node's real key no longer matches it."""
    accepted = "Accepted publickey for verifier"
    before = _journal_count(inv, accepted)
    key = paths.node_host_key(inv, NODE)
    saved = key.read_bytes(), key.with_suffix(".pub").read_bytes()
    key.unlink()
    key.with_suffix(".pub").unlink()
    try:
        run = provision("verify", "-i", str(inv_path))
    finally:
        key.write_bytes(saved[0])
        key.chmod(0o600)
        key.with_suffix(".pub").write_bytes(saved[1])
        provision("ssh-config", "-i", str(inv_path))  # pin the real key again
    assert run.returncode == 1
    assert "NOT VERIFIED" in run.stdout and "host key" in run.stdout.lower(), run.stdout
    assert _journal_count(inv, accepted) == before  # not one login, so not one command


def _drift(inv_path: Path) -> tuple[Run, dict[str, object]]:
    run = provision("drift", "-i", str(inv_path), "--json")
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    doc: dict[str, object] = json.loads(run.stdout)
    return run, doc


def test_drift_of_the_docker_node_is_clean_then_sees_rootless_docker_stopped(
    inv: Inventory, inv_path: Path, first_up: Run
) -> None:
    """Rootful and rootless Docker both run here: their data directories, tables and units are
    the node's own doing, not drift. Stopping the workload user's daemon is."""
    run, doc = _drift(inv_path)
    assert run.returncode == 0 and doc["items"] == [], run.stdout[-4000:]
    rootless = "sudo -u app env XDG_RUNTIME_DIR=/run/user/$(id -u app) systemctl --user"
    with _session(inv) as s:
        s.run(["sh", "-c", f"cd /; {rootless} stop docker-rootless.service"])
    try:
        run, doc = _drift(inv_path)
        assert run.returncode == 2, run.stdout[-4000:]
        items = doc["items"]
        assert isinstance(items, list)
        assert {(i["layer"], i["key"]) for i in items} == {("guest", "HN-DKRL-03")}, items
    finally:
        with _session(inv) as s:
            s.run(["sh", "-c", f"cd /; {rootless} start docker-rootless.service"])


def test_down_keeps_volumes_and_up_boots_the_kept_disk(
    inv: Inventory, inv_path: Path, conn: libvirt.virConnect, first_up: Run
) -> None:
    run = provision("down", "-i", str(inv_path))
    assert run.returncode == 0, run.stderr
    assert NODE not in [d.name() for d in conn.listAllDomains()]
    pool = conn.storagePoolLookupByName(POOL)
    pool.refresh(0)
    assert f"{NODE}.qcow2" in pool.listVolumes()
    run = provision("up", "-i", str(inv_path), "--no-verify")
    assert run.returncode == 0, run.stderr
    assert "1 changed" in run.stdout
    with _session(inv) as s:  # same pinned key: the identity lives on the kept disk
        assert s.run(["hostname"]).stdout.strip() == NODE


def test_hardening_survives_a_reboot(inv_path: Path, first_up: Run) -> None:
    """The kept disk booted again, without the seed: what the next boot applies is what runs."""
    selection = "check_sysctl or check_filesystem or check_firewall or check_logging or check_ssh"
    run, status = _verify(inv_path, "-k", selection)
    bad = {cid: s for cid, s in status.items() if s in ("fail", "error", "warn")}
    assert run.returncode == 0 and not bad, (bad, run.stdout[-3000:])


def test_down_refuses_a_domain_that_is_not_ours(inv_path: Path, conn: libvirt.virConnect) -> None:
    name = "pv-it-foreign"
    doc = yaml.safe_load(inv_path.read_text())
    doc["nodes"][name] = {"ssh_port": PORT + 1}
    other = inv_path.with_name("with-foreign.yaml")
    other.write_text(yaml.safe_dump(doc))
    conn.defineXML(
        f"<domain type='qemu'><name>{name}</name><memory>65536</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )
    try:
        run = provision("down", "-i", str(other), "--nodes", name, "--purge")
        assert run.returncode != 0 and "not ours" in run.stderr
        assert name in [d.name() for d in conn.listAllDomains()]
    finally:
        conn.lookupByName(name).undefine()


def test_down_purge_leaves_nothing_in_the_pool(
    inv_path: Path, conn: libvirt.virConnect, first_up: Run
) -> None:
    run = provision("down", "-i", str(inv_path), "--purge")
    assert run.returncode == 0, run.stderr
    pool = conn.storagePoolLookupByName(POOL)
    pool.refresh(0)
    assert pool.listVolumes() == []
    assert NODE not in [d.name() for d in conn.listAllDomains()]


# Each interruption lands inside one phase of a first `up` from an empty pool; the next run must
# get past it (and is itself interrupted at the next phase), and the last run must converge.
INTERRUPTIONS = (
    ("*", "upload", "info", "SIGINT"),  # mid-stream upload of the golden rootfs
    (NODE, "define", "start", "SIGKILL"),
    (NODE, "start", "start", "SIGINT"),
    (NODE, "ssh", "start", "SIGKILL"),  # waiting for first boot
)


def test_up_interrupted_in_every_phase_converges_on_rerun(
    inv: Inventory, inv_path: Path, conn: libvirt.virConnect, golden_image: image.Manifest
) -> None:
    """SIGINT or SIGKILL during upload, define, start and the wait: no orphaned volumes, domains
    or seeds at any point, and a plain re-run converges."""
    provision("down", "-i", str(inv_path), "--purge")
    ref = workspace.render_inventory(inv, inv.nodes)[0].golden
    sizes = {a.name: a.size for a in golden_image.artifacts}
    golden_sizes = {
        ref.base_volume: sizes["rootfs.qcow2"],
        ref.kernel_volume: sizes["vmlinuz"],
        ref.initrd_volume: sizes["initrd.img"],
    }
    allowed = {*golden_sizes, f"{NODE}.qcow2", f"{NODE}-seed.img"}
    driver = ROOT / "tests" / "integration" / "interrupt_up.py"
    report = []
    for node, phase, status, sig in INTERRUPTIONS:
        p = subprocess.run(
            [
                sys.executable,
                str(driver),
                node,
                phase,
                status,
                sig,
                "--",
                "up",
                "-i",
                str(inv_path),
                "--json",
                "--no-verify",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
            cwd=ROOT,
        )
        assert f"interrupt_up: {sig} at {node} {phase}" in p.stderr, p.stderr[-2000:]
        want = -signal.SIGKILL if sig == "SIGKILL" else 130
        assert p.returncode == want, (phase, p.returncode, p.stderr[-2000:])
        with hypervisor.connect("qemu:///system") as c:
            vols = c.volumes(POOL)
        assert set(vols) <= allowed, (phase, sorted(vols))
        for vol, size in golden_sizes.items():
            if sig == "SIGINT":  # an interrupted upload deletes its partial volume
                assert vols.get(vol, size) == size, (phase, vol, vols.get(vol), size)
        domains = [d.name() for d in conn.listAllDomains() if d.name().startswith("pv-it-")]
        assert domains in ([], [NODE]), domains
        report.append(
            f"{phase}/{sig}: exit {p.returncode}, {len(vols)} volumes, "
            f"domain {'defined' if domains else 'absent'}"
        )

    run = provision("up", "-i", str(inv_path), "--no-verify")
    assert run.returncode == 0, run.stderr
    with hypervisor.connect("qemu:///system") as c:
        vols = c.volumes(POOL)
    assert vols == {**golden_sizes, f"{NODE}.qcow2": vols[f"{NODE}.qcow2"]}, vols
    assert conn.lookupByName(NODE).isActive()
    with _session(inv) as s:
        assert s.run(["test", "-e", "/etc/cloud/cloud-init.disabled"], check=False).returncode == 0
    plan = json.loads(provision("plan", "-i", str(inv_path), "--json").stdout)
    assert [n["action"] for n in plan["nodes"]] == ["nothing"]
    report.append(f"re-run: converged ({len(INTERRUPTIONS)} of {len(INTERRUPTIONS)} phases)")
    print("\n" + "\n".join(report))
    run = provision("down", "-i", str(inv_path), "--purge")
    assert run.returncode == 0, run.stderr
