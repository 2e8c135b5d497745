"""Issue #15, outside faults on the SSH side: a node whose host key changed, a node that never
answers (a port that accepts and stays silent, one whose backlog is full, a closed one).

Every fault is real: an OpenSSH server on 127.0.0.1 serving another host key than the one
pinned in state_dir, and TCP listeners made here. `verify`, `drift` and `ssh` are run as the
CLI is (a subprocess); each must give one line per node that names it and the next step, exit
non-zero, never run anything on a node it cannot trust, and still report the other nodes. `up`'s
wait for SSH after boot is tested at its function, against a silent listener, with a short
deadline passed in.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import pytest

from provision.boundary import ssh
from provision.config import inventory
from provision.converge import node
from provision.core.events import Event
from provision.core.model import Inventory
from provision.desired import hostkeys
from provision.drift import run as drift_run
from provision.drift.model import Layer
from provision.state import keys, paths, workspace
from provision.verify import runner
from tests.helpers import loopback_inventory_text
from tests.sshd import HOST, running_sshd
from tests.test_drift_readonly import _answering_script, _image_store, _mkdir, as_root

CLI = [sys.executable, "-m", "provision.cli"]
HANG_BOUND_S = 120  # a generous bound: a hang fails the test, a slow machine does not
GOOD, CHANGED, SILENT, BACKLOG, CLOSED = "f-good", "f-changed", "f-silent", "f-backlog", "f-closed"
# GOOD last: verify goes node by node, and must reach it after every faulty one.
NODES = (CHANGED, SILENT, BACKLOG, CLOSED, GOOD)
FIXED_PORTS = {SILENT: 10330, BACKLOG: 10331, CLOSED: 10332}


def _inventory_text(state: Path, ports: dict[str, int]) -> str:
    return loopback_inventory_text(
        "faults-ssh",
        state,
        "provision-fb",
        {n: ports.get(n, 10333 + i) for i, n in enumerate(NODES)},
    )


@contextmanager
def silent_listener(port: int) -> Iterator[None]:
    """Accepts every connection and never sends a byte (no SSH banner ever comes)."""
    server = socket.create_server((HOST, port))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        for s in held:
            s.close()
        server.close()


@contextmanager
def full_backlog(port: int) -> Iterator[None]:
    """Listens and never accepts, with its accept queue already full: a new connection's SYN is
    dropped, so connecting hangs (as to a host that is down) instead of being refused."""
    server = socket.socket()
    server.bind((HOST, port))
    server.listen(0)
    fillers = []
    for _ in range(3):  # backlog 0 queues one; the rest stay half-open
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex((HOST, port))
        fillers.append(c)
    try:
        yield
    finally:
        for c in fillers:
            c.close()
        server.close()


@dataclass(frozen=True)
class Site:
    path: Path
    inv: Inventory
    pinned: dict[str, str]  # node -> pinned host key fingerprint
    presented: str  # what CHANGED's sshd presents
    good_log: Path  # the commands GOOD's stand-in received
    changed_log: Path  # the commands CHANGED's sshd ran (none, ever)

    def cli(self, verb: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, verb, "-i", str(self.path), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=HANG_BOUND_S,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("faults-ssh")
    state = tmp / "state"
    path = tmp / "faults-ssh.yaml"
    path.write_text(_inventory_text(state, {}))
    inv = inventory.load(path)
    verifier = keys.load_or_create(paths.verifier_key(inv), "verifier@faults-ssh")
    keys.load_or_create(paths.admin_key(inv), "provision@faults-ssh")
    pinned = {n: keys.load_or_create(paths.node_host_key(inv, n), n) for n in NODES}
    _image_store(inv)
    rebuilt = hostkeys.generate("rebuilt-outside-provision")
    with ExitStack() as stack:
        good_script, good_log = _answering_script(_mkdir(tmp / "good-answers"))
        good = stack.enter_context(
            running_sshd(
                tmp / "good",
                host_key=pinned[GOOD],
                force_command=good_script,
                authorized=verifier.public,
            )
        )
        changed_script, changed_log = _answering_script(_mkdir(tmp / "changed-answers"))
        changed = stack.enter_context(
            running_sshd(
                tmp / "changed",
                host_key=rebuilt,
                force_command=changed_script,
                authorized=verifier.public,
            )
        )
        stack.enter_context(silent_listener(FIXED_PORTS[SILENT]))
        stack.enter_context(full_backlog(FIXED_PORTS[BACKLOG]))
        ports = {GOOD: good.port, CHANGED: changed.port, **FIXED_PORTS}
        path.write_text(_inventory_text(state, ports))
        yield Site(
            path,
            inventory.load(path),
            {n: k.fingerprint for n, k in pinned.items()},
            rebuilt.fingerprint,
            good_log,
            changed_log,
        )


def _assert_changed_key_line(line: str, site: Site) -> None:
    assert CHANGED in line, line
    assert f"expected {site.pinned[CHANGED]}" in line, line  # the pinned key
    assert f"got {site.presented}" in line, line  # the presented one
    assert "provision down --purge" in line and "provision up" in line, line  # how to re-pin
    assert "man in the middle" in line, line


# --- SSH host key changed -------------------------------------------------------------------


def test_verify_names_both_keys_and_the_next_step_and_runs_nothing_on_a_changed_key(
    site: Site,
) -> None:
    done = site.cli("verify", CHANGED)
    print(done.stdout, done.stderr)
    assert done.returncode == 1
    (line,) = [x for x in done.stdout.splitlines() if "NOT VERIFIED" in x]
    assert line.strip().startswith(f"NOT VERIFIED: {CHANGED}: host key mismatch"), line
    _assert_changed_key_line(line, site)
    assert not site.changed_log.exists()  # nothing ran on the impostor


def test_drift_reports_a_changed_key_in_one_line_and_runs_nothing(site: Site) -> None:
    done = site.cli("drift", "--layer", "guest", CHANGED)
    print(done.stdout, done.stderr)
    assert done.returncode == 3
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("UNREACHABLE")]
    assert line.startswith(f"UNREACHABLE {CHANGED} (guest): host key mismatch"), line
    _assert_changed_key_line(line, site)
    assert not site.changed_log.exists()


def test_ssh_refuses_a_changed_key_in_one_line_before_openssh_runs(site: Site) -> None:
    done = site.cli("ssh", CHANGED, "--", "touch", "/nonexistent-marker")
    print(done.stdout, done.stderr)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr  # one line, not OpenSSH's banner
    assert done.stderr.startswith(f"error: {CHANGED}: host key mismatch"), done.stderr
    _assert_changed_key_line(done.stderr, site)
    assert not site.changed_log.exists()


def test_ups_wait_for_ssh_fails_at_once_on_a_changed_key_naming_it(site: Site) -> None:
    rendered, _ = workspace.render_inventory(site.inv, (site.inv.node(CHANGED),))
    with pytest.raises(ssh.HostKeyError) as exc:
        node.wait_ssh(site.inv, rendered.nodes[0], lambda _e: None, deadline_s=HANG_BOUND_S)
    # fleet.up reports it as `error: NODE: ...`; the wait was not retried to its deadline.
    _assert_changed_key_line(f"{CHANGED}: {exc.value}", site)


# --- nodes that never answer ----------------------------------------------------------------


def test_verify_gives_each_silent_or_closed_node_one_line_and_exits_non_zero(site: Site) -> None:
    # The full backlog's (a connect timeout) is drift's below: each costs verify 10 s in turn.
    done = site.cli("verify", SILENT, CLOSED)
    print(done.stdout, done.stderr)
    assert done.returncode == 1
    for name, why in ((SILENT, "no SSH banner"), (CLOSED, "refused")):
        (line,) = [x for x in done.stdout.splitlines() if f"NOT VERIFIED: {name}:" in x]
        assert why in line, line
        assert "provision status" in line, line  # the next step
    assert f"failed: {SILENT}, {CLOSED}" in done.stdout


def test_drift_gives_each_silent_or_closed_node_one_line_and_exits_non_zero(site: Site) -> None:
    done = site.cli("drift", "--layer", "guest", SILENT, BACKLOG, CLOSED)
    print(done.stdout, done.stderr)
    assert done.returncode == 3
    for name, why in ((SILENT, "no SSH banner"), (BACKLOG, "timed out"), (CLOSED, "refused")):
        (line,) = [x for x in done.stdout.splitlines() if x.startswith(f"UNREACHABLE {name} ")]
        assert why in line and "provision status" in line, line


@pytest.mark.parametrize("name", [SILENT, CLOSED])
def test_ssh_to_a_node_that_never_answers_is_one_line_and_ends(site: Site, name: str) -> None:
    done = site.cli("ssh", name, "--", "true")
    print(done.stdout, done.stderr)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: {name}: cannot reach SSH"), done.stderr


def test_ups_wait_for_ssh_names_the_node_the_console_log_and_the_next_step(site: Site) -> None:
    rendered, _ = workspace.render_inventory(site.inv, (site.inv.node(SILENT),))
    events: list[Event] = []
    with pytest.raises(ssh.UnreachableError) as exc:
        node.wait_ssh(site.inv, rendered.nodes[0], events.append, deadline_s=3.0)
    line = f"error: {SILENT}: {exc.value}"  # as fleet.up reports it
    print(line)
    assert "\n" not in line
    assert "SSH never answered" in line and "gave up after 3s" in line, line
    assert f"/var/log/libvirt/qemu/{SILENT}-serial.log" in line, line
    assert f"`provision console {SILENT}`" in line, line
    assert [e.status for e in events if e.phase == "ssh"][-1] == "fail"


# --- the other nodes still get their results ------------------------------------------------


def test_verify_still_verifies_the_good_node_after_the_faulty_ones(site: Site) -> None:
    # The nodes that fail at once: the silent ones' bounded wait is the CLI tests' business.
    nodes = tuple(n for n in site.inv.nodes if n.name not in (SILENT, BACKLOG))
    reports = runner.verify(
        site.inv,
        nodes,
        lambda _e: None,
        date(2026, 12, 1),
        "test_no_weakening_parameters",
        connect=as_root,
    )
    by_node = {r.node: r for r in reports}
    assert set(by_node) == {n.name for n in nodes}
    assert by_node[GOOD].error is None and by_node[GOOD].results, by_node[GOOD]
    for name in (CHANGED, CLOSED):
        assert (by_node[name].error or "").startswith(f"{name}: "), by_node[name]


def test_drift_still_compares_the_good_node_beside_the_faulty_ones(site: Site) -> None:
    before = site.good_log.read_text() if site.good_log.exists() else ""
    report = drift_run.drift(
        site.inv,
        site.inv.nodes,
        lambda _e: None,
        date(2026, 12, 1),
        layers=frozenset({Layer.GUEST}),
        connect=as_root,
    )
    assert [u.name for u in report.unreachable] == sorted(set(NODES) - {GOOD})
    assert {i.node for i in report.items} == {GOOD}  # compared (its recording drifts)
    assert site.good_log.read_text() != before
    assert not site.changed_log.exists()


def test_a_changed_key_is_caught_whoever_logs_in(site: Site) -> None:
    # The pin is on the server, not the account: as root too, CHANGED is refused.
    rendered, _ = workspace.render_inventory(site.inv, (site.inv.node(CHANGED),))
    target = replace(runner.verifier_target(site.inv, rendered.nodes[0]), user="root")
    with pytest.raises(ssh.HostKeyError):
        ssh.connect(target)


# --- cloud-init's report, as `up` words it --------------------------------------------------

# What the guest of tests/integration/test_faults_guest.py reported (cloud-init 22.4.2).
RESULT_JSON = (
    '{"v1": {"datasource": "DataSourceNoCloud [seed=/dev/vdb][dsmode=net]", "errors": '
    "[\"('scripts-user', RuntimeError('Runparts: 1 failures (runcmd) in 1 attempted "
    'commands\'))"], "recoverable_errors": {}}}'
)
OUTPUT_TAIL = (
    "Couldn't write '500' to 'vm/swappiness': Invalid argument\n"
    "2026-12-01 18:44:36,626 - cc_scripts_user.py[WARNING]: Failed to run module scripts-user "
    "(scripts in /var/lib/cloud/instance/scripts)\n"
    "2026-12-01 18:44:36,627 - util.py[WARNING]: Running module scripts-user failed\n"
    "Cloud-init v. 22.4.2 finished at Tue, 01 Dec 2026 18:44:36 +0000. Up 190.12 seconds\n"
)


def test_cloud_init_failure_names_the_module_and_what_the_command_printed() -> None:
    text = node.cloud_init_failure("status: error\n", RESULT_JSON, OUTPUT_TAIL)
    assert text == (
        "('scripts-user', RuntimeError('Runparts: 1 failures (runcmd) in 1 attempted commands'))"
        "; last output: Couldn't write '500' to 'vm/swappiness': Invalid argument"
    )


def test_cloud_init_failure_without_result_json_falls_back_to_the_status() -> None:
    status = "status: error\ntime: Tue, 01 Dec 2026\ndetail:\n('scripts-user', boom)\n"
    assert node.cloud_init_failure(status, "", "") == "status: error; ('scripts-user', boom)"
