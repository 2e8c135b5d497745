"""A.11 Firewall: our own nftables table, default drop inbound, coexisting with Docker's."""

from __future__ import annotations

import re

from provision.verify.checks import Inconclusive, check
from provision.verify.plugin import Facts, Profile
from provision.verify.snapshot import Snapshot

FW_FIX = (
    "The table comes from /etc/provision/firewall.nft, loaded by provision-firewall.service; "
    "`systemctl restart provision-firewall` reloads it without touching Docker's tables."
)
# The inbound allow-list by role (HN-FW-02): SSH everywhere, the kubelet on Kubernetes nodes, the
# API server on the control plane (etcd is stacked and loopback-only).
INBOUND_TCP = {"all": {22}, "k8s": {10250}, "cp": {6443}}


def _table(facts: Facts) -> str:
    ruleset = facts("nft")
    m = re.search(r"^table inet provision \{\n(.*?)^\}", ruleset, re.S | re.M)
    assert m, "table inet provision is not loaded"
    return m.group(1)


def _chain(table: str, name: str) -> str:
    m = re.search(rf"^\tchain {name} \{{\n(.*?)^\t\}}", table, re.S | re.M)
    assert m, f"chain {name} missing from table inet provision"
    return m.group(1)


# A rule that matches nothing before its accept (only counters, a log line, a comment): every
# packet reaching it is accepted, whatever the chain's policy says.
UNCONDITIONAL_ACCEPT = re.compile(
    r'(?:counter(?: packets \d+ bytes \d+)? |log(?: prefix "[^"]*")?(?: level \w+)? )*'
    r'accept(?: comment "[^"]*")?'
)


def _unconditional_accepts(chain: str) -> list[str]:
    return [r.strip() for r in chain.splitlines() if UNCONDITIONAL_ACCEPT.fullmatch(r.strip())]


@check(
    "HN-FW-01",
    "Ensure the host firewall drops inbound traffic by default",
    level="L1",
    severity="high",
    remediation=FW_FIX,
)
def test_default_drop(snap: Snapshot, facts: Facts) -> None:
    assert snap.service("provision-firewall").is_enabled, "provision-firewall is not enabled"
    chain = _chain(_table(facts), "input")
    assert "hook input priority filter; policy drop;" in chain, "input policy is not drop"
    assert 'iif "lo" accept' in chain, "loopback is not accepted"
    assert "ct state established,related accept" in chain, "replies are not accepted"
    anything = _unconditional_accepts(chain)
    assert not anything, f"the input chain accepts every packet: {anything}"


def _tcp_ports(chain: str) -> set[int]:
    """The TCP ports the chain's rules accept, one rule a line: statements may stand between
    the match and the verdict (`tcp dport 8080 counter packets 0 bytes 0 accept` opens 8080
    as surely as `tcp dport 8080 accept`, and was once not counted)."""
    ports: set[int] = set()
    for rule in chain.splitlines():
        m = re.search(r"\btcp dport (\{[^}]*\}|\S+)", rule)
        if m and re.search(r"\baccept\b", rule[m.end() :]):
            ports |= {int(p) for p in re.findall(r"\d+", m.group(1))}
    return ports


@check(
    "HN-FW-02",
    "Ensure inbound TCP is allowed only to the role's ports",
    level="L1",
    severity="high",
    remediation=FW_FIX,
)
def test_inbound_allow_list(facts: Facts, node: Profile) -> None:
    want = set().union(*(ports for role, ports in INBOUND_TCP.items() if role in node.roles))
    got = _tcp_ports(_chain(_table(facts), "input"))
    assert got == want, f"inbound TCP ports {sorted(got)}, expected {sorted(want)}"


@check(
    "HN-FW-03",
    "Ensure the firewall coexists with Docker: own table, no flush ruleset, forward drop",
    level="L1",
    severity="high",
    remediation=FW_FIX,
)
def test_coexists_with_docker(snap: Snapshot, facts: Facts, node: Profile) -> None:
    config = facts("firewall-config")
    statements = [line.split("#", 1)[0].strip() for line in config.splitlines()]
    assert "flush ruleset" not in statements, "firewall.nft flushes every table (Docker's too)"
    forward = _chain(_table(facts), "forward")
    assert "policy drop;" in forward, "forward policy is not drop"
    if "rootful" in node.roles:
        if not snap.service("docker").is_running:
            raise Inconclusive("docker.service is not running: Docker's tables cannot be seen")
        ruleset = facts("nft")
        assert "chain DOCKER" in ruleset, "Docker's iptables-nft chains are gone"
        assert 'iifname "docker0" accept' in forward, "containers cannot reach out (forward)"


@check(
    "HN-FW-05",
    "Ensure only expected sockets listen (no Docker TCP API, no kubelet read-only port)",
    level="L1",
    severity="high",
    remediation="Stop the service listed, or add its port to the role's allow-list on purpose.",
)
def test_listening_sockets(snap: Snapshot, node: Profile) -> None:
    allowed_tcp = set().union(*(p for role, p in INBOUND_TCP.items() if role in node.roles))
    listeners = snap.listening_sockets()
    unexpected = []
    for spec in listeners:
        proto, _, rest = spec.partition("://")
        addr, _, port = rest.rpartition(":")
        if proto != "tcp" or addr in ("127.0.0.1", "::1") or addr.startswith("127."):
            continue
        if int(port) not in allowed_tcp:
            unexpected.append(spec)
    assert not unexpected, f"unexpected TCP listeners: {unexpected}"
    forbidden = [s for s in listeners if s.endswith((":2375", ":2376", ":10255"))]
    assert not forbidden, f"forbidden listeners: {forbidden}"


@check(
    "HN-FW-04",
    "Ensure published container ports cannot bypass the inbound policy",
    level="L1",
    severity="high",
    roles="rootful",
    remediation=FW_FIX + " Publish on 127.0.0.1, or add an explicit forward accept for the port.",
)
def test_published_ports_filtered(facts: Facts) -> None:
    """Rootful published ports are DNAT'd before INPUT: the forward chain is what filters them.

    Ours drops by default and lets only replies into docker0, so a `-p 0.0.0.0:...` binding
    is unreachable from outside unless a rule deliberately accepts it.
    """
    forward = _chain(_table(facts), "forward")
    assert "policy drop;" in forward, "forward policy is not drop"
    into_docker = [
        line.strip()
        for line in forward.splitlines()
        if 'oifname "docker0"' in line and "accept" in line
    ]
    loose = [rule for rule in into_docker if "ct state established,related" not in rule]
    loose += _unconditional_accepts(forward)
    assert not loose, f"new connections into containers are accepted: {loose}"
