"""The NetworkPolicy coverage check (provision/netpol.py): true default-deny, missing
namespaces, decoys, and the defaulting of an omitted policyTypes (HN-POL-02)."""

from __future__ import annotations

from typing import Any

import pytest

from provision.kubernetes.netpol import (
    CoverageReport,
    DecoyKind,
    Status,
    coverage,
    effective_policy_types,
    selects_all,
)

BOTH = ["Ingress", "Egress"]
DNS = {
    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
    "ports": [{"protocol": "UDP", "port": 53}],
}


def pol(name: str, ns: str = "apps", **spec: Any) -> dict[str, Any]:
    spec.setdefault("podSelector", {})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


DENY = pol("deny", policyTypes=BOTH)


def check(*policies: dict[str, Any], ns: str = "apps") -> tuple[Status, list[DecoyKind]]:
    result = coverage(policies, [ns]).namespace(ns)
    return result.status, [d.kind for d in result.decoys]


def test_a_true_default_deny_covers_the_namespace() -> None:
    report = coverage([DENY, pol("dns", policyTypes=["Egress"], egress=[DNS])], ["apps"])
    assert report.ok
    (apps,) = report.namespaces
    assert (apps.status, apps.deny_policies, apps.decoys) == (Status.OK, ("deny",), ())


def test_a_namespace_without_policies_is_missing() -> None:
    report = coverage([DENY], ["apps", "web"])
    assert not report.ok
    assert report.namespace("web").status is Status.MISSING
    assert "denies both Ingress and Egress" in report.namespace("web").reasons[0]


def test_allow_policies_alone_are_not_a_deny() -> None:
    allow = pol(
        "web", podSelector={"matchLabels": {"app": "web"}}, ingress=[{"ports": [{"port": 80}]}]
    )
    assert check(allow, pol("dns", policyTypes=["Egress"], egress=[DNS])) == (Status.MISSING, [])


def test_policies_in_other_namespaces_do_not_count() -> None:
    assert check(pol("deny", ns="other", policyTypes=BOTH)) == (Status.MISSING, [])


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"ingress": [{}]}, "ingress[0] has no peers and no ports"),
        ({"policyTypes": BOTH, "egress": [{}]}, "egress[0] has no peers and no ports"),
        ({"ingress": [{"from": []}]}, "no peers"),
        ({"ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}, "every address"),
        ({"policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "::/0"}}]}]}, "::/0"),
        ({"ingress": [{"from": [{"namespaceSelector": {}}]}]}, "every pod in every namespace"),
    ],
)
def test_an_allow_all_policy_is_a_decoy_even_next_to_a_true_deny(
    spec: dict[str, Any], why: str
) -> None:
    result = coverage([DENY, pol("open", **spec)], ["apps"]).namespace("apps")
    assert result.status is Status.DECOY
    assert result.deny_policies == ("deny",)
    (decoy,) = result.decoys
    assert decoy.kind is DecoyKind.ALLOW_ALL and decoy.policy == "open"
    assert why in decoy.reason


def test_allow_all_with_omitted_policy_types_and_egress_rules_opens_egress() -> None:
    # No policyTypes but egress rules: Egress is added, and `egress: [{}]` allows everything.
    assert check(DENY, pol("open", egress=[{}])) == (Status.DECOY, [DecoyKind.ALLOW_ALL])


@pytest.mark.parametrize(
    "rule",
    [
        {"ports": [{"port": 443}]},  # every source, one port: a real allow rule
        {"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]},
        {"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]},
        {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "x"}}}]},
    ],
)
def test_scoped_allow_rules_are_not_allow_all(rule: dict[str, Any]) -> None:
    assert check(DENY, pol("allow", ingress=[rule])) == (Status.OK, [])


def test_an_allow_all_for_some_pods_only_is_not_a_namespace_decoy() -> None:
    public = pol("public", podSelector={"matchLabels": {"app": "web"}}, ingress=[{}])
    assert check(DENY, public) == (Status.OK, [])


def test_an_ingress_only_default_deny_is_a_decoy() -> None:
    status, kinds = check(pol("deny-in", policyTypes=["Ingress"]))
    assert (status, kinds) == (Status.DECOY, [DecoyKind.INGRESS_ONLY])


