"""Loading an inventory: YAML -> checked, merged (defaults -> groups -> node), frozen Inventory.

Each section is checked and built by its table (config.settings); what stays here is what a table
cannot say: the layering of node settings, references between sections (hypervisor, network and
group names, waiver ids in the catalogue, one control plane) and rules across keys. Every problem
is collected and raised at once as a located ConfigError.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from provision.baseline import catalogue, hardening
from provision.config import safety
from provision.config import settings as S
from provision.config.table import Kind, Parsed, Table, closest
from provision.config.yamlsrc import Loc, Value
from provision.config.yamlsrc import load as load_yaml
from provision.core.errors import ConfigError, Problem
from provision.core.model import (
    DriftIgnore,
    Inventory,
    K8sInstall,
    Kubernetes,
    NetworkMode,
    Node,
    Role,
    Waiver,
    WorkloadNamespace,
)


def load(path: Path) -> Inventory:
    """Load and check an inventory file; raise ConfigError listing every problem."""
    return build(load_yaml(path), path)


def build(root: Value, path: Path) -> Inventory:
    problems: list[Problem] = []
    top = _top(root, problems)
    if problems and not top:
        raise ConfigError(problems)

    base = path.parent  # relative file settings are the inventory's
    image = S.IMAGE.parse(top.get("image", Value({}, root.loc)), "image", problems)
    hypervisors = _named(top, "hypervisors", S.HYPERVISOR, problems, base=base)
    networks = _named(top, "networks", S.NETWORK, problems, base=base)
    layers = S.NODE.without("groups")  # defaults and groups name no groups themselves
    defaults = (
        layers.layer(top["defaults"], "defaults", problems) if "defaults" in top else Parsed()
    )
    groups = _named(top, "groups", layers, problems, layer=True)
    raw_nodes = _named(top, "nodes", S.NODE, problems, layer=True)
    if "nodes" in top and top["nodes"].is_map and not top["nodes"].data:
        problems.append(top["nodes"].loc.problem("nodes", "at least one node is required"))

    for name, parsed in networks.items():
        _check_network(name, parsed, top["networks"], problems)
    for name, parsed in hypervisors.items():
        _check_hypervisor(name, parsed, top["hypervisors"], problems)

    nodes: list[Node] = []
    for name, parsed in raw_nodes.items():
        node_loc = top["nodes"].data[name]
        merged, origin = _merge(name, parsed, defaults, groups, node_loc, problems)
        if merged is None:
            continue
        node = _node(base, name, merged, origin, node_loc, hypervisors, networks, problems)
        if node is not None:
            nodes.append(node)
    _check_unique(nodes, raw_nodes, top, problems)
    playbooks = _playbooks(path, top.get("playbooks"), problems)
    kubernetes = _kubernetes(base, top.get("kubernetes"), problems)
    if len(nodes) == len(raw_nodes):  # else the role count would blame a node already reported
        _check_roles(nodes, kubernetes, top, problems)

    if problems:
        raise ConfigError(problems)
    state = top.get("state_dir")
    return Inventory(
        name=top["name"].data,
        source=path,
        state_dir=Path(state.data if state else S.TOP["state_dir"].default).expanduser(),
        image=image.result(),
        hypervisors=tuple(h.result() for h in hypervisors.values()),
        networks=tuple(n.result() for n in networks.values()),
        nodes=tuple(nodes),
        playbooks=playbooks,
        kubernetes=kubernetes,
    )


def _kubernetes(base: Path, value: Value | None, problems: list[Problem]) -> Kubernetes | None:
    if value is None:
        return None
    namespaces = []
    raw = value.data.get("namespaces")
    if raw is not None and not raw.is_map:
        problems.append(raw.loc.problem("kubernetes.namespaces", "expected a mapping"))
    elif raw is not None:
        for name, ns_value in raw.data.items():
            ns = _namespace(name, ns_value, raw.key_locs[name], problems)
            if ns is not None:
                namespaces.append(ns)
    parsed = S.KUBERNETES.parse(
        value,
        "kubernetes",
        problems,
        base=base,
        leave={"namespaces"},
        namespaces=tuple(namespaces),
    )
    v = parsed.values
    if v.get("install") == K8sInstall.BUNDLE:
        for key in ("bundle", "bundle_sha256"):
            if v.get(key) is None and key not in parsed.invalid:
                problems.append(value.loc.problem("kubernetes", f"install: bundle needs {key!r}"))
    return parsed.built


def _namespace(
    name: str, value: Value, name_loc: Loc, problems: list[Problem]
) -> WorkloadNamespace | None:
    path = f"kubernetes.namespaces.{name}"
    if not re.fullmatch(S.NAME, name) or name in RESERVED_NAMESPACES:
        problems.append(
            name_loc.problem(path, "not a workload namespace name (DNS label, not kube-*/default)")
        )
        return None
    if value.data is None:
        value = Value({}, value.loc)
    if not value.is_map:
        problems.append(value.loc.problem(path, "expected a mapping"))
        return None
    allow_value = value.data.get("allow")
    rules = []
    if allow_value is not None and not allow_value.is_map:
        problems.append(allow_value.loc.problem(f"{path}.allow", "expected a mapping"))
    elif allow_value is not None:
        for rule, rule_value in allow_value.data.items():
            rpath = f"{path}.allow.{rule}"
            if not re.fullmatch(S.NAME, rule):
                problems.append(allow_value.key_locs[rule].problem(rpath, "not a valid rule name"))
                continue
            r = S.ALLOW_RULE.parse(rule_value, rpath, problems, name=rule)
            if r.invalid or not rule_value.is_map:
                continue
            if not (r.values["pods"] or r.values["from_namespaces"] or r.values["from_pods"]):
                problems.append(
                    rule_value.loc.problem(rpath, "an allow rule needs pods or a source")
                )
            if any(not 0 < int(p) < 65536 for p in r.values["ports"]):
                problems.append(rule_value.loc.problem(f"{rpath}.ports", "ports are 1-65535"))
            if r.built is not None:
                rules.append(r.built)
    parsed = S.NAMESPACE.parse(
        value, path, problems, leave={"allow"}, name=name, allow=tuple(rules)
    )
    return parsed.built


RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


def _check_roles(
    nodes: list[Node], k8s: Kubernetes | None, top: dict[str, Value], problems: list[Problem]
) -> None:
    """Kubernetes roles need the cluster settings, and exactly one control plane (kubeadm with a
    single control-plane node; stacked HA is not built)."""
    with_roles = [n for n in nodes if n.roles]
    if not with_roles or "nodes" not in top:
        return
    loc = top["nodes"].loc
    if k8s is None and "kubernetes" not in top:
        names = ", ".join(n.name for n in with_roles)
        problems.append(
            loc.problem(
                "kubernetes",
                f"nodes with Kubernetes roles ({names}) need a top-level `kubernetes` section",
            )
        )
    control = [n.name for n in with_roles if Role.K8S_CONTROL_PLANE in n.roles]
    if len(control) != 1:
        problems.append(
            loc.problem(
                "nodes",
                f"exactly one node needs role k8s-control-plane, found {len(control)}"
                + (f" ({', '.join(control)})" if control else ""),
            )
        )


def _playbooks(path: Path, value: Value | None, problems: list[Problem]) -> tuple[Path, ...]:
    """Playbook files must exist; their contents are checked when a run loads them."""
    if value is None:
        return ()
    out = []
    for i, item in enumerate(value.data):
        p = _relative(path, str(item.data))
        if not p.is_file():
            problems.append(item.loc.problem(f"playbooks[{i}]", f"no such file: {p}"))
        out.append(p)
    return tuple(out)


def _relative(inventory: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else inventory.parent / p


def _top(root: Value, problems: list[Problem]) -> dict[str, Value]:
    """The top level's keys: scalars checked, sections kept for the loaders of their own."""
    if not root.is_map:
        problems.append(root.loc.problem("", "an inventory must be a mapping"))
        return {}
    top: dict[str, Value] = {}
    for key, value in root.data.items():
        setting = S.TOP.get(key)
        if setting is None:
            problems.append(root.key_locs[key].problem(key, f"unknown key{closest(key, S.TOP)}"))
        elif setting.kind is not Kind.SECTION:
            if setting.check(value, key, problems) is not None:
                top[key] = value
        elif not value.is_map:
            problems.append(value.loc.problem(key, "expected a mapping"))
        else:
            top[key] = value
    for setting in S.TOP.missing(root.data):
        problems.append(root.loc.problem("", f"missing required key {setting.name!r}"))
    return top


