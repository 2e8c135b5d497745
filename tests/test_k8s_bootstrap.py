"""The Kubernetes bootstrap as steps: their order per install path, the refusals before anything
changes, the seed files per role, and the join-material hand-off (never in any output).

The bootstrap itself needs Kubernetes binaries this machine cannot reach: the orchestration is
exercised here against a scripted runner; the real guest runs the prerequisites step and the
scripts' refusals (tests/integration/test_kubernetes.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pytest

from provision.config import inventory
from provision.config.playbook import CommandResult
from provision.core.errors import ProvisionError
from provision.core.model import Inventory, K8sInstall, Kubernetes
from provision.kubernetes import k8s_bootstrap, k8s_seed
from tests.helpers import OSLO


def _oslo(install: K8sInstall, **k8s: object) -> Inventory:
    inv = inventory.load(OSLO)
    assert inv.kubernetes is not None
    return dataclasses.replace(
        inv, kubernetes=dataclasses.replace(inv.kubernetes, install=install, **k8s)
    )


def _names(inv: Inventory) -> list[str]:
    first, second = k8s_bootstrap.steps(inv)
    return [s.name for s in (*first, *second)]


def test_step_order_per_install_path() -> None:
    assert _names(_oslo(K8sInstall.PREREQUISITES)) == ["k8s-prereqs"]
    assert _names(_oslo(K8sInstall.APT)) == ["k8s-prereqs", "k8s-init", "k8s-join", "k8s-policies"]
    assert _names(_oslo(K8sInstall.BUNDLE)) == [
        "k8s-prereqs", "k8s-bundle", "k8s-init", "k8s-join", "k8s-policies"
    ]  # fmt: skip


def test_refusals_before_anything_changes(tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match=r"no pinned checksums for Kubernetes 1\.33\.0"):
        k8s_bootstrap.preflight(_oslo(K8sInstall.PREREQUISITES, version="1.33.0"))
    with pytest.raises(ProvisionError, match="not pinned"):
        k8s_bootstrap.preflight(_oslo(K8sInstall.APT))
    missing = _oslo(K8sInstall.BUNDLE, bundle=tmp_path / "nope.tar", bundle_sha256="0" * 64)
    with pytest.raises(ProvisionError, match="does not exist"):
        k8s_bootstrap.preflight(missing)
    fake = tmp_path / "bundle.tar"
    fake.write_bytes(b"not a bundle")
    with pytest.raises(ProvisionError, match="sha256"):
        k8s_bootstrap.preflight(_oslo(K8sInstall.BUNDLE, bundle=fake, bundle_sha256="0" * 64))
    k8s_bootstrap.preflight(_oslo(K8sInstall.PREREQUISITES))  # pinned version: accepted


def test_seed_files_per_role_hold_placeholders_not_secrets() -> None:
    inv = _oslo(K8sInstall.BUNDLE)
    cp = {f.path: f for f in k8s_seed.seed_files(inv, inv.node("cp1"))}
    worker = {f.path: f for f in k8s_seed.seed_files(inv, inv.node("w1"))}
    assert "/etc/provision/k8s/manifests/workloads.yaml" in cp
    assert "/etc/provision/k8s/manifests/workloads.yaml" not in worker
    assert (
        "__PROVISION_ENCRYPTION_KEY__"
        in cp["/etc/provision/k8s/encryption-config.yaml.tmpl"].content
    )
    join = worker["/etc/provision/k8s/kubeadm-join.yaml"].content
    assert "__PROVISION_JOIN_TOKEN__" in join and "10.40.0.11:6443" in join
    for f in (*cp.values(), *worker.values()):
        if f.path.startswith("/etc/provision/k8s/") and not f.path.endswith(("version", ".sha256")):
            assert f.mode == "0600", f.path
    assert cp["/usr/local/libexec/provision/k8s/init"].mode == "0755"
    assert k8s_seed.seed_files(inv, dataclasses.replace(inv.node("w1"), roles=())) == ()


def test_join_material_goes_only_to_workers_not_yet_joined_and_is_never_emitted() -> None:
    inv = _oslo(K8sInstall.APT)
    secret = "TOKEN=abcdef.0123456789abcdef\nCA_HASH=sha256:00\n"
    joined = {"w2"}
    calls: list[tuple[str, tuple[str, ...], str | None]] = []

    def run(node: str, argv: Sequence[str], stdin: str | None) -> CommandResult:
        argv = tuple(argv)
        calls.append((node, argv, stdin))
        if argv[-1] == "check":
            done = node in joined if "join" in argv[-2] else False
            return CommandResult(0 if done else 1, "", "")
        if argv[-2:] == ("--", k8s_bootstrap.JOIN_MATERIAL):
            return CommandResult(0, secret, "")
        if argv[-1] == "apply" and argv[-2].endswith("/join"):
            joined.add(node)
        return CommandResult(0, "", "")

    emitted: list[str] = []
    k8s_bootstrap._hand_out_join_material(inv.nodes, run, lambda *a: emitted.append(repr(a)))
    puts = [(n, stdin) for n, argv, stdin in calls if k8s_bootstrap.WORKER_JOIN_MATERIAL in argv]
    assert puts == [("w1", secret), ("w3", secret)]
    assert not any("abcdef" in e for e in emitted)


def test_an_inventory_without_kubernetes_has_no_bootstrap() -> None:
    inv = inventory.load(OSLO)
    plain = dataclasses.replace(
        inv, kubernetes=None, nodes=tuple(dataclasses.replace(n, roles=()) for n in inv.nodes)
    )
    assert k8s_bootstrap.playbook(plain) is None
    assert isinstance(inv.kubernetes, Kubernetes)


def test_the_bundle_goes_into_a_private_directory_and_is_checked_by_digest_there(
    tmp_path: Path,
) -> None:
    """Issue #15: the bundle used to go to a fixed /var/tmp path any node user could pre-create.
    Now root makes a 0700 directory owned by the admin user before each upload, the install step
    hands the node bundle_sha256 to compare with what it received, and the copy is removed."""
    bundle = tmp_path / "bundle.tar"
    bundle.write_bytes(b"bundle")
    inv = _oslo(K8sInstall.BUNDLE, bundle=bundle, bundle_sha256="ab" * 32)
    calls: list[tuple[str, tuple[str, ...]]] = []
    installed = False

    def run(node: str, argv: Sequence[str], stdin: str | None) -> CommandResult:
        nonlocal installed
        calls.append((node, tuple(argv)))
        if "install" in argv and k8s_bootstrap.NODE_BUNDLE in argv:
            installed = True
        missing = argv[-1] == "check" and argv[-2].endswith("/bundle") and not installed
        return CommandResult(1 if missing else 0, "", "")

    uploads: list[tuple[str, str]] = []
    cp = inv.node("cp1")
    k8s_bootstrap.bootstrap(
        inv, [cp], run, lambda n, local, remote: uploads.append((n, remote)), lambda *a: None
    )
    assert uploads == [("cp1", k8s_bootstrap.NODE_BUNDLE)]
    assert k8s_bootstrap.NODE_BUNDLE.startswith(k8s_bootstrap.BUNDLE_INCOMING + "/")
    argvs = [argv for _node, argv in calls]
    made = argvs.index(
        ("sudo", "-n", "--", "install", "-d", "-o", cp.admin.name, "-m", "0700", "--",
         k8s_bootstrap.BUNDLE_INCOMING)
    )  # fmt: skip
    install = next(
        i for i, a in enumerate(argvs) if a[-3:-1] == ("install", k8s_bootstrap.NODE_BUNDLE)
    )
    assert argvs[install][-1] == "ab" * 32
    removed = argvs.index(("sudo", "-n", "--", "rm", "-f", "--", k8s_bootstrap.NODE_BUNDLE))
    assert made < install < removed
