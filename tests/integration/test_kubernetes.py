"""A real control-plane node, up to the line this machine cannot cross: the Kubernetes binaries.

One boot. `up` renders the cluster files into the seed, runs the bootstrap playbook (here
`install: prerequisites`: modules, sysctls, swap, containerd) and verifies the node, including
HN-K8S-13/14 and the kubelet's kernel defaults. Then, in the guest: the bootstrap scripts stop
exactly where they would run kubeadm, and a tampered airgap bundle is refused by the node's own
verifier. The full bootstrap needs an airgap bundle (PROVISION_K8S_BUNDLE and _SHA256); without
one that test is skipped, and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.boundary import ssh
from provision.config import inventory
from provision.kubernetes import netpol
from provision.state import workspace
from tests.test_k8s_bundle import good_files, write_bundle

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("PROVISION_TEST_STATE", "/var/lib/provision-test"))
NODE = "pv-k8s-cp"
SCRIPTS = "/usr/local/libexec/provision/k8s"
BUNDLE_ENV = "PROVISION_K8S_BUNDLE"


def provision(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provision.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=2400,
    )


def _doc(install: str = "prerequisites") -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "inventories" / "local.yaml").read_text())
    doc["name"] = "k8s-it"
    doc["state_dir"] = str(STATE)
    doc["hypervisors"]["local"]["pool_name"] = "provision-k8s"
    doc["hypervisors"]["local"]["pool_path"] = str(STATE / "k8s-pool")
    doc["defaults"].update({"docker": "none", "memory_mib": 1536})
    doc.pop("playbooks", None)
    doc["kubernetes"] = {
        "install": install,
        "namespaces": {
            "shop": {
                "sample_workload": True,
                "allow": {"web": {"pods": {"app": "web"}, "from_namespaces": ["edge"]}},
            },
            "edge": {},
        },
    }
    doc["nodes"] = {NODE: {"ssh_port": 10141, "roles": ["k8s-control-plane"]}}
    return doc


@pytest.fixture(scope="module")
def inv_path(tmp_path_factory: pytest.TempPathFactory, golden_image: object) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("k8s") / "k8s-it.yaml"
    path.write_text(yaml.safe_dump(_doc(), sort_keys=False))
    provision("down", "-i", str(path), "--purge")
    yield path
    provision("down", "-i", str(path), "--purge")


@pytest.fixture(scope="module")
def first_up(inv_path: Path) -> dict[str, Any]:
    run = provision("up", "-i", str(inv_path), "--json")
    assert run.returncode in (0, 1) and '"summary"' in run.stdout, run.stderr[-3000:]
    summary: dict[str, Any] = json.loads(run.stdout.splitlines()[-1])
    summary["events"] = [json.loads(x) for x in run.stdout.splitlines() if x.startswith('{"t"')]
    return summary


@pytest.fixture(scope="module")
def session(inv_path: Path, first_up: dict[str, Any]) -> Iterator[ssh.Session]:
    inv = inventory.load(inv_path)
    rendered, _ = workspace.render_inventory(inv, inv.nodes)
    with ssh.connect(workspace.ssh_target(inv, rendered.nodes[0])) as s:
        yield s


def _verdicts(summary: dict[str, Any]) -> dict[str, str]:
    [node] = summary["verify"]["nodes"]
    return {r["id"]: r["status"] for r in node["results"]}


def test_up_runs_the_prerequisites_step_and_verifies_the_node(first_up: dict[str, Any]) -> None:
    played = [e["detail"] for e in first_up["events"] if e["phase"] == "playbook"]
    assert any(d.startswith("kubernetes/k8s-prereqs ") for d in played), played
    verdicts = _verdicts(first_up)
    for check_id in ("HN-K8S-13", "HN-K8S-14", "HN-SYS-23", "HN-SYS-26", "HN-SYS-09", "HN-FW-02"):
        assert verdicts[check_id] == "pass", (check_id, verdicts[check_id])
    failed = {k: v for k, v in verdicts.items() if v in ("fail", "error")}
    assert not failed, failed


def test_prerequisites_hold_in_the_guest(session: ssh.Session) -> None:
    out = session.run(["sudo", "-n", f"{SCRIPTS}/prereqs", "check"], check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    modules = session.run(["cat", "/proc/modules"]).stdout
    assert "br_netfilter " in modules and "overlay " in modules
    for key, want in (
        ("net.ipv4.ip_forward", "1"),
        ("net.bridge.bridge-nf-call-iptables", "1"),
        ("vm.overcommit_memory", "1"),
        ("kernel.panic_on_oops", "1"),
    ):
        proc = "/proc/sys/" + key.replace(".", "/")
        assert session.run(["cat", proc]).stdout.strip() == want, key
    assert session.run(["cat", "/proc/swaps"]).stdout.strip().count("\n") == 0
    dump = session.run(["sudo", "-n", "containerd", "config", "dump"]).stdout
    assert "SystemdCgroup = true" in dump


def test_cluster_files_are_in_place_without_secrets(session: ssh.Session) -> None:
    for path in (
        "/etc/provision/k8s/kubeadm-init.yaml",
        "/etc/provision/k8s/encryption-config.yaml.tmpl",
        "/etc/provision/k8s/manifests/workloads.yaml",
    ):
        mode = session.run(["sudo", "-n", "stat", "-c", "%a %U", path]).stdout.strip()
        assert mode == "600 root", (path, mode)
    template = session.run(["sudo", "-n", "cat", "/etc/provision/k8s/encryption-config.yaml.tmpl"])
    assert "__PROVISION_ENCRYPTION_KEY__" in template.stdout
    manifests = list(
        yaml.safe_load_all(
            session.run(["sudo", "-n", "cat", "/etc/provision/k8s/manifests/workloads.yaml"]).stdout
        )
    )
    report = netpol.coverage(manifests, ["shop", "edge"])
    assert report.ok, report.text()


def test_bootstrap_stops_where_it_would_run_kubeadm(session: ssh.Session) -> None:
    run = session.run(["sudo", "-n", f"{SCRIPTS}/init", "apply"], check=False)
    assert run.returncode == 4, run.stdout + run.stderr
    assert "kubeadm" in run.stderr and "not installed" in run.stderr
    # Nothing generated before the refusal: no encryption key on the node.
    gone = session.run(["sudo", "-n", "test", "-e", "/etc/kubernetes/enc/encryption-config.yaml"],
                       check=False)  # fmt: skip
    assert gone.returncode == 1


def test_the_node_refuses_a_tampered_bundle(session: ssh.Session, tmp_path: Path) -> None:
    """Fake binaries in the real layout: the node's pins are the upstream checksums, so every
    binary is refused, as a bundle with a swapped binary would be."""
    bundle = tmp_path / "bundle.tar"
    digest = write_bundle(bundle, good_files())
    session.put_file("/var/tmp/tampered.tar", bundle, 0o600)
    run = session.run(["sudo", "-n", f"{SCRIPTS}/bundle", "verify", "/var/tmp/tampered.tar",
                       digest], check=False)  # fmt: skip
    assert run.returncode == 3, run.stdout + run.stderr
    assert "kubeadm" in run.stderr
    session.run(["rm", "-f", "/var/tmp/tampered.tar"])


def test_up_refuses_a_tampered_bundle_before_changing_anything(
    inv_path: Path, tmp_path: Path, first_up: dict[str, Any]
) -> None:
    bundle = tmp_path / "bundle.tar"
    digest = write_bundle(bundle, good_files())
    doc = _doc("bundle")
    doc["kubernetes"].update({"bundle": str(bundle), "bundle_sha256": digest})
    path = tmp_path / "k8s-it.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    run = provision("up", "-i", str(path), "--no-verify")
    assert run.returncode == 1, run.stderr
    assert "kubeadm" in run.stderr and "Traceback" not in run.stderr
    assert provision("plan", "-i", str(inv_path), "--json").returncode == 0


def test_full_bootstrap_with_an_airgap_bundle(inv_path: Path, session: ssh.Session) -> None:
    bundle = os.environ.get(BUNDLE_ENV)
    if not bundle:
        pytest.skip(
            f"no airgap bundle: the Kubernetes binaries are not reachable from this machine; "
            f"set {BUNDLE_ENV}=PATH and {BUNDLE_ENV}_SHA256=HEX to run the real bootstrap"
        )
    doc = _doc("bundle")
    doc["kubernetes"].update(
        {"bundle": bundle, "bundle_sha256": os.environ[f"{BUNDLE_ENV}_SHA256"]}
    )
    inv_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    run = provision("up", "-i", str(inv_path), "--no-verify")
    assert run.returncode == 0, run.stderr[-3000:]
    kubectl = ["sudo", "-n", "kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf"]
    ns = json.loads(session.run([*kubectl, "get", "ns", "shop", "-o", "json"]).stdout)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    policies = json.loads(session.run([*kubectl, "get", "netpol", "-A", "-o", "json"]).stdout)
    report = netpol.coverage(policies["items"], ["shop", "edge"])
    assert report.ok, report.text()
    privileged = session.run(
        [*kubectl, "run", "p", "-n", "shop", "--image=registry.k8s.io/pause:3.10.1",
         "--dry-run=server", '--overrides={"spec":{"containers":[{"name":"p",'
         '"image":"registry.k8s.io/pause:3.10.1","securityContext":{"privileged":true}}]}}'],
        check=False,
    )  # fmt: skip
    assert privileged.returncode != 0 and "restricted" in privileged.stderr
