"""The API objects applied after bootstrap (provision/kubernetes/k8s_manifests.py): every one
validated offline against the official schema of the pinned Kubernetes version
(kubernetes-validate), and the Pod Security, NetworkPolicy and quota choices of
HN-POL-01/02/04/07 asserted."""

from __future__ import annotations

import dataclasses
from typing import Any

import kubernetes_validate
import pytest
import yaml

from provision.core.model import AllowRule, K8sInstall, Kubernetes, WorkloadNamespace
from provision.kubernetes import k8s_config, netpol
from provision.kubernetes import k8s_manifests as km

WEB = AllowRule(
    name="web",
    pods=(("app", "web"),),
    from_namespaces=("batch", "edge"),  # batch is a workload namespace, edge is not
    from_pods=(("app", "client"),),
    ports=(8080, 8443),
)
K8S = Kubernetes(
    version="1.34.3",
    install=K8sInstall.BUNDLE,
    bundle=None,
    bundle_sha256=None,
    pod_cidr="10.244.0.0/16",
    service_cidr="10.96.0.0/12",
    api_port=6443,
    namespaces=(
        WorkloadNamespace("shop", (WEB,), sample_workload=True),
        WorkloadNamespace("batch", (), sample_workload=False),
    ),
)
OBJECTS = km.manifests(K8S)
NAMESPACES = ("shop", "batch")


def _find(kind: str, namespace: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o
        for o in OBJECTS
        if o["kind"] == kind
        and (
            namespace is None or o["metadata"].get("namespace", o["metadata"]["name"]) == namespace
        )
        and (name is None or o["metadata"]["name"] == name)
    ]


def _one(kind: str, namespace: str, name: str) -> dict[str, Any]:
    (found,) = _find(kind, namespace, name)
    return found


@pytest.mark.parametrize(
    "obj",
    OBJECTS,
    ids=[
        f"{o['kind']}/{o['metadata'].get('namespace', '-')}/{o['metadata']['name']}"
        for o in OBJECTS
    ],
)
def test_every_object_matches_the_official_schema_of_the_pinned_version(
    obj: dict[str, Any],
) -> None:
    # strict: unknown fields fail, as a misspelt one would be dropped by the API server.
    assert kubernetes_validate.validate(obj, K8S.version, strict=True) == "1.34"


def test_the_offline_validation_is_strict_enough_to_catch_a_misspelt_field() -> None:
    deployment = _one("Deployment", "shop", km.SAMPLE)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    broken = {**container, "securityContext": {"readOnlyRootFileSystem": True}}
    spec = {**deployment["spec"]["template"]["spec"], "containers": [broken]}
    bad = {**deployment, "spec": {**deployment["spec"], "template": {"spec": spec}}}
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(bad, K8S.version, strict=True)


def test_namespaces_come_first_so_every_later_object_has_its_namespace() -> None:
    kinds = [o["kind"] for o in OBJECTS]
    assert kinds[: len(NAMESPACES)] == ["Namespace"] * len(NAMESPACES)
    assert "Namespace" not in kinds[len(NAMESPACES) :]
    assert [o["metadata"]["name"] for o in OBJECTS[: len(NAMESPACES)]] == list(NAMESPACES)


@pytest.mark.parametrize("ns", NAMESPACES)
def test_namespaces_enforce_audit_and_warn_restricted_with_the_version_pinned(ns: str) -> None:
    labels = _one("Namespace", ns, ns)["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert labels[f"pod-security.kubernetes.io/{mode}-version"] == "v1.34"
    assert labels["app.kubernetes.io/managed-by"] == "provision"


@pytest.mark.parametrize("ns", NAMESPACES)
def test_each_namespace_denies_all_traffic_in_both_directions(ns: str) -> None:
    spec = _one("NetworkPolicy", ns, km.DEFAULT_DENY)["spec"]
    assert spec == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


@pytest.mark.parametrize("ns", NAMESPACES)
def test_each_namespace_may_resolve_names_at_kube_dns_only(ns: str) -> None:
    spec = _one("NetworkPolicy", ns, km.ALLOW_DNS)["spec"]
    assert spec["podSelector"] == {} and spec["policyTypes"] == ["Egress"]
    (rule,) = spec["egress"]
    assert rule["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert rule["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def test_an_allow_rule_opens_ingress_to_its_pods_from_its_sources_on_its_ports() -> None:
    spec = _one("NetworkPolicy", "shop", "web")["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app": "web"}}
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "batch"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "edge"}}},
        {"podSelector": {"matchLabels": {"app": "client"}}},
    ]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 8443}]


