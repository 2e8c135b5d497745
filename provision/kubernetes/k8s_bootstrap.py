"""The Kubernetes bootstrap as playbook steps: prerequisites on every Kubernetes node, then (with
binaries) the bundle, the control plane, the workers' join and the workload policies, in that
order. `plan` shows the same steps.

The steps are data built from the inventory; the on-node scripts (cloudinit/k8s/) do the work and
each has a cheap `check`. Two things are not steps because they carry data between machines:
the airgap bundle (copied from here to each node) and the join material (a fresh token and the
CA hash, read from the control plane and written 0600 on each worker over SSH, never logged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from provision.config.playbook import (
    Emit,
    Playbook,
    PlaybookError,
    Run,
    RunAction,
    Selector,
    Step,
    StepResult,
    apply_playbooks,
)
from provision.core.errors import ProvisionError
from provision.core.model import Inventory, K8sInstall, Node, Role
from provision.kubernetes import k8s_bundle, k8s_pins
from provision.kubernetes.k8s_seed import SCRIPTS_DIR, is_k8s

NAME = "kubernetes"
# The upload lands in a directory only the admin user (and root) can enter, made by root under a
# root-owned parent: no other node user can pre-create the path, open the file while it is written
# or swap it before `bundle install` copies it and compares it with bundle_sha256.
BUNDLE_INCOMING = "/var/lib/provision/k8s-incoming"
NODE_BUNDLE = f"{BUNDLE_INCOMING}/bundle.tar"
JOIN_MATERIAL = "/var/lib/provision/k8s/join.env"  # written 0600 by `init` on the control plane
WORKER_JOIN_MATERIAL = "/etc/provision/k8s/join.env"
ALL = Selector(roles=(Role.K8S_CONTROL_PLANE, Role.K8S_WORKER))
CONTROL_PLANE = Selector(roles=(Role.K8S_CONTROL_PLANE,))
WORKERS = Selector(roles=(Role.K8S_WORKER,))


class KubernetesError(ProvisionError):
    pass


def _script(name: str, selector: Selector, *apply_args: str) -> Step:
    path = f"{SCRIPTS_DIR}/{name}"
    return Step(f"k8s-{name}", selector, RunAction((path, "check"), (path, *apply_args), True))


def steps(inv: Inventory) -> tuple[tuple[Step, ...], tuple[Step, ...]]:
    """(up to the control plane, after the join material is on the workers)."""
    k8s = inv.kubernetes
    if k8s is None or not any(is_k8s(n) for n in inv.nodes):
        return (), ()
    first = [_script("prereqs", ALL, "apply")]
    if k8s.install is K8sInstall.PREREQUISITES:
        return tuple(first), ()
    if k8s.install is K8sInstall.BUNDLE:
        first.append(_script("bundle", ALL, "install", NODE_BUNDLE, k8s.bundle_sha256 or ""))
    first.append(_script("init", CONTROL_PLANE, "apply"))
    second = (_script("join", WORKERS, "apply"), _script("policies", CONTROL_PLANE, "apply"))
    return tuple(first), second


def playbook(inv: Inventory) -> Playbook | None:
    """The whole bootstrap as one playbook, for `plan`."""
    first, second = steps(inv)
    if not first:
        return None
    return Playbook(NAME, Path("<inventory kubernetes section>"), (*first, *second))


def preflight(inv: Inventory) -> None:
    """Refuse the Kubernetes role before anything changes when a checksum or bundle is missing."""
    k8s = inv.kubernetes
    if k8s is None or not any(is_k8s(n) for n in inv.nodes):
        return
    k8s_pins.pins_for(k8s.version)  # no pinned checksums for the version: refused
    if k8s.install is K8sInstall.APT:
        k8s_pins.apt_source(k8s.version)  # refuses while the signing key is not pinned
    if k8s.install is K8sInstall.BUNDLE:
        if k8s.bundle is None or k8s.bundle_sha256 is None:
            raise KubernetesError("install: bundle needs bundle and bundle_sha256")
        if not k8s.bundle.is_file():
            raise KubernetesError(
                f"the Kubernetes bundle {k8s.bundle} does not exist",
                hint="build it (provision/kubernetes/k8s_bundle.py documents the format) or set "
                "install: prerequisites",
            )
        k8s_bundle.verify_bundle(k8s.bundle, k8s.bundle_sha256, k8s.version)


Upload = Callable[[str, Path, str], None]  # node, local file, remote path (0600)


def bootstrap(
    inv: Inventory, nodes: Sequence[Node], run: Run, upload: Upload, emit: Emit
) -> list[StepResult]:
    """Run the bootstrap on the inventory's Kubernetes nodes; idempotent like every playbook."""
    k8s = inv.kubernetes
    first, second = steps(inv)
    if k8s is None or not first:
        return []
    k8s_nodes = [n for n in nodes if is_k8s(n)]
    if second and not any(Role.K8S_CONTROL_PLANE in n.roles for n in k8s_nodes):
        raise KubernetesError(
            "the Kubernetes bootstrap needs the control-plane node in the run",
            hint="run `up` without --nodes, or include the control plane",
        )
    if k8s.install is K8sInstall.BUNDLE and k8s.bundle is not None:
        bundle_check = f"{SCRIPTS_DIR}/bundle"
        for node in k8s_nodes:
            if run(node.name, ("sudo", "-n", "--", bundle_check, "check"), None).returncode != 0:
                emit(node.name, f"{NAME}/copy-bundle", "start", str(k8s.bundle))
                _incoming(node, run)
                upload(node.name, k8s.bundle, NODE_BUNDLE)
                emit(node.name, f"{NAME}/copy-bundle", "applied", "")
    results = apply_playbooks([Playbook(NAME, Path("<kubernetes>"), first)], k8s_nodes, run, emit)
    if k8s.install is K8sInstall.BUNDLE:
        for node in k8s_nodes:  # installed (or refused): the copy is not needed any more
            run(node.name, ("sudo", "-n", "--", "rm", "-f", "--", NODE_BUNDLE), None)
    if not second:
        return results
    _hand_out_join_material(k8s_nodes, run, emit)
    results += apply_playbooks([Playbook(NAME, Path("<kubernetes>"), second)], k8s_nodes, run, emit)
    return results


