"""The fact snapshot: its parser, Facts served from it, the helper's refusal of arguments, and
the suite's round trips, on a snapshot recorded from a clean local node (tests/data/snapshot/).

The recorded node: Debian 12, docker: rootful with the workload user `app` rootless, under TCG.
Taken with `bench/bench_verify.py --record`; it holds no private key material (checked below).
"""

from __future__ import annotations

import ast
import dataclasses
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.baseline import hardening
from provision.boundary.process import Result, run
from provision.config import inventory
from provision.verify import runner
from provision.verify.backend import host as pinned_host
from provision.verify.checks import Inconclusive, Status
from provision.verify.plugin import Facts
from provision.verify.snapshot import FactsError, parse_listening, parse_snapshot
from tests.helpers import LOCAL, render_inv
from tests.mutations.docker import DAEMON_DOWN
from tests.recording import (
    HELPER,
    SNAPSHOT,
    RecordedNode,
    Recording,
    helper,
    recorded_profile,
    verdicts,
)

# The modules whose checks need the container probes: everything else is "non-container".
CONTAINER_MODULES = ("check_containers", "check_docker", "check_docker_access", "check_rootless")


# --- the document ----------------------------------------------------------------------------


def test_recorded_snapshot_holds_no_private_key_material() -> None:
    assert "PRIVATE KEY" not in SNAPSHOT
    doc = json.loads(SNAPSHOT)
    for path, fact in doc["files"].items():
        if "ssh_host_" in path or path in ("/etc/shadow", "/etc/gshadow"):
            assert "content" not in fact, f"{path}: the snapshot must only stat it"


def test_snapshot_parses_verbs_commands_and_files() -> None:
    snap = parse_snapshot(SNAPSHOT)
    assert "kernel.ostype = Linux" in snap.verbs["sysctl"].stdout
    assert snap.verb("sshd", hardening.VERIFIER_USER) is not None
    assert snap.verb("stat", "/etc") is None  # not in the snapshot: Facts asks the helper
    shadow = snap.file("/etc/shadow")
    assert (shadow.user, shadow.group, shadow.mode) == ("root", "shadow", 0o640)
    assert snap.file("/etc/ssh").is_directory
    assert snap.output("uname-r") == snap.output("newest-kernel")
    assert snap.service("auditd").is_running
    assert snap.service("provision-firewall").is_enabled


def test_absent_unread_and_unknown_facts_are_errors_not_guesses() -> None:
    snap = parse_snapshot(SNAPSHOT)
    assert not snap.file("/etc/hosts.equiv").exists
    assert not snap.file("/etc/hosts.equiv").present
    with pytest.raises(FactsError, match="were not read"):
        _ = snap.file("/etc/shadow").content_string
    with pytest.raises(FactsError, match="no stat of /nowhere"):
        snap.file("/nowhere")
    with pytest.raises(FactsError, match="no command"):
        snap.run("rm -rf /")


@pytest.mark.parametrize(
    "text,match",
    [("", "not JSON"), ("[]", "not format"), ('{"format": 1}', "no verbs section")],
)
def test_a_bad_document_is_a_facts_error(text: str, match: str) -> None:
    with pytest.raises(FactsError, match=match):
        parse_snapshot(text)


def test_a_failed_part_is_recorded_and_does_not_lose_the_rest() -> None:
    doc = json.loads(SNAPSHOT)
    doc["commands"]["hostname"] = {"rc": 127, "stdout": "", "stderr": "gone", "seconds": 0}
    snap = parse_snapshot(json.dumps(doc))
    with pytest.raises(FactsError, match="hostname exited 127"):
        snap.output("hostname")
    assert snap.output("uname-r")


def test_listening_sockets_as_testinfra_reads_ss() -> None:
    text = (
        "Netid State  Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n"
        "tcp   LISTEN 0      128    0.0.0.0:22         0.0.0.0:*\n"
        "tcp   LISTEN 0      128    [::]:22            [::]:*\n"
        "tcp   LISTEN 0      4096   *:2375             *:*\n"
        "u_str LISTEN 0      4096   /run/docker.sock 1234 * 0\n"
        "u_dgr UNCONN 0      0      /run/systemd/notify 1 * 0\n"
    )
    assert parse_listening(text) == [
        "tcp://0.0.0.0:22",
        "tcp://:::22",
        "tcp://:::2375",
        "tcp://0.0.0.0:2375",
        "unix:///run/docker.sock",
    ]


