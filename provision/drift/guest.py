"""Layer 2, the node's own view: one pinned SSH connection as the verifier, three read-only helper
verbs (the verification snapshot, the file tree, packages and the expected firewall), then pure
comparisons with what the inventory renders.

The collection sends nothing but those three commands (tests/test_drift_readonly.py records
every command a node receives): no container probe, no `sudo -l`, nothing that writes.
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from provision.baseline import hardening
from provision.boundary import ssh
from provision.core.errors import SSHError
from provision.core.model import Kubernetes
from provision.drift.model import Fix, Item, Layer
from provision.kubernetes import k8s_manifests, netpol
from provision.verify.runner import Result
from provision.verify.snapshot import Part

VERBS = ("snapshot", "tree", "drift")
COMMAND_TIMEOUT_S = 300.0  # the snapshot took 18-23 s under TCG; the tree walk is of that order


def command(verb: str) -> list[str]:
    return ["sudo", "-n", hardening.FACTS_HELPER, verb]


@dataclass(frozen=True)
class Collected:
    """What one node answered, verb by verb."""

    parts: dict[str, Part]
    server_version: str

    def text(self, verb: str) -> str:
        """The verb's output, or SSHError naming what the helper said (an unreachable-grade
        failure: without the evidence nothing can be compared)."""
        part = self.parts[verb]
        if part.rc != 0:
            tail = part.stderr.strip()[-300:] or f"exit {part.rc}"
            raise SSHError(f"the facts helper's `{verb}` failed: {tail}")
        return part.stdout


def collect(session: ssh.Session) -> Collected:
    """Each verb on its own channel of the one connection, all at once."""

    def run(verb: str) -> Part:
        r = session.run(command(verb), check=False, timeout=COMMAND_TIMEOUT_S)
        return Part(r.returncode, r.stdout, r.stderr)

    with ThreadPoolExecutor(len(VERBS), thread_name_prefix="drift-collect") as pool:
        futures = {verb: pool.submit(run, verb) for verb in VERBS}
        parts = {verb: f.result() for verb, f in futures.items()}
    return Collected(parts, session.server_version)


# --- catalogue ---------------------------------------------------------------------------------

DRIFTED = frozenset({"FAIL", "ERROR"})


def catalogue_items(node: str, results: tuple[Result, ...]) -> list[Item]:
    """A catalogue id that fails (or whose check broke) is drift on a node that passed
    verification when `up` built it. A WARN is no evidence either way (see `inconclusive`)."""
    out = []
    for res in results:
        if res.status.name not in DRIFTED:
            continue
        first = (res.detail.strip().splitlines() or [""])[0]
        out.append(
            Item(
                node,
                Layer.GUEST,
                res.id,
                "PASS",
                f"{res.status.name}: {first}"[:200],
                Fix.REPLACE,
                detail=f"{res.title}. {res.remediation}".strip(),
            )
        )
    return out


def inconclusive(results: tuple[Result, ...]) -> tuple[str, ...]:
    """Ids the snapshot holds no evidence for (WARN: under TCG the CPU flags, or a daemon that
    does not answer): reported beside the drift, never counted as drift or as clean."""
    return tuple(r.id for r in results if r.status.name == "WARN")


# --- packages ----------------------------------------------------------------------------------


def sections(text: str) -> dict[str, str]:
    """The `drift` verb's parts: each begins with a line `== name`."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("== "):
            current = out.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    return {k: "\n".join(v) + ("\n" if v else "") for k, v in out.items()}


def parse_packages(text: str) -> dict[str, str]:
    """dpkg-query lines `name TAB version TAB arch TAB status` -> name -> "version arch";
    packages not installed (removed, config files only) are left out."""
    out = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and fields[3] == "installed":
            out[fields[0]] = f"{fields[1]} {fields[2]}"
    return out


