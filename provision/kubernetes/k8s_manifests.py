"""The Kubernetes API objects applied once the control plane answers, as plain dicts.

For every workload namespace of the inventory: the Namespace with Pod Security `restricted`
labels, its default ServiceAccount without a token, a ResourceQuota and LimitRange, a
default-deny NetworkPolicy for both directions, an allow-DNS egress policy, the inventory's
allow rules, and optionally a restricted sample Deployment. Pure: the objects are validated
against the official schemas in tests, and `netpol.coverage` must find them all OK.
Check ids (HN-POL-*, HN-CRT-*) refer to the hardening catalogue.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from provision.core.model import AllowRule, Kubernetes, WorkloadNamespace
from provision.kubernetes.k8s_config import (
    PAUSE_IMAGE,
    PSA_LEVEL,
    PSA_MODES,
    YamlDumper,
    minor_version,
)

MANAGED_BY = {"app.kubernetes.io/managed-by": "provision"}  # what `drift` looks for
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace
PSA_LABEL_PREFIX = "pod-security.kubernetes.io/"
DNS_NAMESPACE = "kube-system"
DNS_POD_LABELS = {"k8s-app": "kube-dns"}  # CoreDNS as kubeadm deploys it
DNS_PORT = 53

DEFAULT_DENY = "default-deny-all"
ALLOW_DNS = "allow-dns-egress"
QUOTA = "workload-quota"
LIMITS = "workload-limits"

# HN-POL-07: a namespace cannot take the whole cluster. The quota counts limits, so the
# LimitRange's defaults are what lets a pod without resources in at all.
QUOTA_HARD = {
    "requests.cpu": "2",
    "requests.memory": "2Gi",
    "limits.cpu": "4",
    "limits.memory": "4Gi",
    "pods": "20",
    "services.nodeports": "0",  # NodePorts open the node itself; ask for them explicitly
    "services.loadbalancers": "0",
}
CONTAINER_DEFAULT = {"cpu": "500m", "memory": "256Mi"}
CONTAINER_DEFAULT_REQUEST = {"cpu": "100m", "memory": "128Mi"}
CONTAINER_MAX = {"cpu": "2", "memory": "2Gi"}

SAMPLE = "sample"
# The pause image is the one image every node already holds (it is containerd's sandbox image,
# carried by the airgap bundle), so the sample runs without a registry. Pinning it by digest
# would be better still, but a digest cannot be checked from here and must never be invented.
SAMPLE_IMAGE = PAUSE_IMAGE
SAMPLE_UID = 65535  # the pause image's own non-root user
SAMPLE_RESOURCES = {
    "requests": {"cpu": "10m", "memory": "16Mi"},
    "limits": {"cpu": "100m", "memory": "32Mi"},
}


def manifests(k8s: Kubernetes) -> list[dict[str, Any]]:
    """Every object, in apply order: all Namespaces first (a policy in one namespace may be
    placed there by another namespace's allow rule), then each namespace's objects."""
    objects: list[dict[str, Any]] = [namespace(k8s, ns) for ns in k8s.namespaces]
    workload = {ns.name for ns in k8s.namespaces}
    for ns in k8s.namespaces:
        objects += [
            default_service_account(ns.name),
            resource_quota(ns.name),
            limit_range(ns.name),
            default_deny(ns.name),
            allow_dns(ns.name),
        ]
        for rule in ns.allow:
            objects += allow_rule_policies(ns.name, rule, workload)
        if ns.sample_workload:
            objects.append(sample_deployment(ns.name))
    return objects


def to_yaml(objects: Iterable[dict[str, Any]]) -> str:
    """Multi-document YAML in the given order, keys in the order they were built."""
    return yaml.dump_all(list(objects), Dumper=YamlDumper, sort_keys=False, explicit_start=True)


def _meta(name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    labels = {**MANAGED_BY, **extra.pop("labels", {})}
    return {**meta, "labels": labels, **extra}


def psa_labels(k8s: Kubernetes) -> dict[str, str]:
    """HN-POL-01: restricted for enforce, audit and warn, with the version pinned so an upgrade
    of the cluster does not silently change what is enforced."""
    labels = {}
    for mode in PSA_MODES:
        labels[f"{PSA_LABEL_PREFIX}{mode}"] = PSA_LEVEL
        labels[f"{PSA_LABEL_PREFIX}{mode}-version"] = minor_version(k8s)
    return labels


def namespace(k8s: Kubernetes, ns: WorkloadNamespace) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": _meta(ns.name, labels=psa_labels(k8s)),
    }


def default_service_account(ns: str) -> dict[str, Any]:
    """HN-POL-04: pods get no API token unless their own ServiceAccount asks for one."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta("default", ns),
        "automountServiceAccountToken": False,
    }