def _named(
    top: dict[str, Value],
    key: str,
    table: Table[Any],
    problems: list[Problem],
    *,
    layer: bool = False,
    base: Path | None = None,
) -> dict[str, Parsed[Any]]:
    """A mapping of names to sections: each one parsed whole (and built, named by its key), or
    as a layer merged later (groups, nodes)."""
    out: dict[str, Parsed[Any]] = {}
    if key not in top:
        return out
    for name, value in top[key].data.items():
        path = f"{key}.{name}"
        if S.NAME_KEY.check(Value(name, top[key].key_locs[name]), path, problems) is None:
            continue
        if not layer:
            out[name] = table.parse(value, path, problems, base=base, name=name)
            continue
        if value.data is None:
            value = Value({}, value.loc)  # `node1:` with nothing under it takes the defaults
        out[name] = table.layer(value, path, problems)
    return out


def _merge(
    name: str,
    node: Parsed[Any],
    defaults: Parsed[Any],
    groups: dict[str, Parsed[Any]],
    node_value: Value,
    problems: list[Problem],
) -> tuple[dict[str, Any] | None, dict[str, Value]]:
    """The table's defaults, then defaults, each group in order, then the node: scalars and lists
    replace, maps merge."""
    layers = [defaults]
    for i, group in enumerate(node.values.get("groups", ())):
        if group not in groups:
            where = node.locs["groups"].data[i]
            problems.append(
                where.loc.problem(f"nodes.{name}.groups[{i}]", f"unknown group {group!r}")
            )
            return None, {}
        layers.append(groups[group])
    layers.append(node)
    invalid = set().union(*(layer.invalid for layer in layers))
    if invalid:
        return None, {}  # already reported; checks on a half-valid node would only cascade
    merged: dict[str, Any] = S.NODE.defaults()
    origin: dict[str, Value] = {}
    for layer in layers:
        for key, value in layer.values.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
            origin[key] = layer.locs[key]
            if isinstance(value, dict):  # where each entry of a map came from, for its errors
                origin.update((f"{key}.{k}", layer.locs[key].data[k]) for k in value)
    missing = S.NODE.missing(merged)
    for setting in missing:
        problems.append(
            node_value.loc.problem(
                f"nodes.{name}",
                f"missing required key {setting.name!r} (set it on the node, a group or defaults)",
            )
        )
    return (None, {}) if missing else (merged, origin)


