"""The hardening decisions (provision/baseline/hardening.py): sysctls per role, deviations,
firewall."""

from __future__ import annotations

import dataclasses
import re

import pytest

from provision.baseline import hardening
from provision.config import inventory
from provision.core.model import DockerMode, Node, Role
from tests.helpers import LOCAL

BASE = inventory.load(LOCAL).nodes[0]


def _node(docker: DockerMode, *roles: Role, sysctl: tuple[tuple[str, str], ...] = ()) -> Node:
    return dataclasses.replace(BASE, docker=docker, roles=roles, sysctl=sysctl)


ROOTLESS = _node(DockerMode.ROOTLESS)
ROOTFUL = _node(DockerMode.ROOTFUL)
NONE = _node(DockerMode.NONE)
WORKER = _node(DockerMode.NONE, Role.K8S_WORKER)
CONTROL_PLANE = _node(DockerMode.ROOTLESS, Role.K8S_CONTROL_PLANE)


def _set(node: Node) -> dict[str, str]:
    return dict(hardening.sysctls(node))


@pytest.mark.parametrize("node", [ROOTLESS, ROOTFUL, NONE, WORKER, CONTROL_PLANE])
def test_every_node_gets_the_baseline(node: Node) -> None:
    s = _set(node)
    for key, value in (
        ("kernel.kptr_restrict", "2"),
        ("kernel.yama.ptrace_scope", "2"),
        ("kernel.unprivileged_bpf_disabled", "1"),
        ("-dev.tty.legacy_tiocsti", "0"),
        ("-kernel.io_uring_disabled", "2"),
        ("fs.protected_fifos", "2"),
        ("net.ipv4.conf.default.rp_filter", "1"),
        ("net.ipv6.conf.all.accept_ra", "0"),
        ("net.ipv4.tcp_timestamps", "1"),
        ("net.ipv4.icmp_ratemask", "88089"),
        ("vm.mmap_rnd_bits", "32"),
    ):
        assert s[key] == value
    assert "kernel.modules_disabled" not in s  # deviation HN-SYS-11


def test_each_key_appears_once_per_node() -> None:
    for node in (ROOTLESS, ROOTFUL, NONE, WORKER, CONTROL_PLANE):
        keys = [r.key for r in hardening.sysctl_rules(node)]
        assert len(keys) == len(set(keys))


def test_rootless_node_allows_user_namespaces_but_does_not_forward() -> None:
    s = _set(ROOTLESS)
    assert s["user.max_user_namespaces"] == "28633"
    assert s["kernel.unprivileged_userns_clone"] == "1"
    assert s["net.ipv4.ip_forward"] == "0"
    assert s["net.ipv6.conf.all.forwarding"] == "0"
    assert "net.bridge.bridge-nf-call-iptables" not in s
    assert hardening.modules(ROOTLESS) == ()


def test_rootful_node_forwards_ipv4_through_br_netfilter() -> None:
    s = _set(ROOTFUL)
    assert s["user.max_user_namespaces"] == "28633"
    assert s["net.ipv4.ip_forward"] == "1"
    assert s["net.ipv6.conf.all.forwarding"] == "0"
    assert s["net.bridge.bridge-nf-call-iptables"] == "1"
    assert s["net.bridge.bridge-nf-call-ip6tables"] == "1"
    assert hardening.modules(ROOTFUL) == ("overlay", "br_netfilter")


def test_node_without_docker_or_kubernetes_has_no_user_namespaces() -> None:
    s = _set(NONE)
    assert s["user.max_user_namespaces"] == "0"
    assert s["kernel.unprivileged_userns_clone"] == "0"
    assert s["net.ipv4.ip_forward"] == "0"


@pytest.mark.parametrize("node", [WORKER, CONTROL_PLANE])
def test_kubernetes_nodes_forward_both_families(node: Node) -> None:
    s = _set(node)
    assert s["net.ipv4.ip_forward"] == "1"
    assert s["net.ipv6.conf.all.forwarding"] == "1"
    assert s["net.bridge.bridge-nf-call-iptables"] == "1"
    assert s["user.max_user_namespaces"] == "28633"
    assert hardening.modules(node) == ("overlay", "br_netfilter")


def test_forwarding_is_set_before_the_redirect_settings() -> None:
    """Writing ip_forward resets conf.all.accept_redirects in the kernel: order matters."""
    for node in (ROOTLESS, ROOTFUL):
        keys = [k for k, _ in hardening.sysctls(node)]
        assert keys.index("net.ipv4.ip_forward") < keys.index("net.ipv4.conf.all.accept_redirects")


def test_inventory_overrides_apply_last_and_keep_their_position() -> None:
    node = _node(DockerMode.ROOTLESS, sysctl=(("kernel.yama.ptrace_scope", "1"), ("vm.x", "5")))
    pairs = hardening.sysctls(node)
    assert dict(pairs)["kernel.yama.ptrace_scope"] == "1"
    assert pairs[-1] == ("vm.x", "5")
    base = [k for k, _ in hardening.sysctls(ROOTLESS)]
    assert [k for k, _ in pairs[:-1]] == base


def test_every_sysctl_rule_names_a_catalogue_check() -> None:
    for rule in hardening.SYSCTLS:
        assert re.fullmatch(r"HN-SYS-\d\d", rule.check_id), rule
        assert rule.source and rule.name == rule.key.lstrip("-")


def test_deviations_are_well_formed_and_explained() -> None:
    ids = [d.check_id for d in hardening.DEVIATIONS]
    assert len(ids) == len(set(ids))
    for d in hardening.DEVIATIONS:
        assert re.fullmatch(r"HN-[A-Z]+-\d\d", d.check_id), d
        assert d.title.strip()
        assert len(d.reason.split()) >= 8 and d.reason.endswith("."), d


def test_deviations_name_every_deliberate_choice() -> None:
    required = {
        "HN-SYS-06", "HN-SYS-07", "HN-SYS-08", "HN-SYS-09", "HN-SYS-11", "HN-SYS-30",
        "HN-BOOT-03", "HN-SSH-08", "HN-SSH-09", "HN-FS-01", "HN-FS-02", "HN-LOG-01",
    }  # fmt: skip
    assert required <= {d.check_id for d in hardening.DEVIATIONS}


def test_firewall_accepts_ssh_on_every_node() -> None:
    for node in (ROOTLESS, ROOTFUL, NONE, WORKER, CONTROL_PLANE):
        assert ("tcp", hardening.SSH_PORT) in hardening.firewall_ports(node)
        assert hardening.SSH_PORT == 22


def test_kernel_cmdline_keeps_integrity_lockdown_and_module_signatures() -> None:
    cmdline = hardening.kernel_cmdline(BASE).split()
    for param in (
        "lockdown=integrity",
        "module.sig_enforce=1",
        "iommu.strict=1",
        "iommu.passthrough=0",
        "hardened_usercopy=1",
        "kfence.sample_interval=100",
        "slab_nomerge",
        "audit=1",
    ):
        assert param in cmdline
    assert "lockdown=confidentiality" not in cmdline


def test_blacklist_never_touches_container_modules() -> None:
    for module in ("overlay", "br_netfilter", "nf_conntrack", "vxlan"):
        assert module not in hardening.BLACKLISTED_MODULES


def test_verifier_constants() -> None:
    assert hardening.VERIFIER_USER == "verifier"
    assert hardening.FACTS_HELPER == "/usr/local/libexec/provision/verify-facts"