def test_omitted_policy_types_default_to_ingress_only_without_egress_rules() -> None:
    # The classic "default deny" from blog posts: only ingress is denied.
    result = coverage([pol("deny-all")], ["apps"]).namespace("apps")
    assert result.status is Status.DECOY
    (decoy,) = result.decoys
    assert decoy.kind is DecoyKind.INGRESS_ONLY
    assert "omitted" in decoy.reason and "egress stays open" in decoy.reason


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ({}, {"Ingress"}),
        ({"policyTypes": []}, {"Ingress"}),  # an empty list is defaulted like a missing one
        ({"egress": []}, {"Ingress"}),  # an empty egress list does not add Egress
        ({"egress": [DNS]}, {"Ingress", "Egress"}),
        ({"ingress": [{}], "egress": [DNS]}, {"Ingress", "Egress"}),
        ({"policyTypes": ["Egress"]}, {"Egress"}),
        ({"policyTypes": ["Ingress"], "egress": [DNS]}, {"Ingress"}),  # declared wins
    ],
)
def test_effective_policy_types_follow_the_api_server_defaulting(
    spec: dict[str, Any], types: set[str]
) -> None:
    assert effective_policy_types(spec) == types


def test_an_empty_policy_types_list_is_an_ingress_only_deny_too() -> None:
    assert check(pol("deny", policyTypes=[])) == (Status.DECOY, [DecoyKind.INGRESS_ONLY])


def test_rules_for_a_direction_outside_policy_types_are_ignored() -> None:
    # egress: [{}] would allow everything, but the policy only applies to Ingress: the API
    # server ignores those rules. So this is an ingress-only deny, not an allow-all.
    ignored = pol("deny-in", policyTypes=["Ingress"], egress=[{}])
    assert check(ignored) == (Status.DECOY, [DecoyKind.INGRESS_ONLY])
    assert check(DENY, ignored) == (Status.OK, [])


def test_an_egress_only_deny_is_a_decoy() -> None:
    assert check(pol("deny-out", policyTypes=["Egress"])) == (Status.DECOY, [DecoyKind.EGRESS_ONLY])


def test_ingress_and_egress_only_denies_together_still_are_decoys() -> None:
    # Together they deny both directions, but the catalogue asks for one policy that does.
    status, kinds = check(pol("in", policyTypes=["Ingress"]), pol("out", policyTypes=["Egress"]))
    assert status is Status.DECOY
    assert sorted(kinds) == sorted([DecoyKind.INGRESS_ONLY, DecoyKind.EGRESS_ONLY])


@pytest.mark.parametrize(
    "selector",
    [
        {"matchLabels": {"app": "web"}},
        {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
    ],
)
def test_a_default_deny_for_some_pods_only_is_a_decoy(selector: dict[str, Any]) -> None:
    partial = pol("deny-web", podSelector=selector, policyTypes=BOTH)
    assert check(partial) == (Status.DECOY, [DecoyKind.PARTIAL])
    assert check(partial, DENY) == (Status.OK, [])  # harmless next to a true deny


@pytest.mark.parametrize(
    "selector", [{}, None, {"matchLabels": {}}, {"matchLabels": {}, "matchExpressions": []}]
)
def test_an_empty_selector_selects_every_pod(selector: dict[str, Any] | None) -> None:
    assert selects_all(selector)
    spec: dict[str, Any] = {"policyTypes": BOTH}
    if selector is not None:
        spec["podSelector"] = selector
    policy = pol("deny", **spec)
    if selector is None:
        del policy["spec"]["podSelector"]
    assert check(policy) == (Status.OK, [])


def test_kubectl_list_output_and_other_kinds_are_accepted() -> None:
    kubectl = {"apiVersion": "v1", "kind": "List", "items": [DENY]}
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}
    assert coverage([namespace, kubectl], ["apps"]).ok
    netpol_list = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicyList",
        "items": [DENY],
    }
    assert coverage([netpol_list], ["apps"]).ok


def test_namespaces_are_reported_once_in_the_order_asked() -> None:
    report = coverage([DENY], ["web", "apps", "web"])
    assert [n.namespace for n in report.namespaces] == ["web", "apps"]


def test_no_workload_namespaces_means_nothing_to_report() -> None:
    report = coverage([DENY], [])
    assert report == CoverageReport(()) and report.ok


def test_the_report_renders_as_text_and_json() -> None:
    open_all = pol("open", ns="shop", ingress=[{}])
    report = coverage(
        [DENY, open_all, pol("deny", ns="shop", policyTypes=BOTH)], ["apps", "shop", "web"]
    )
    text = report.text()
    assert (
        text.splitlines()[0] == "NetworkPolicy coverage of 3 namespaces: 1 ok, 1 missing, 1 decoy"
    )
    assert "ok       apps  deny" in text
    assert "decoy    shop  open: ingress[0] has no peers and no ports" in text
    assert "missing  web   no NetworkPolicy" in text
    assert report.as_dict()["ok"] is False
    shop = report.as_dict()["namespaces"][1]
    assert shop["status"] == "decoy" and shop["deny_policies"] == ["deny"]