# --- Facts from the snapshot -----------------------------------------------------------------


def test_facts_are_served_from_one_snapshot() -> None:
    node = RecordedNode()
    facts = Facts(pinned_host(node, "n1"))  # type: ignore[arg-type]
    try:
        assert facts.sysctl()["kernel.ostype"] == "Linux"
        assert facts("nft").startswith("table")
        assert facts.host_keys()
        assert node.commands == [HELPER]
    finally:
        facts.close()


def test_sysctl_is_parsed_once_per_node_and_shared_read_only() -> None:
    facts = Facts(pinned_host(RecordedNode(), "n1"))  # type: ignore[arg-type]
    try:
        values = facts.sysctl()
        assert facts.sysctl() is values
        assert facts.sysctl_persisted() is facts.sysctl_persisted()
        with pytest.raises(TypeError):
            values["kernel.kptr_restrict"] = "0"  # type: ignore[index]
    finally:
        facts.close()


def test_sysctl_without_evidence_is_an_error_every_time_it_is_asked() -> None:
    doc = json.loads(SNAPSHOT)
    doc["verbs"]["sysctl"]["stdout"] = ""
    facts = Facts(pinned_host(RecordedNode(json.dumps(doc)), "n1"))  # type: ignore[arg-type]
    try:
        for _ in range(2):
            with pytest.raises(FactsError, match=r"no kernel\.ostype"):
                facts.sysctl()
    finally:
        facts.close()


def test_a_daemon_down_in_the_snapshot_keeps_its_no_evidence_meaning() -> None:
    doc = json.loads(SNAPSHOT)
    doc["verbs"]["docker-info"] = {"rc": 3, "stdout": "", "stderr": "docker.service is not active"}
    facts = Facts(pinned_host(RecordedNode(json.dumps(doc)), "n1"))  # type: ignore[arg-type]
    try:
        with pytest.raises(Inconclusive, match="not active"):
            facts("docker-info")
    finally:
        facts.close()


def test_a_node_without_the_snapshot_verb_is_an_error_naming_the_fix() -> None:
    class OldNode(RecordedNode):
        def run(self, argv: list[str], **_: Any) -> Result:
            return Result(tuple(argv), 64, "", "verify-facts: unknown verb")

    facts = Facts(pinned_host(OldNode(), "n1"))  # type: ignore[arg-type]
    try:
        with pytest.raises(FactsError, match="re-provision"):
            facts("sysctl")
    finally:
        facts.close()


# --- the helper ------------------------------------------------------------------------------


def _helper(tmp_path: Path) -> Path:
    r = render_inv(inventory.load(LOCAL)).nodes[0]
    files = {
        f["path"]: f["content"] for f in yaml.safe_load(r.seed.user_data.reveal())["write_files"]
    }
    path = tmp_path / "verify-facts"
    path.write_text(files[hardening.FACTS_HELPER])
    return path


@pytest.mark.parametrize("args", [["x"], ["--all"], ["/etc/shadow"], ["a", "b"]])
def test_the_helper_refuses_any_snapshot_argument(tmp_path: Path, args: list[str]) -> None:
    r = run(["sh", str(_helper(tmp_path)), "snapshot", *args], check=False)
    assert r.returncode == 64
    assert "snapshot takes no arguments" in r.stderr


# --- the suite's round trips -----------------------------------------------------------------


def test_non_container_checks_cost_at_most_three_round_trips() -> None:
    """The snapshot, the verifier's own `sudo -n -l`, and AIDE's check of the image's files
    (HN-FS-11), which hashes /usr and /boot and so runs beside the snapshot, not in it."""
    node = RecordedNode()
    select = " and ".join(f"not {m}" for m in CONTAINER_MODULES)
    run_ = runner.run_suite(node, recorded_profile(), (), date(2026, 12, 1), select)  # type: ignore[arg-type]
    assert run_.round_trips <= 3, node.commands
    assert sorted(node.commands) == sorted([HELPER, "sudo -n -l", helper("aide-check")])
    bad = [o for o in run_.outcomes if o.status in (Status.FAIL, Status.ERROR, Status.WARN)]
    assert not bad, bad
    assert len(run_.outcomes) > 80