def package_items(
    node: str, image: tuple[tuple[str, str, str], ...], installed: dict[str, str]
) -> list[Item]:
    """Every package against the image manifest (name, version, arch): an upgrade, a removal or
    an extra package is drift. Nodes install nothing at boot, so the image is the whole set."""
    expected = {name: f"{version} {arch}" for name, version, arch in image}
    out = []
    for name in sorted(expected.keys() | installed.keys()):
        want, have = expected.get(name), installed.get(name)
        if want == have:
            continue
        out.append(
            Item(
                node,
                Layer.GUEST,
                f"package:{name}",
                want or "not installed (not in the image)",
                have or "not installed",
                Fix.REPLACE,
            )
        )
    return out


# --- firewall ----------------------------------------------------------------------------------

_COUNTER = re.compile(r"\s*\bcounter packets \d+ bytes \d+")
_TABLE = re.compile(r"^table (\S+) (\S+) \{$")
OUR_TABLE = ("inet", "provision")


def nft_tables(ruleset: str) -> dict[tuple[str, str], str]:
    """`nft list ruleset` split by table, counters dropped (they move; rules do not)."""
    out: dict[tuple[str, str], list[str]] = {}
    current: list[str] | None = None
    for raw in ruleset.splitlines():
        line = _COUNTER.sub("", raw).rstrip()
        m = _TABLE.match(line)
        if m:
            current = out.setdefault((m.group(1), m.group(2)), [])
        if current is not None and line.strip():
            current.append(line)
        if line == "}":
            current = None
    return {k: "\n".join(v) + "\n" for k, v in out.items()}


# dockerd's tables (iptables-nft). docker.io is in every image and its daemon starts at first
# boot even where the seed then disables it (docker: rootless, none), so its tables are there on
# every node until a reboot; they are docker's, not compared. kube-proxy uses the same tables.
DOCKER_TABLES = frozenset({("ip", "nat"), ("ip", "filter"), ("ip6", "nat"), ("ip6", "filter")})


def expected_tables(roles: frozenset[str]) -> frozenset[tuple[str, str]]:
    """Tables other programs of the node keep beside ours (their rules are theirs)."""
    tables = {OUR_TABLE, *DOCKER_TABLES}
    if roles & {"k8s-control-plane", "k8s-worker"}:  # kube-proxy (iptables mode) and the CNI
        tables |= {("ip", "mangle"), ("ip6", "mangle")}
    return frozenset(tables)


def firewall_items(node: str, live: str, expected: str, roles: frozenset[str]) -> list[Item]:
    """Our table, live, exactly as nft prints the node's firewall file (any extra or missing
    rule is drift), and no table that neither we nor the node's roles keep."""
    out = []
    tables = nft_tables(live)
    want = nft_tables(expected).get(OUR_TABLE)
    have = tables.get(OUR_TABLE)
    if want is None:
        out.append(
            Item(
                node,
                Layer.GUEST,
                "nft:inet provision",
                "the firewall file loads",
                expected.strip().splitlines()[-1] if expected.strip() else "no output",
                Fix.REPLACE,
            )
        )
    elif have != want:
        diff = difflib.unified_diff(
            want.splitlines(), (have or "").splitlines(), "rendered", "live", lineterm="", n=0
        )
        changed = [d for d in diff if d[:1] in "+-" and d[:3] not in ("+++", "---")]
        out.append(
            Item(
                node,
                Layer.GUEST,
                "nft:inet provision",
                "the rendered ruleset",
                "absent" if have is None else f"{len(changed)} rule line(s) differ",
                Fix.REPLACE,
                detail="\n".join(changed[:20]),
            )
        )
    for family, name in sorted(tables.keys() - expected_tables(roles)):
        out.append(
            Item(
                node,
                Layer.GUEST,
                f"nft:{family} {name}",
                "absent",
                "a table nothing of ours keeps",
                Fix.MANUAL,
                detail=tables[(family, name)][:400],
            )
        )
    return out


# --- audit rules -------------------------------------------------------------------------------


