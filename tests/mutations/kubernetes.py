"""HN-K8S-13/14: containerd's CRI and kubeadm's preflight, on the recorded node made a
Kubernetes worker (tests/mutations/filesystem.py's `kubeadm_node`)."""

from __future__ import annotations

from tests.mutations import Edit, Mutation, answer, content, mutation, replace
from tests.mutations.filesystem import WORKER, kubeadm_node

SWAP = "/dev/vdb                                partition\t1048572\t\t0\t\t-2\n"


def _k8s(check_id: str, what: str, change: Edit, also: str = "") -> Mutation:
    return mutation(check_id, what, change, also=also, setup=kubeadm_node(), roles=WORKER)


def _stopped(name: str) -> Edit:
    return answer("commands", f"is-active {name}", 3, "inactive\n")


MUTATIONS = [
    _k8s("HN-K8S-13", "containerd stopped", _stopped("containerd")),
    _k8s(
        "HN-K8S-13",
        "cgroupfs driver",
        replace("verbs", "containerd-config", "SystemdCgroup = true", "SystemdCgroup = false"),
    ),
    _k8s(
        "HN-K8S-13",
        "Debian's CNI bin_dir",
        replace("verbs", "containerd-config", '"/opt/cni/bin"', '"/usr/lib/cni"'),
    ),
    _k8s(
        "HN-K8S-13",
        "CRI plugin disabled",
        replace(
            "verbs", "containerd-config", "disabled_plugins = []", 'disabled_plugins = ["cri"]'
        ),
    ),
    _k8s(
        "HN-K8S-14",
        "swap on",
        content("/proc/swaps", "Priority\n", "Priority\n" + SWAP),
        also="HN-BOOT-10",
    ),
    _k8s(
        "HN-K8S-14",
        "hostname not a DNS label",
        replace("commands", "hostname", "pvdev5", "pv_dev5"),
    ),
    _k8s(
        "HN-K8S-14",
        "no conntrack",
        replace("commands", "kubeadm-tools", "/usr/sbin/conntrack\n", ""),
    ),
    _k8s(
        "HN-K8S-14",
        "port 10250 taken by something else",
        replace("commands", "ss-listening", "0.0.0.0:22 ", "0.0.0.0:10250 "),
    ),
]