def test_kubernetes_prerequisites_are_judged_from_the_snapshot() -> None:
    """HN-K8S-14 on a k8s profile reads only what the snapshot holds (it once asked the snapshot
    for a shell command it never ran, an ERROR on every Kubernetes node): the recorded node has
    swap off, a DNS hostname, kubeadm's tools and its ports free, so it passes."""
    profile = dataclasses.replace(recorded_profile(), roles=frozenset({"all", "k8s", "rootful"}))
    node = RecordedNode()
    run_ = runner.run_suite(node, profile, (), date(2026, 12, 1), "kubeadm_preflight")  # type: ignore[arg-type]
    assert [(o.check_id, o.status) for o in run_.outcomes] == [("HN-K8S-14", Status.PASS)]


def test_an_unreadable_apt_directory_is_an_error_not_a_pass() -> None:
    doc = json.loads(SNAPSHOT)
    doc["commands"]["apt-trusted"] = {"rc": 2, "stdout": "", "stderr": "Permission denied"}
    run_ = runner.run_suite(
        RecordedNode(json.dumps(doc)),
        recorded_profile(),
        (),
        date(2026, 12, 1),
        "apt_sources_signed",
    )  # type: ignore[arg-type]
    assert [(o.check_id, o.status) for o in run_.outcomes] == [("HN-SC-05", Status.ERROR)]


def test_the_apt_trusted_part_finds_live_trusted_sources_only(tmp_path: Path) -> None:
    """The snapshot's grep, run here: `[trusted=yes]` and deb822 `Trusted: yes` count, a
    commented-out line does not."""
    text = _helper(tmp_path).read_text()
    line = next(x for x in text.split("\n    (") if x.startswith('"apt-trusted"'))
    argv = ast.literal_eval("(" + line.rstrip().rstrip(","))[1]
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list").write_text("# deb [trusted=yes] http://x/ bookworm main\n")
    (apt / "sources.list.d" / "a.list").write_text("deb [arch=amd64 trusted=yes] http://a/ b c\n")
    (apt / "sources.list.d" / "b.sources").write_text("Types: deb\nTrusted: yes\n")
    (apt / "sources.list.d" / "c.sources").write_text("Types: deb\nSigned-By: /k.gpg\n")
    found = run([*argv[:-1], f"{apt}/"], check=False)
    assert sorted(Path(p).name for p in found.stdout.split()) == ["a.list", "b.sources"]


# --- a daemon the node's role needs, down ----------------------------------------------------


def test_a_stopped_rootful_daemon_fails_the_run() -> None:
    """docker.service stopped on a rootful node once left `provision verify` at exit 0, with 23
    WARN and no FAIL: the facts that need the daemon have no evidence (WARN), and HN-DKR-01 now
    FAILs for the daemon the role needs, as HN-DKRL-03 does for the rootless one."""
    rec = Recording()
    DAEMON_DOWN(rec)
    node = RecordedNode(rec)
    profile = recorded_profile()
    run_ = runner.run_suite(node, profile, (), date(2026, 12, 1))  # type: ignore[arg-type]
    results = runner.fold(profile, run_.outcomes, (), date(2026, 12, 1), selected=True)
    report = runner.NodeReport(profile.name, profile.roles, tuple(results))
    assert report.failed
    assert {r.id for r in results if r.status is Status.FAIL} == {"HN-DKR-01"}
    assert helper("docker-probe", "rootful") in node.commands  # it was asked, and exited 3
    dkr_01 = next(r for r in results if r.id == "HN-DKR-01")
    assert "docker.service is inactive, expected active" in dkr_01.detail


def test_unreadable_file_capabilities_are_an_error_not_a_verdict() -> None:
    """newuidmap without its setuid bit may still carry file capabilities: the snapshot reads its
    security.capability xattr itself (the image has no getfattr); when that read fails,
    HN-DKRL-09 has no evidence (ERROR), while HN-FS-05, which wants exactly root 4755, FAILs."""
    rec = Recording()
    rec.file("/usr/bin/newuidmap")["mode"] = 0o755
    part = rec.part("commands", "file-caps /usr/bin/newuidmap")
    assert part["rc"] == 1  # the recorded node: setuid root, no file capabilities
    part.update(rc=2, stderr="/usr/bin/newuidmap: security.capability: Permission denied\n")
    results = verdicts(rec)
    assert results["HN-DKRL-09"].status is Status.ERROR, results["HN-DKRL-09"].detail
    assert "could not be read" in results["HN-DKRL-09"].detail
    assert results["HN-FS-05"].status is Status.FAIL