# An unset login uid: the file may say `unset` or 4294967295, auditctl -l prints -1.
_UNSET = re.compile(r"(?<=[=<>])(unset|4294967295)$")


def audit_rule(line: str) -> str:
    """One rule in a canonical form. auditctl -l prints a syscall rule's `-k K` as `-F key=K`,
    may list its syscalls in another order than they were loaded, and prints a watch's
    permissions in rwxa order whatever order the file gave, and an unset auid as -1."""
    words = shlex.split(line)
    syscalls: set[str] = set()
    fields = []
    for flag, value in zip(words[::2], words[1::2], strict=False):
        if flag == "-S":
            syscalls |= set(value.split(","))
        elif flag == "-p":
            fields.append(f"-p {''.join(c for c in 'rwxa' if c in value)}")
        elif flag == "-k":
            fields.append(f"-F key={value}")
        elif flag == "-F":
            fields.append(f"-F {_UNSET.sub('-1', value)}")
        else:
            fields.append(f"{flag} {value}")
    head = [f for f in fields if f.startswith(("-a ", "-A ", "-w "))]
    rest = sorted(f for f in fields if f not in head)
    calls = [f"-S {','.join(sorted(syscalls))}"] if syscalls else []
    return " ".join([*head, *calls, *rest])


def audit_rules(text: str) -> list[str]:
    """The rules of a rules file or of `auditctl -l`: watches and syscall rules only (the
    control lines -D, -b, -f, -e and --backlog_wait_time are not rules)."""
    lines = (ln.strip() for ln in text.splitlines())
    return sorted(audit_rule(ln) for ln in lines if ln.startswith(("-w ", "-a ", "-A ")))


def audit_items(node: str, live: str, rendered: str) -> list[Item]:
    """The kernel's loaded audit rules equal the rendered file's, rule for rule."""
    want, have = audit_rules(rendered), audit_rules(live)
    if want == have:
        return []
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    lines = [f"- {r}" for r in missing] + [f"+ {r}" for r in extra]
    return [
        Item(
            node,
            Layer.GUEST,
            "audit:rules",
            f"{len(want)} rendered rules",
            f"{len(have)} loaded: {len(missing)} missing, {len(extra)} extra",
            Fix.REPLACE,
            detail="\n".join(lines[:20]),
        )
    ]


# --- Kubernetes --------------------------------------------------------------------------------

K8S_NO_CLUSTER = "k8s:cluster"  # listed as inconclusive: no API server answered the node


def kubernetes_items(node: str, text: str, k8s: Kubernetes) -> list[Item] | None:
    """On a control plane, what its API server says: every workload namespace keeps its
    default-deny for both directions (no decoy beside it) and its Pod Security labels.
    None when no cluster answered (no evidence, not drift)."""
    try:
        doc = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        return None
    objects = [o for o in doc["items"] if isinstance(o, dict)]
    out = []
    for ns in netpol.coverage(objects, [n.name for n in k8s.namespaces]).namespaces:
        if ns.status is not netpol.Status.OK:
            out.append(
                Item(
                    node,
                    Layer.GUEST,
                    f"k8s:netpol:{ns.namespace}",
                    "default-deny ingress and egress",
                    ns.status.value,
                    Fix.UP,
                    detail="\n".join(ns.reasons),
                )
            )
    labels = {
        o.get("metadata", {}).get("name"): o.get("metadata", {}).get("labels") or {}
        for o in objects
        if o.get("kind") == "Namespace"
    }
    want = k8s_manifests.psa_labels(k8s)
    for ns_name in (n.name for n in k8s.namespaces):
        have = labels.get(ns_name)
        wrong = sorted(k for k, v in want.items() if (have or {}).get(k) != v)
        if wrong:
            out.append(
                Item(
                    node,
                    Layer.GUEST,
                    f"k8s:psa:{ns_name}",
                    ", ".join(f"{k}={want[k]}" for k in wrong),
                    "namespace absent" if have is None else "labels differ",
                    Fix.UP,
                )
            )
    return out
