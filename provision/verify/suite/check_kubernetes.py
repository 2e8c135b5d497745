"""A.13 Kubernetes node prerequisites: the container runtime and kubeadm's preflight list.

These hold on every node with a Kubernetes role from first boot, before (and without) the
cluster: containerd with the systemd cgroup driver and the CNI directory the CNIs use
(HN-K8S-13), swap off, a DNS-valid hostname, the tools kubeadm needs and its ports free or
taken by its own components (HN-K8S-14). The expectations are the catalogue's, written here
independently of the renderer (provision/kubernetes/k8s_config.py).
"""

from __future__ import annotations

import re

from provision.verify.checks import check
from provision.verify.plugin import Facts
from provision.verify.snapshot import Snapshot

K8S_FIX = (
    "containerd's config is /etc/containerd/config.toml (rendered from "
    "provision/kubernetes/k8s_config.py); "
    "`/usr/local/libexec/provision/k8s/prereqs apply` restores the prerequisites."
)
# kubeadm preflight (kubeadm implementation details, "Preflight checks").
KUBEADM_TOOLS = ("ip", "iptables", "mount", "nsenter", "conntrack", "socat", "ethtool")
KUBEADM_PORTS = {6443, 10250, 10257, 10259, 2379, 2380}
# Once the cluster runs, these processes own those ports.
KUBE_PROCESSES = ("kube-apiserver", "kubelet", "kube-controller", "kube-scheduler", "etcd")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@check(
    "HN-K8S-13",
    "Ensure containerd runs the CRI with SystemdCgroup and the CNI bin_dir the CNIs use",
    level="L1",
    severity="high",
    remediation=K8S_FIX,
    roles="k8s",
)
def test_containerd_cri(snap: Snapshot, facts: Facts) -> None:
    assert snap.service("containerd").is_running, "containerd is not running"
    config = facts("containerd-config")
    assert re.search(r"^\s*SystemdCgroup = true$", config, re.M), "SystemdCgroup is not true"
    assert re.search(r'^\s*bin_dir = "/opt/cni/bin"$', config, re.M), (
        "CNI bin_dir is not /opt/cni/bin (Debian's /usr/lib/cni is where no CNI installs)"
    )
    assert not re.search(r'disabled_plugins = \[[^]]*"cri"', config), "the CRI plugin is disabled"


@check(
    "HN-K8S-14",
    "Ensure kubeadm's preflight holds: swap off, DNS hostname, tools present, ports free",
    level="L1",
    severity="high",
    remediation=K8S_FIX,
    roles="k8s",
)
def test_kubeadm_preflight(snap: Snapshot) -> None:
    swaps = snap.file("/proc/swaps").content_string.strip().splitlines()[1:]
    assert not swaps, f"swap is on: {swaps}"
    hostname = snap.output("hostname")
    assert DNS_LABEL.fullmatch(hostname), f"hostname {hostname!r} is not a DNS label"
    # Looked up on root's PATH (kubeadm runs as root, whose PATH has the sbin directories a
    # login's lacks) by the snapshot's `kubeadm-tools` part.
    found = snap.output("kubeadm-tools").split()
    missing = [t for t in KUBEADM_TOOLS if not any(f.endswith(f"/{t}") for f in found)]
    assert not missing, f"kubeadm needs {', '.join(missing)}"
    taken = []
    for spec in snap.listening_sockets():
        proto, _, rest = spec.partition("://")
        port = rest.rpartition(":")[2]
        if proto == "tcp" and port.isdigit() and int(port) in KUBEADM_PORTS:
            taken.append(int(port))
    if taken:
        running = snap.output("ps-comm")
        ours = any(p in running for p in KUBE_PROCESSES)
        assert ours, f"kubeadm's ports {sorted(taken)} are taken by something else"
