"""Check metadata: what each catalogue id means here, where it applies, and how it is decided.

Every catalogue id ends up in exactly one of three places:
- a check in `suite/` (declared with the `check` decorator below), run on the node;
- `NOT_APPLICABLE` here, with the reason it cannot apply to nodes this tool builds;
- `hardening.DEVIATIONS`, a deliberate, explained deviation (reported as waived).
`tests/test_verify_coverage.py` holds the three together against the catalogue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import pytest

from provision.baseline import hardening
from provision.core.model import Node, Role


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"  # the node is not as the check requires
    ERROR = "error"  # the check could not run to a verdict (command failed, lost connection)
    WARN = "warn"  # no evidence either way (e.g. a daemon that should answer is down)
    SKIP = "skip"  # not applicable to this node, with the reason
    WAIVED = "waived"  # a named waiver (inventory) or a built-in deviation (hardening.py)


# Worst first: a check id with several tests reports the worst of their statuses.
SEVERITY_ORDER = (
    Status.ERROR,
    Status.FAIL,
    Status.WARN,
    Status.PASS,
    Status.WAIVED,
    Status.SKIP,
)
FAILING = frozenset({Status.FAIL, Status.ERROR})

ROLES = frozenset({"all", "k8s", "cp", "wk", "rootful", "rootless"})


@dataclass(frozen=True)
class Check:
    id: str
    title: str  # imperative, "Ensure ..."
    level: str  # L1 baseline, L2 defence in depth
    severity: str  # InSpec bands: low, med, high, crit
    roles: frozenset[str]  # where it applies (catalogue role column)
    remediation: str

    @property
    def group(self) -> str:
        return self.id.split("-")[1]


@dataclass(frozen=True)
class NotApplicable:
    id: str
    roles: frozenset[str]
    reason: str


REGISTRY: dict[str, Check] = {}
_F = TypeVar("_F", bound=Callable[..., object])


def _register(
    id: str, title: str, level: str, severity: str, roles: str, remediation: str
) -> pytest.MarkDecorator:
    meta = Check(id, title, level, severity, frozenset(roles.split()), remediation)
    if not meta.roles <= ROLES or level not in ("L1", "L2"):
        raise ValueError(f"{id}: bad roles {roles!r} or level {level!r}")
    if severity not in ("low", "med", "high", "crit"):
        raise ValueError(f"{id}: bad severity {severity!r}")
    known = REGISTRY.setdefault(id, meta)
    if known != meta:
        raise ValueError(f"{id} is declared twice with different metadata")
    return pytest.mark.hn(id)


def check(
    id: str,
    title: str,
    *,
    level: str,
    severity: str,
    roles: str = "all",
    remediation: str,
) -> Callable[[_F], _F]:
    """Declare a suite test as (part of) the check for catalogue id `id`."""
    mark = _register(id, title, level, severity, roles, remediation)

    def decorate(fn: _F) -> _F:
        return mark(fn)  # type: ignore[no-any-return]

    return decorate


def case(
    id: str,
    title: str,
    *values: object,
    level: str,
    severity: str,
    roles: str = "all",
    remediation: str,
) -> object:
    """One parameter set of a shared test, declared as the check for catalogue id `id`:
    for ids that differ only in data (one sysctl each), one test with one case per id."""
    mark = _register(id, title, level, severity, roles, remediation)
    return pytest.param(*values, marks=mark, id=id)


class Inconclusive(Exception):
    """Raised by a check that found no evidence either way: reported as WARN, never PASS."""


def node_roles(node: Node) -> frozenset[str]:
    """The catalogue role names that describe this node."""
    roles = {"all"}
    if hardening.has_rootless(node):
        roles.add("rootless")
    if hardening.is_rootful(node):
        roles.add("rootful")
    if Role.K8S_CONTROL_PLANE in node.roles:
        roles |= {"k8s", "cp"}
    if Role.K8S_WORKER in node.roles:
        roles |= {"k8s", "wk"}
    return frozenset(roles)


def applies(roles: frozenset[str], node: frozenset[str]) -> bool:
    return "all" in roles or bool(roles & node)


K8S_LATER = (
    "cluster-level check: it needs a bootstrapped cluster, and checks of a running API server, "
    "kubelet and policies are not built yet; the rendered configuration is validated offline "
    "(tests/test_k8s_config.py, test_k8s_manifests.py, test_netpol.py)"
)
SUPPLY_CHAIN = (
    "this node runs no registry images: the only container image is the local busybox probe, "
    "built on the node from the Debian package (Kubernetes nodes do: a deviation there)"
)

# Ids that cannot apply to the nodes this tool builds, whatever their roles.
NOT_APPLICABLE: tuple[NotApplicable, ...] = (
    NotApplicable(
        "HN-BOOT-07",
        frozenset({"all"}),
        "direct kernel boot from the domain XML: the node has no bootloader or grub.cfg",
    ),
    NotApplicable(
        "HN-BOOT-11",
        frozenset({"all"}),
        "informational kernel-hardening-checker report: the tool is not packaged for Debian "
        "or PyPI, and its kconfig items are Debian build choices",
    ),
    NotApplicable(
        "HN-LOG-04",
        frozenset({"k8s"}),
        "Falco needs a Kubernetes DaemonSet and a registry image; " + K8S_LATER,
    ),
    NotApplicable(
        "HN-LOG-06",
        frozenset({"all"}),
        "optional Lynis second opinion: Lynis is not in the golden image's package set",
    ),
    NotApplicable("HN-SC-01", frozenset({"all"}), SUPPLY_CHAIN),
    NotApplicable("HN-SC-02", frozenset({"all"}), SUPPLY_CHAIN),
    NotApplicable("HN-SC-03", frozenset({"all"}), SUPPLY_CHAIN),
    NotApplicable(
        "HN-SC-04",
        frozenset({"all"}),
        "vulnerability gate runs on the golden image's SBOM at build time, not on the node "
        "(no scanner in the image)",
    ),
    NotApplicable(
        "HN-SC-06",
        frozenset({"all"}),
        "the provisioner downloads no tool binaries: every package comes from Debian's signed "
        "archive into the golden image",
    ),
    # HN-K8S-13/14 (runtime and preflight) are checked on every Kubernetes node.
    *(NotApplicable(f"HN-K8S-{n:02d}", frozenset({"k8s"}), K8S_LATER) for n in range(1, 13)),
    *(NotApplicable(f"HN-POL-{n:02d}", frozenset({"k8s"}), K8S_LATER) for n in range(1, 8)),
)


def not_applicable() -> dict[str, NotApplicable]:
    return {n.id: n for n in NOT_APPLICABLE}