def test_an_allow_rule_also_opens_egress_at_the_clients_it_manages() -> None:
    # Same-namespace clients: their own namespace denies egress too.
    same = _one("NetworkPolicy", "shop", "web-egress")["spec"]
    assert same["podSelector"] == {"matchLabels": {"app": "client"}}
    assert same["egress"] == [
        {
            "to": [{"podSelector": {"matchLabels": {"app": "web"}}}],
            "ports": [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 8443}],
        }
    ]
    # A workload namespace as the source: its pods may reach exactly the rule's pods.
    cross = _one("NetworkPolicy", "batch", "shop-web-egress")["spec"]
    assert cross["podSelector"] == {} and cross["policyTypes"] == ["Egress"]
    assert cross["egress"][0]["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}},
            "podSelector": {"matchLabels": {"app": "web"}},
        }
    ]
    # A namespace outside the inventory manages its own egress.
    assert not _find("NetworkPolicy", "edge")


def test_an_allow_rule_without_ports_allows_every_port_and_without_sources_every_source() -> None:
    open_to_all = AllowRule("public", (("app", "web"),), (), (), ())
    (policy,) = km.allow_rule_policies("shop", open_to_all, {"shop"})
    assert policy["spec"]["ingress"] == [{}]  # scoped by the podSelector, not a namespace hole
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "web"}}
    kubernetes_validate.validate(policy, K8S.version, strict=True)


def test_an_allow_rule_for_every_pod_from_every_source_is_refused() -> None:
    with pytest.raises(ValueError, match="every pod from every source"):
        km.allow_rule_policies("shop", AllowRule("all", (), (), (), (80,)), {"shop"})


@pytest.mark.parametrize("ns", NAMESPACES)
def test_each_namespace_has_a_quota_limits_and_a_tokenless_default_account(ns: str) -> None:
    quota = _one("ResourceQuota", ns, km.QUOTA)["spec"]["hard"]
    assert {"requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "pods"} <= set(quota)
    (limits,) = _one("LimitRange", ns, km.LIMITS)["spec"]["limits"]
    assert limits["type"] == "Container" and limits["default"] and limits["defaultRequest"]
    account = _one("ServiceAccount", ns, "default")
    assert account["automountServiceAccountToken"] is False


def test_the_sample_workload_is_restricted_and_only_where_asked() -> None:
    assert not _find("Deployment", "batch")
    deployment = _one("Deployment", "shop", km.SAMPLE)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not {"hostNetwork", "hostPID", "hostIPC", "volumes"} & set(pod)
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] > 0
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # The one image every node already has: containerd's sandbox image.
    assert container["image"] == k8s_config.PAUSE_IMAGE
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_our_own_policies_cover_every_workload_namespace() -> None:
    report = netpol.coverage(OBJECTS, NAMESPACES)
    assert report.ok, report.text()
    assert [n.deny_policies for n in report.namespaces] == [(km.DEFAULT_DENY,)] * 2


def test_yaml_is_multi_document_stable_and_round_trips() -> None:
    text = km.to_yaml(OBJECTS)
    assert text == km.to_yaml(km.manifests(K8S))
    assert list(yaml.safe_load_all(text)) == OBJECTS
    assert text.count("\n---\n") == len(OBJECTS) - 1 and text.startswith("---\n")
    assert "&id" not in text  # no YAML anchors: kubectl users read this


def test_the_psa_version_follows_the_pinned_kubernetes_version() -> None:
    other = km.manifests(dataclasses.replace(K8S, version="1.35.0"))
    labels = other[0]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce-version"] == "v1.35"