def _incoming(node: Node, run: Run) -> None:
    made = run(
        node.name,
        ("sudo", "-n", "--", "install", "-d", "-o", node.admin.name, "-m", "0700", "--",
         BUNDLE_INCOMING),
        None,
    )  # fmt: skip
    if made.returncode != 0:
        raise PlaybookError(
            NAME, "copy-bundle", node.name, f"could not make {BUNDLE_INCOMING}",
            made.returncode, made.stderr.splitlines()[-5:],
        )  # fmt: skip


def _hand_out_join_material(nodes: Sequence[Node], run: Run, emit: Emit) -> None:
    """Copy a fresh token and the CA hash from the control plane to each worker not yet joined."""
    cp = next(n for n in nodes if Role.K8S_CONTROL_PLANE in n.roles)
    join = f"{SCRIPTS_DIR}/join"
    waiting = [
        n
        for n in nodes
        if Role.K8S_WORKER in n.roles
        and run(n.name, ("sudo", "-n", "--", join, "check"), None).returncode != 0
    ]
    if not waiting:
        return
    init = f"{SCRIPTS_DIR}/init"
    minted = run(cp.name, ("sudo", "-n", "--", init, "join-material"), None)
    material = run(cp.name, ("sudo", "-n", "--", "cat", "--", JOIN_MATERIAL), None)
    if minted.returncode != 0 or material.returncode != 0:
        raise PlaybookError(
            NAME,
            "join-material",
            cp.name,
            "could not mint the join material on the control plane",
            minted.returncode or material.returncode,
            (minted.stderr or material.stderr).splitlines()[-5:],
        )
    for n in waiting:
        emit(n.name, f"{NAME}/join-material", "start", "")
        put = run(
            n.name,
            ("sudo", "-n", "--", "install", "-m", "0600", "-o", "root", "-g", "root", "-T",
             "/dev/stdin", WORKER_JOIN_MATERIAL),
            material.stdout,
        )  # fmt: skip
        if put.returncode != 0:
            raise PlaybookError(
                NAME, "join-material", n.name, "could not write the join material",
                put.returncode, put.stderr.splitlines()[-5:],
            )  # fmt: skip
        emit(n.name, f"{NAME}/join-material", "applied", "")
