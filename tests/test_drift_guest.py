"""Layer 2's pure comparisons on what a real node answered (tests/data/snapshot/, recorded once):
a clean node gives no item; each change gives exactly its item."""

from __future__ import annotations

import copy
import json
from datetime import date
from typing import Any

import pytest

from provision.config import inventory
from provision.core.model import DriftIgnore, Kubernetes
from provision.desired.seed import AUDIT_RULES
from provision.drift import files, guest
from provision.drift.model import Fix, Item, Layer, split_ignored
from provision.kubernetes import k8s_manifests
from provision.verify.checks import Status
from provision.verify.runner import Result
from tests.helpers import LOCAL, OSLO, ROOT, render_inv

SNAPSHOT = json.loads((ROOT / "tests" / "data" / "snapshot" / "snapshot.json").read_text())
LIVE_AUDIT = SNAPSHOT["verbs"]["audit-rules"]["stdout"]
LIVE_NFT = SNAPSHOT["verbs"]["nft"]["stdout"]


@pytest.fixture(scope="module")
def seed_files() -> dict[str, str]:
    rendered = render_inv(inventory.load(LOCAL))
    return files.seed_contents(rendered.nodes[0].seed.user_data.reveal())


def test_the_seed_files_hold_the_audit_rules_and_no_private_key(seed_files: dict[str, str]) -> None:
    assert AUDIT_RULES in seed_files
    assert seed_files["/etc/provision/firewall.nft"].startswith("#!/usr/sbin/nft -f\n")
    # The node's private host key travels in ssh_keys: never among the files compared.
    assert not any("-----BEGIN OPENSSH PRIVATE KEY-----" in c for c in seed_files.values())


# --- audit -------------------------------------------------------------------------------------


def test_loaded_audit_rules_equal_the_rendered_file(seed_files: dict[str, str]) -> None:
    # auditctl -l rewrites `-k` as `-F key=`, `-p xwa` as `-p wxa`, `unset` as -1, and lists
    # syscalls in its own order: none of that is drift.
    assert guest.audit_items("n1", LIVE_AUDIT, seed_files[AUDIT_RULES]) == []


def test_a_lost_audit_rule_and_an_extra_one_are_drift(seed_files: dict[str, str]) -> None:
    live = LIVE_AUDIT.replace("-w /etc/sudoers -p wa -k sudoers\n", "")
    live += "-w /tmp -p wa -k extra\n"
    (item,) = guest.audit_items("n1", live, seed_files[AUDIT_RULES])
    assert item.key == "audit:rules"
    assert "1 missing, 1 extra" in item.actual
    assert "- -w /etc/sudoers -F key=sudoers -p wa" in item.detail
    assert "+ -w /tmp -F key=extra -p wa" in item.detail


def test_audit_permissions_matter(seed_files: dict[str, str]) -> None:
    live = LIVE_AUDIT.replace("-w /etc/passwd -p wa -k identity", "-w /etc/passwd -p w -k identity")
    assert [i.key for i in guest.audit_items("n1", live, seed_files[AUDIT_RULES])] == [
        "audit:rules"
    ]


# --- firewall ----------------------------------------------------------------------------------

OUR_TABLE = LIVE_NFT[LIVE_NFT.index("table inet provision {") :]


def test_the_live_table_equal_to_the_expected_one_is_clean() -> None:
    roles = frozenset({"all", "rootful", "rootless"})
    assert guest.firewall_items("n1", LIVE_NFT, OUR_TABLE, roles) == []


def test_an_extra_accept_rule_is_drift() -> None:
    live = LIVE_NFT.replace(
        "\t\ttcp dport 22 accept\n", "\t\ttcp dport 22 accept\n\t\ttcp dport 8080 accept\n"
    )
    (item,) = guest.firewall_items("n1", live, OUR_TABLE, frozenset({"all", "rootful"}))
    assert item.key == "nft:inet provision"
    assert "+\t\ttcp dport 8080 accept" in item.detail


def test_counters_are_not_drift() -> None:
    live = LIVE_NFT.replace(
        "\t\ttcp dport 22 accept", "\t\ttcp dport 22 counter packets 7 bytes 420 accept"
    )
    assert guest.firewall_items("n1", live, OUR_TABLE, frozenset({"all", "rootful"})) == []


def test_a_table_nothing_keeps_is_drift() -> None:
    live = LIVE_NFT + "table inet sneaky {\n\tchain input {\n\t}\n}\n"
    keys = [
        i.key for i in guest.firewall_items("n1", live, OUR_TABLE, frozenset({"all", "rootful"}))
    ]
    assert keys == ["nft:inet sneaky"]
    # Docker's tables stay from the first boot where the seed then disables the daemon.
    assert guest.firewall_items("n1", LIVE_NFT, OUR_TABLE, frozenset({"all"})) == []
    live = LIVE_NFT + "table ip mangle {\n\tchain x {\n\t}\n}\n"
    keys = [i.key for i in guest.firewall_items("n1", live, OUR_TABLE, frozenset({"all"}))]
    assert keys == ["nft:ip mangle"]


def test_a_firewall_file_that_did_not_load_is_drift() -> None:
    expected = "(could not load /etc/provision/firewall.nft in a scratch namespace: exit 1)\n"
    (item,) = guest.firewall_items("n1", LIVE_NFT, expected, frozenset({"all", "rootful"}))
    assert item.key == "nft:inet provision" and "could not load" in item.actual