def _check_hypervisor(
    name: str, parsed: Parsed[Any], hypervisors: Value, problems: list[Problem]
) -> None:
    """The transport must authenticate the hypervisor (the seeds travel over it), and an SSH
    transport must pin its host key: never trust on first use."""
    uri = parsed.values.get("uri")
    for message in safety.uri_problems(uri) if uri is not None else ():
        problems.append(parsed.locs["uri"].loc.problem(f"hypervisors.{name}.uri", message))
    scheme = str(uri or "").partition("://")[0]
    if "ssh" in scheme.split("+")[-1] and parsed.values.get("known_hosts") is None:
        problems.append(
            hypervisors.data[name].loc.problem(
                f"hypervisors.{name}",
                f"{scheme} needs known_hosts: a file pinning the hypervisor's SSH host key",
            )
        )


def _check_network(
    name: str, parsed: Parsed[Any], networks: Value, problems: list[Problem]
) -> None:
    v, path, loc = parsed.values, f"networks.{name}", networks.data[name].loc
    if v.get("mode") != NetworkMode.BRIDGE or parsed.invalid:
        return
    for key in ("bridge", "cidr"):
        if v.get(key) is None:
            problems.append(loc.problem(path, f"bridge mode needs {key!r}"))
    for key in (
        "cidr",
        "gateway",
        *[f"dns[{i}]" for i in range(len(v.get("dns", ())))],
    ):
        text = v["dns"][int(key[4:-1])] if key.startswith("dns[") else v.get(key)
        if text is None:
            continue
        try:
            ipaddress.ip_network(text) if key == "cidr" else ipaddress.ip_address(text)
        except ValueError as exc:
            base = key.split("[")[0]
            problems.append(parsed.locs[base].loc.problem(f"{path}.{key}", str(exc)))