def resource_quota(ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _meta(QUOTA, ns),
        "spec": {"hard": dict(QUOTA_HARD)},
    }


def limit_range(ns: str) -> dict[str, Any]:
    limits = {
        "type": "Container",
        "default": dict(CONTAINER_DEFAULT),
        "defaultRequest": dict(CONTAINER_DEFAULT_REQUEST),
        "max": dict(CONTAINER_MAX),
    }
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _meta(LIMITS, ns),
        "spec": {"limits": [limits]},
    }


def _policy(name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(name, ns),
        "spec": spec,
    }


def _selector(labels: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """A podSelector: `{}` (every pod) when there are no labels."""
    match = dict(labels)
    return {"matchLabels": match} if match else {}


def _namespace_selector(name: str) -> dict[str, Any]:
    return {"matchLabels": {NAMESPACE_NAME_LABEL: name}}


def default_deny(ns: str) -> dict[str, Any]:
    """HN-POL-02: selects every pod and lists both directions with no rules, so nothing gets in
    or out unless another policy allows it. policyTypes is explicit: omitted, it would mean
    Ingress only, since the policy has no egress rules."""
    return _policy(DEFAULT_DENY, ns, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})


def allow_dns(ns: str) -> dict[str, Any]:
    """The egress deny also blocks name resolution: allow UDP and TCP 53 to CoreDNS only."""
    peer = {
        "namespaceSelector": _namespace_selector(DNS_NAMESPACE),
        "podSelector": {"matchLabels": dict(DNS_POD_LABELS)},
    }
    ports = [{"protocol": proto, "port": DNS_PORT} for proto in ("UDP", "TCP")]
    spec = {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"to": [peer], "ports": ports}],
    }
    return _policy(ALLOW_DNS, ns, spec)


def _ports(rule: AllowRule) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in rule.ports]


def allow_rule_policies(ns: str, rule: AllowRule, workload: set[str]) -> list[dict[str, Any]]:
    """The ingress policy for `rule` in its namespace, plus the egress policies the clients'
    side needs: both ends deny egress by default, so an ingress allow alone would still drop
    the traffic at the client. Source namespaces outside the inventory manage their own egress.

    A rule without sources opens its pods to every source (the inventory only accepts that
    with `pods` set); one without pods and sources would be an allow-all decoy and is refused.
    """
    if not rule.pods and not rule.from_namespaces and not rule.from_pods:
        raise ValueError(f"allow rule {ns}/{rule.name} selects every pod from every source")
    peers: list[dict[str, Any]] = [
        {"namespaceSelector": _namespace_selector(source)} for source in rule.from_namespaces
    ]
    if rule.from_pods:
        peers.append({"podSelector": _selector(rule.from_pods)})
    ingress: dict[str, Any] = {}
    if peers:
        ingress["from"] = peers
    if rule.ports:
        ingress["ports"] = _ports(rule)
    spec = {"podSelector": _selector(rule.pods), "policyTypes": ["Ingress"], "ingress": [ingress]}
    policies = [_policy(rule.name, ns, spec)]

    def egress(name: str, where: str, clients: dict[str, Any], peer: dict[str, Any]) -> None:
        to: dict[str, Any] = {"to": [peer]}
        if rule.ports:
            to["ports"] = _ports(rule)
        spec = {"podSelector": clients, "policyTypes": ["Egress"], "egress": [to]}
        policies.append(_policy(name, where, spec))

    if rule.from_pods:
        target = {"podSelector": _selector(rule.pods)}
        egress(f"{rule.name}-egress", ns, _selector(rule.from_pods), target)
    for source in rule.from_namespaces:
        if source in workload:
            target = {
                "namespaceSelector": _namespace_selector(ns),
                "podSelector": _selector(rule.pods),
            }
            egress(f"{ns}-{rule.name}-egress", source, {}, target)
    return policies


def sample_deployment(ns: str) -> dict[str, Any]:
    """A workload that passes PSA restricted and more (HN-CRT-02..06, HN-POL-04/05): non-root
    with a fixed UID, no privilege escalation, every capability dropped, a read-only root
    filesystem (not part of restricted), seccomp RuntimeDefault, resources set, no API token."""
    labels = {"app.kubernetes.io/name": SAMPLE}
    container = {
        "name": SAMPLE,
        "image": SAMPLE_IMAGE,
        "imagePullPolicy": "IfNotPresent",  # the node has it; there may be no registry
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": SAMPLE_UID,
            "runAsGroup": SAMPLE_UID,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {k: dict(v) for k, v in SAMPLE_RESOURCES.items()},
    }
    pod_spec = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # no other service's address in the environment
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SAMPLE_UID,
            "runAsGroup": SAMPLE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(SAMPLE, ns, labels=labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