# --- packages ----------------------------------------------------------------------------------

IMAGE = (("openssh-server", "1:9.2p1-2+deb12u3", "amd64"), ("sudo", "1.9.13p3-1+deb12u1", "amd64"))


def dpkg(*rows: tuple[str, str, str, str]) -> str:
    return "".join("\t".join(r) + "\n" for r in rows)


def test_packages_equal_to_the_image_are_clean() -> None:
    text = dpkg(
        ("openssh-server", "1:9.2p1-2+deb12u3", "amd64", "installed"),
        ("sudo", "1.9.13p3-1+deb12u1", "amd64", "installed"),
        ("telnet", "0.17", "amd64", "config-files"),  # removed: only its conffiles are left
    )
    assert guest.package_items("n1", IMAGE, guest.parse_packages(text)) == []


def test_upgraded_removed_and_extra_packages_are_drift() -> None:
    text = dpkg(
        ("openssh-server", "1:9.2p1-2+deb12u4", "amd64", "installed"),
        ("netcat-openbsd", "1.219-1", "amd64", "installed"),
    )
    items = guest.package_items("n1", IMAGE, guest.parse_packages(text))
    assert [(i.key, i.expected, i.actual) for i in items] == [
        ("package:netcat-openbsd", "not installed (not in the image)", "1.219-1 amd64"),
        ("package:openssh-server", "1:9.2p1-2+deb12u3 amd64", "1:9.2p1-2+deb12u4 amd64"),
        ("package:sudo", "1.9.13p3-1+deb12u1 amd64", "not installed"),
    ]


def test_sections_split_the_drift_verb() -> None:
    text = "== packages\na\tb\tc\tinstalled\n== nft-expected\ntable inet provision {\n}\n"
    assert guest.sections(text) == {
        "packages": "a\tb\tc\tinstalled\n",
        "nft-expected": "table inet provision {\n}\n",
    }


# --- catalogue and ignores ---------------------------------------------------------------------


def _result(check_id: str, status: Status, detail: str = "") -> Result:
    return Result(check_id, "A title", "L1", "high", status, detail, "Do this.", 1)


def test_only_failing_ids_are_drift() -> None:
    results = (
        _result("HN-SYS-05", Status.FAIL, "kernel.kptr_restrict = 0, expected 2\nmore"),
        _result("HN-SYS-06", Status.PASS),
        _result("HN-SC-01", Status.WAIVED, "deviation"),
        _result("HN-SC-02", Status.SKIP, "not applicable"),
    )
    (item,) = guest.catalogue_items("n1", results)
    assert (item.key, item.expected, item.actual, item.fix) == (
        "HN-SYS-05",
        "PASS",
        "FAIL: kernel.kptr_restrict = 0, expected 2",
        Fix.REPLACE,
    )


def test_an_expired_ignore_no_longer_applies() -> None:
    items = [
        Item("n1", Layer.GUEST, "file:/etc/motd", "x", "y", Fix.MANUAL),
        Item("n1", Layer.GUEST, "package:vim", "x", "y", Fix.REPLACE),
    ]
    live = DriftIgnore("file:/etc/*", "the motd is the site's, edited by hand", None)
    expired = DriftIgnore("package:*", "a package freeze over the migration", date(2026, 11, 30))
    kept, ignored = split_ignored(items, (live, expired), date(2026, 12, 1))
    assert [i.key for i in kept] == ["package:vim"]
    assert [(i.key, g.pattern) for i, g in ignored] == [("file:/etc/motd", "file:/etc/*")]
    kept, ignored = split_ignored(items, (live, expired), date(2026, 11, 30))
    assert kept == [] and len(ignored) == 2


# --- Kubernetes (no cluster answers here: the cluster's answer is built from what we render) ----


@pytest.fixture(scope="module")
def k8s() -> Kubernetes:
    found = inventory.load(OSLO).kubernetes
    assert found is not None and found.namespaces
    return found


def _cluster(objects: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def test_a_cluster_as_rendered_is_clean(k8s: Kubernetes) -> None:
    assert guest.kubernetes_items("cp1", _cluster(k8s_manifests.manifests(k8s)), k8s) == []


def test_a_lost_default_deny_and_a_loosened_psa_label_are_drift(k8s: Kubernetes) -> None:
    ns = k8s.namespaces[0].name
    objects = [
        o
        for o in copy.deepcopy(k8s_manifests.manifests(k8s))
        if not (
            o["kind"] == "NetworkPolicy"
            and o["metadata"] == k8s_manifests.default_deny(ns)["metadata"]
        )
    ]
    for o in objects:
        if o["kind"] == "Namespace" and o["metadata"]["name"] == ns:
            o["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "baseline"
    keys = [i.key for i in guest.kubernetes_items("cp1", _cluster(objects), k8s) or []]
    assert keys == [f"k8s:netpol:{ns}", f"k8s:psa:{ns}"]


def test_no_cluster_is_no_evidence(k8s: Kubernetes) -> None:
    assert guest.kubernetes_items("cp1", "", k8s) is None
    assert guest.kubernetes_items("cp1", "error: connection refused", k8s) is None
