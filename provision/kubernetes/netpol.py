"""NetworkPolicy coverage: does every workload namespace deny all traffic by default?

A pure check over plain API objects, from `kubectl get netpol -A -o json` (the List or its
items) or from our own manifests, so `drift` and the unit tests share it (HN-POL-02).

A namespace is OK only if some policy selects every pod (`podSelector: {}`), applies to both
Ingress and Egress, and has no rules at all. It is a DECOY when something looks like that but
is not (a deny for one direction only, a deny for some pods only) or when an allow-all policy
undoes the deny (policies are additive: any one that allows, allows). Otherwise it is MISSING.

The Kubernetes semantics of an omitted `policyTypes` (pkg/apis/networking/v1/defaults.go,
`SetDefaults_NetworkPolicy`): an empty or missing list becomes [Ingress], plus Egress only if
the policy has egress rules. So `{podSelector: {}}` alone denies ingress and nothing else, and
rules for a direction not in the effective policyTypes are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

INGRESS = "Ingress"
EGRESS = "Egress"
_RULES = {INGRESS: "ingress", EGRESS: "egress"}  # the spec field of each direction's rules
_PEERS = {INGRESS: "from", EGRESS: "to"}  # and the field of a rule's peers
_EVERYWHERE = frozenset({"0.0.0.0/0", "::/0"})


class Status(StrEnum):
    OK = "ok"
    MISSING = "missing"
    DECOY = "decoy"


class DecoyKind(StrEnum):
    ALLOW_ALL = "allow-all"  # undoes any deny for that direction
    INGRESS_ONLY = "ingress-only"  # a "default deny" that leaves egress open
    EGRESS_ONLY = "egress-only"  # and the reverse
    PARTIAL = "partial-selector"  # deny-shaped, but only for the pods its podSelector matches


@dataclass(frozen=True)
class Decoy:
    policy: str
    kind: DecoyKind
    reason: str


@dataclass(frozen=True)
class NamespaceCoverage:
    namespace: str
    status: Status
    deny_policies: tuple[str, ...]  # the true default-deny policies found
    decoys: tuple[Decoy, ...]  # only those that matter: none when the status is OK

    @property
    def reasons(self) -> tuple[str, ...]:
        if self.status is Status.MISSING and not self.decoys:
            return (f"no NetworkPolicy with podSelector {{}} denies both {INGRESS} and {EGRESS}",)
        return tuple(f"{d.policy}: {d.reason}" for d in self.decoys)


@dataclass(frozen=True)
class CoverageReport:
    namespaces: tuple[NamespaceCoverage, ...]

    @property
    def ok(self) -> bool:
        return all(n.status is Status.OK for n in self.namespaces)

    def namespace(self, name: str) -> NamespaceCoverage:
        return next(n for n in self.namespaces if n.namespace == name)

    def text(self) -> str:
        counts = {s: sum(n.status is s for n in self.namespaces) for s in Status}
        summary = ", ".join(f"{counts[s]} {s}" for s in Status)
        lines = [f"NetworkPolicy coverage of {len(self.namespaces)} namespaces: {summary}"]
        width = max((len(n.namespace) for n in self.namespaces), default=0)
        for n in self.namespaces:
            details = n.deny_policies if n.status is Status.OK else n.reasons
            head = f"  {n.status.value:<9}{n.namespace:<{width}}  "
            lines.append(head + (details[0] if details else ""))
            lines.extend(" " * len(head) + d for d in details[1:])
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """For JSON output: one entry per namespace, in the order asked for."""
        return {
            "ok": self.ok,
            "namespaces": [
                {
                    "namespace": n.namespace,
                    "status": n.status.value,
                    "deny_policies": list(n.deny_policies),
                    "reasons": list(n.reasons),
                }
                for n in self.namespaces
            ],
        }


def coverage(
    objects: Iterable[Mapping[str, Any]], workload_namespaces: Iterable[str]
) -> CoverageReport:
    """The coverage of each workload namespace, in the order given. Objects other than
    NetworkPolicies (a manifest list holds Namespaces, Deployments, ...) are ignored."""
    by_namespace: dict[str, list[Mapping[str, Any]]] = {}
    for policy in _network_policies(objects):
        ns = policy.get("metadata", {}).get("namespace")
        if isinstance(ns, str):
            by_namespace.setdefault(ns, []).append(policy)
    return CoverageReport(
        tuple(_namespace(ns, by_namespace.get(ns, [])) for ns in dict.fromkeys(workload_namespaces))
    )


def _network_policies(objects: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for obj in objects:
        kind = obj.get("kind", "")
        if kind.endswith("List") and isinstance(obj.get("items"), list):
            yield from _network_policies(obj["items"])
        elif kind == "NetworkPolicy":
            yield obj


def effective_policy_types(spec: Mapping[str, Any]) -> frozenset[str]:
    """policyTypes as the API server defaults them (see the module docstring)."""
    declared = spec.get("policyTypes") or []
    if declared:
        return frozenset(declared)
    return frozenset({INGRESS, EGRESS} if spec.get("egress") else {INGRESS})


def selects_all(selector: Mapping[str, Any] | None) -> bool:
    """An empty (or missing) label selector matches every pod of the namespace."""
    if not selector:
        return True
    return not selector.get("matchLabels") and not selector.get("matchExpressions")


def _open_peer(peer: Mapping[str, Any]) -> str | None:
    """Why this peer admits (nearly) everything, or None."""
    block = peer.get("ipBlock")
    if block and block.get("cidr") in _EVERYWHERE and not block.get("except"):
        return f"ipBlock {block['cidr']} (every address)"
    if (
        "namespaceSelector" in peer
        and selects_all(peer["namespaceSelector"])
        and selects_all(peer.get("podSelector"))
    ):
        return "namespaceSelector {} (every pod in every namespace)"
    return None


def _allow_all(spec: Mapping[str, Any], direction: str) -> str | None:
    """Why some rule for `direction` allows all traffic on all ports, or None."""
    for i, rule in enumerate(spec.get(_RULES[direction]) or []):
        if rule.get("ports"):
            continue  # limited to some ports: a real allow rule, not a hole
        peers = rule.get(_PEERS[direction]) or []
        if not peers:
            return f"{_RULES[direction]}[{i}] has no peers and no ports: allows all {direction}"
        for peer in peers:
            why = _open_peer(peer)
            if why:
                return f"{_RULES[direction]}[{i}] allows all {direction} from/to {why}"
    return None


def _namespace(ns: str, policies: list[Mapping[str, Any]]) -> NamespaceCoverage:
    denies: list[str] = []
    allow_all: list[Decoy] = []
    lookalikes: list[Decoy] = []
    for policy in sorted(policies, key=lambda p: str(p.get("metadata", {}).get("name", ""))):
        name = str(policy.get("metadata", {}).get("name", "?"))
        spec = policy.get("spec") or {}
        types = effective_policy_types(spec)
        everyone = selects_all(spec.get("podSelector"))
        if everyone:
            for direction in sorted(types):
                why = _allow_all(spec, direction)
                if why:
                    allow_all.append(Decoy(name, DecoyKind.ALLOW_ALL, why))
        # Deny-shaped: no rules for any direction it applies to.
        if any(spec.get(_RULES[d]) for d in types):
            continue
        if everyone and types == {INGRESS, EGRESS}:
            denies.append(name)
        elif not everyone:
            why = f"denies only the pods matching its podSelector {spec.get('podSelector')}"
            lookalikes.append(Decoy(name, DecoyKind.PARTIAL, why))
        elif types == {INGRESS}:
            how = "listed" if spec.get("policyTypes") else "omitted, so it defaults to"
            why = f"policyTypes {how} [Ingress]: egress stays open"
            lookalikes.append(Decoy(name, DecoyKind.INGRESS_ONLY, why))
        else:
            why = "policyTypes [Egress]: ingress stays open"
            lookalikes.append(Decoy(name, DecoyKind.EGRESS_ONLY, why))
    if allow_all:
        return NamespaceCoverage(ns, Status.DECOY, tuple(denies), tuple(allow_all))
    if denies:
        return NamespaceCoverage(ns, Status.OK, tuple(denies), ())
    status = Status.DECOY if lookalikes else Status.MISSING
    return NamespaceCoverage(ns, status, (), tuple(lookalikes))