def _node(
    base: Path,
    name: str,
    v: dict[str, Any],
    origin: dict[str, Value],
    node_value: Value,
    hypervisors: dict[str, Parsed[Any]],
    networks: dict[str, Parsed[Any]],
    problems: list[Problem],
) -> Node | None:
    """The merged node built by its table, then checked against the rest of the inventory."""
    path = f"nodes.{name}"
    before = len(problems)

    def bad(key: str, message: str) -> None:
        where = origin.get(key) or origin.get(key.split(".")[0])
        loc = where.loc if where is not None else node_value.loc
        problems.append(loc.problem(f"{path}.{key}", message))

    waivers = tuple(_waiver(check_id, text, bad) for check_id, text in v["waivers"].items())
    ignores = tuple(_ignore(key, text, bad) for key, text in v["drift_ignore"].items())
    node = S.NODE.build(
        v,
        base=base,
        name=name,
        waivers=tuple(w for w in waivers if w is not None),
        drift_ignores=tuple(i for i in ignores if i is not None),
    )
    if node.hypervisor not in hypervisors:
        bad("hypervisor", f"unknown hypervisor {node.hypervisor!r}")
    network = networks.get(node.network)
    if network is None:
        bad("network", f"unknown network {node.network!r}")
    elif network.values.get("mode") == NetworkMode.USER:
        if node.ssh_port is None:
            bad("ssh_port", "a node on a user-mode network needs ssh_port (loopback SSH forward)")
        if node.address is not None:
            bad("address", "a user-mode network takes no static address")
    elif network.values.get("mode") == NetworkMode.BRIDGE:
        if node.address is None:
            bad("address", "a node on a bridged network needs a static address (e.g. 10.0.0.5/24)")
        else:
            _check_address(node.address, network.values.get("cidr"), bad)
    admin = node.admin
    if not admin.managed_key and not admin.ssh_keys:
        bad("admin", "no way to log in: set admin.ssh_keys or admin.managed_key: true")
    if not admin.managed_key and admin.identity_file is None:
        bad("admin", "set admin.identity_file (the private key to log in with) or managed_key")
    for key, user in (("admin", admin.name), ("workload_user", node.workload_user)):
        if user == hardening.VERIFIER_USER:
            bad(key, f"{user!r} is reserved for the verification account")
    if admin.name == node.workload_user:
        bad("workload_user", "must differ from admin.name (the workload user has no sudo)")
    for key, message in safety.broken_requirements(node):
        bad(f"sysctl.{key}", message)
    return node if len(problems) == before else None


Bad = Callable[[str, str], None]  # (key under the node, message): a problem located on the node
_UNTIL = re.compile(r"until (\d{4}-\d{2}-\d{2}): (.*)")


def _waiver(check_id: str, text: str, bad: Bad) -> Waiver | None:
    """`reason` or `until YYYY-MM-DD: reason`; the id must be in the hardening catalogue."""
    if check_id not in catalogue.ids():
        bad(f"waivers.{check_id}", "not a check id of the hardening catalogue")
        return None
    found = _exception(f"waivers.{check_id}", "waiver", text, bad)
    return Waiver(check_id, *found) if found else None


def _ignore(pattern: str, text: str, bad: Bad) -> DriftIgnore | None:
    found = _exception(f"drift_ignore.{pattern}", "ignore", text, bad)
    return DriftIgnore(pattern, *found) if found else None


def _exception(key: str, what: str, text: str, bad: Bad) -> tuple[str, date | None] | None:
    """(reason, expiry) of `reason` or `until YYYY-MM-DD: reason`."""
    expires = None
    m = _UNTIL.fullmatch(text)
    if m:
        try:
            expires = date.fromisoformat(m.group(1))
        except ValueError:
            bad(key, f"{m.group(1)!r} is not a date (YYYY-MM-DD)")
            return None
        text = m.group(2)
    if len(text.strip()) < 10:
        bad(key, f"give the reason for the {what} (at least a sentence)")
        return None
    return text.strip(), expires


def _check_address(text: str, cidr: str | None, bad: Bad) -> None:
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError as exc:
        bad("address", str(exc))
        return
    if "/" not in text:
        bad("address", f"{text!r} needs a prefix length, e.g. {text}/24")
    elif cidr is not None:
        try:
            subnet = ipaddress.ip_network(cidr)
        except ValueError:
            return  # reported on the network
        if iface.ip not in subnet:
            bad("address", f"{iface.ip} is outside the network's cidr {subnet}")


def _check_unique(
    nodes: list[Node],
    raw: dict[str, Parsed[Any]],
    top: dict[str, Value],
    problems: list[Problem],
) -> None:
    seen: dict[tuple[str, str], str] = {}
    for node in nodes:
        keys = []
        if node.ssh_port is not None:
            keys.append((f"{node.hypervisor} ssh_port", str(node.ssh_port), "ssh_port"))
        if node.address is not None:
            keys.append(("address", node.address.split("/")[0], "address"))
        for scope, value, key in keys:
            other = seen.setdefault((scope, value), node.name)
            if other != node.name:
                loc = raw[node.name].locs.get(key, top["nodes"].data[node.name]).loc
                problems.append(
                    loc.problem(
                        f"nodes.{node.name}.{key}",
                        f"{value} is already used by {other}",
                    )
                )
