"""Loading an inventory: YAML -> checked, merged (defaults -> groups -> node), frozen Inventory.

Every problem is collected and raised at once as a located ConfigError.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import date
from pathlib import Path
from typing import Any

from provision.baseline import catalogue, hardening
from provision.config import settings as S
from provision.config.yamlsrc import Loc, Value
from provision.config.yamlsrc import load as load_yaml
from provision.core.errors import ConfigError, Problem
from provision.core.model import (
    Accel,
    Admin,
    AllowRule,
    DockerMode,
    Hypervisor,
    ImageSpec,
    Inventory,
    K8sInstall,
    Kubernetes,
    Network,
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

    image = S.parse_section(S.IMAGE, top.get("image", Value({}, root.loc)), "image", problems)
    hypervisors = _named(top, "hypervisors", S.HYPERVISOR, problems, partial=False)
    networks = _named(top, "networks", S.NETWORK, problems, partial=False)
    defaults = (
        S.parse_section(S.NODE, top["defaults"], "defaults", problems, partial=True)
        if "defaults" in top
        else S.Parsed()
    )
    groups = _named(top, "groups", S.NODE, problems, partial=True)
    raw_nodes = _named(top, "nodes", S.NODE + S.NODE_ONLY, problems, partial=True)
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
        node = _node(path, name, merged, origin, node_loc, hypervisors, networks, problems)
        if node is not None:
            nodes.append(node)
    _check_unique(nodes, raw_nodes, top, problems)
    playbooks = _playbooks(path, top.get("playbooks"), problems)
    kubernetes = _kubernetes(path, top.get("kubernetes"), problems)
    if len(nodes) == len(raw_nodes):  # else the role count would blame a node already reported
        _check_roles(nodes, kubernetes, top, problems)

    if problems:
        raise ConfigError(problems)
    name = top["name"].data
    state = top.get("state_dir")
    return Inventory(
        name=name,
        source=path,
        state_dir=Path(state.data if state else "~/.local/share/provision").expanduser(),
        image=ImageSpec(
            name=image.values["name"],
            suite=image.values["suite"],
            mirror=image.values["mirror"],
            snapshot=image.values["snapshot"],
            kernel_flavour=image.values["kernel_flavour"],
            extra_packages=tuple(image.values["extra_packages"]),
            source_date_epoch=image.values["source_date_epoch"],
        ),
        hypervisors=tuple(
            Hypervisor(
                name=h,
                uri=v.values["uri"],
                pool_name=v.values["pool_name"],
                pool_path=v.values["pool_path"],
                accel=Accel(v.values["accel"]),
                require_nvme=v.values["require_nvme"],
                known_hosts=_relative(path, v.values["known_hosts"]),
                identity_file=_relative(path, v.values["identity_file"]),
            )
            for h, v in hypervisors.items()
        ),
        networks=tuple(
            Network(
                name=n,
                mode=NetworkMode(v.values["mode"]),
                bridge=v.values["bridge"],
                cidr=v.values["cidr"],
                gateway=v.values["gateway"],
                dns=tuple(v.values["dns"]),
            )
            for n, v in networks.items()
        ),
        nodes=tuple(nodes),
        playbooks=playbooks,
        kubernetes=kubernetes,
    )


def _kubernetes(path: Path, value: Value | None, problems: list[Problem]) -> Kubernetes | None:
    if value is None:
        return None
    rest = Value({k: v for k, v in value.data.items() if k != "namespaces"}, value.loc)
    rest.key_locs.update({k: v for k, v in value.key_locs.items() if k != "namespaces"})
    parsed = S.parse_section(S.KUBERNETES, rest, "kubernetes", problems)
    namespaces = []
    raw = value.data.get("namespaces")
    if raw is not None and not raw.is_map:
        problems.append(raw.loc.problem("kubernetes.namespaces", "expected a mapping"))
    elif raw is not None:
        for name, ns_value in raw.data.items():
            ns = _namespace(name, ns_value, raw.key_locs[name], problems)
            if ns is not None:
                namespaces.append(ns)
    v = parsed.values
    install = v.get("install")
    if install == K8sInstall.BUNDLE.value:
        for key in ("bundle", "bundle_sha256"):
            if v.get(key) is None and key not in parsed.invalid:
                problems.append(value.loc.problem("kubernetes", f"install: bundle needs {key!r}"))
    if parsed.invalid or any(k not in v for k in ("version", "install")):
        return None
    return Kubernetes(
        version=v["version"],
        install=K8sInstall(str(install)),
        bundle=_relative(path, v["bundle"]),
        bundle_sha256=v["bundle_sha256"],
        pod_cidr=v["pod_cidr"],
        service_cidr=v["service_cidr"],
        api_port=v["api_port"],
        namespaces=tuple(namespaces),
    )


def _namespace(
    name: str, value: Value, name_loc: Loc, problems: list[Problem]
) -> WorkloadNamespace | None:
    path = f"kubernetes.namespaces.{name}"
    if not re.match(S.NAME, name) or name in RESERVED_NAMESPACES:
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
    rest = Value({k: v for k, v in value.data.items() if k != "allow"}, value.loc)
    rest.key_locs.update({k: v for k, v in value.key_locs.items() if k != "allow"})
    parsed = S.parse_section(S.NAMESPACE, rest, path, problems)
    rules = []
    if allow_value is not None and not allow_value.is_map:
        problems.append(allow_value.loc.problem(f"{path}.allow", "expected a mapping"))
    elif allow_value is not None:
        for rule, rule_value in allow_value.data.items():
            rpath = f"{path}.allow.{rule}"
            if not re.match(S.NAME, rule):
                problems.append(allow_value.key_locs[rule].problem(rpath, "not a valid rule name"))
                continue
            r = S.parse_section(S.ALLOW_RULE, rule_value, rpath, problems)
            if r.invalid or not rule_value.is_map:
                continue
            if (
                not r.values["pods"]
                and not r.values["from_namespaces"]
                and not r.values["from_pods"]
            ):
                problems.append(
                    rule_value.loc.problem(rpath, "an allow rule needs pods or a source")
                )
            ports = tuple(int(p) for p in r.values["ports"])
            if any(not 0 < p < 65536 for p in ports):
                problems.append(rule_value.loc.problem(f"{rpath}.ports", "ports are 1-65535"))
            rules.append(
                AllowRule(
                    name=rule,
                    pods=tuple(sorted(r.values["pods"].items())),
                    from_namespaces=tuple(r.values["from_namespaces"]),
                    from_pods=tuple(sorted(r.values["from_pods"].items())),
                    ports=ports,
                )
            )
    if parsed.invalid:
        return None
    return WorkloadNamespace(name, tuple(rules), parsed.values["sample_workload"])


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
        assert p is not None
        if not p.is_file():
            problems.append(item.loc.problem(f"playbooks[{i}]", f"no such file: {p}"))
        out.append(p)
    return tuple(out)


def _relative(inventory: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else inventory.parent / p


def _top(root: Value, problems: list[Problem]) -> dict[str, Value]:
    if not root.is_map:
        problems.append(root.loc.problem("", "an inventory must be a mapping"))
        return {}
    known = {s.name: s for s in S.TOP}
    top: dict[str, Value] = {}
    for key, value in root.data.items():
        if key not in known:
            problems.append(root.key_locs[key].problem(key, f"unknown key{S._closest(key, known)}"))
        elif key in ("name", "state_dir", "playbooks"):
            if S.parse_value(known[key], value, key, problems) is not None:
                top[key] = value
        elif not value.is_map:
            problems.append(value.loc.problem(key, "expected a mapping"))
        else:
            top[key] = value
    for setting in S.TOP:
        if setting.required and setting.name not in root.data:
            problems.append(root.loc.problem("", f"missing required key {setting.name!r}"))
    return top


def _named(
    top: dict[str, Value],
    key: str,
    table: tuple[S.Setting, ...],
    problems: list[Problem],
    *,
    partial: bool,
) -> dict[str, S.Parsed]:
    out: dict[str, S.Parsed] = {}
    if key not in top:
        return out
    for name, value in top[key].data.items():
        path = f"{key}.{name}"
        if (
            S.parse_value(
                S.Setting("name", S.Kind.STR, "", pattern=S.NAME),
                Value(name, top[key].key_locs[name]),
                path,
                problems,
            )
            is None
        ):
            continue
        if value.data is None and partial:
            value = Value({}, value.loc)  # `node1:` with nothing under it takes the defaults
        out[name] = S.parse_section(table, value, path, problems, partial=partial)
    return out


def _merge(
    name: str,
    node: S.Parsed,
    defaults: S.Parsed,
    groups: dict[str, S.Parsed],
    node_value: Value,
    problems: list[Problem],
) -> tuple[dict[str, Any] | None, dict[str, Value]]:
    """defaults, then each group in order, then the node: scalars and lists replace, maps merge."""
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
    merged: dict[str, Any] = {}
    origin: dict[str, Value] = {}
    invalid = set().union(*(layer.invalid for layer in layers))
    if invalid:
        return None, {}  # already reported; checks on a half-valid node would only cascade
    for layer in layers:
        for key, value in layer.values.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
            origin[key] = layer.locs[key]
    missing = False
    for setting in S.NODE + S.NODE_ONLY:
        if setting.name in merged:
            continue
        if setting.required:
            missing = True
            problems.append(
                node_value.loc.problem(
                    f"nodes.{name}",
                    f"missing required key {setting.name!r} "
                    "(set it on the node, a group or defaults)",
                )
            )
        else:
            merged[setting.name] = setting.default
    if missing:
        return None, {}
    admin = {s.name: s.default for s in S.ADMIN} | merged["admin"]
    merged["admin"] = admin
    return merged, origin


def _check_hypervisor(
    name: str, parsed: S.Parsed, hypervisors: Value, problems: list[Problem]
) -> None:
    """An SSH transport must pin the hypervisor's host key: never trust on first use."""
    scheme = str(parsed.values.get("uri") or "").partition("://")[0]
    if "ssh" in scheme.split("+")[-1] and parsed.values.get("known_hosts") is None:
        problems.append(
            hypervisors.data[name].loc.problem(
                f"hypervisors.{name}",
                f"{scheme} needs known_hosts: a file pinning the hypervisor's SSH host key",
            )
        )


def _check_network(name: str, parsed: S.Parsed, networks: Value, problems: list[Problem]) -> None:
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
    source: Path,
    name: str,
    v: dict[str, Any],
    origin: dict[str, Value],
    node_value: Value,
    hypervisors: dict[str, S.Parsed],
    networks: dict[str, S.Parsed],
    problems: list[Problem],
) -> Node | None:
    path = f"nodes.{name}"
    before = len(problems)

    def bad(key: str, message: str) -> None:
        top = key.split(".")[0]
        loc = origin[top].loc if top in origin else node_value.loc
        problems.append(loc.problem(f"{path}.{key}", message))

    if v["hypervisor"] not in hypervisors:
        bad("hypervisor", f"unknown hypervisor {v['hypervisor']!r}")
    network = networks.get(v["network"])
    if network is None:
        bad("network", f"unknown network {v['network']!r}")
    elif network.values.get("mode") == NetworkMode.USER:
        if v["ssh_port"] is None:
            bad(
                "ssh_port",
                "a node on a user-mode network needs ssh_port (loopback SSH forward)",
            )
        if v["address"] is not None:
            bad("address", "a user-mode network takes no static address")
    elif network.values.get("mode") == NetworkMode.BRIDGE:
        if v["address"] is None:
            bad(
                "address",
                "a node on a bridged network needs a static address (e.g. 10.0.0.5/24)",
            )
        else:
            _check_address(v["address"], network.values.get("cidr"), bad)
    admin = v["admin"]
    if not admin["managed_key"] and not admin["ssh_keys"]:
        bad("admin", "no way to log in: set admin.ssh_keys or admin.managed_key: true")
    if not admin["managed_key"] and admin["identity_file"] is None:
        bad("admin", "set admin.identity_file (the private key to log in with) or managed_key")
    for key, user in (("admin", admin["name"]), ("workload_user", v["workload_user"])):
        if user == hardening.VERIFIER_USER:
            bad(key, f"{user!r} is reserved for the verification account")
    if admin["name"] == v["workload_user"]:
        bad(
            "workload_user",
            "must differ from admin.name (the workload user has no sudo)",
        )
    waivers = tuple(_waiver(check_id, text, bad) for check_id, text in v["waivers"].items())
    if len(problems) > before:
        return None
    return Node(
        name=name,
        hypervisor=v["hypervisor"],
        network=v["network"],
        address=v["address"],
        ssh_port=v["ssh_port"],
        vcpus=v["vcpus"],
        memory_mib=v["memory_mib"],
        disk_gib=v["disk_gib"],
        data_disk_gib=v["data_disk_gib"],
        cmdline_extra=tuple(v["cmdline_extra"]),
        roles=tuple(Role(r) for r in dict.fromkeys(v["roles"])),
        docker=DockerMode(v["docker"]),
        admin=Admin(
            admin["name"],
            tuple(admin["ssh_keys"]),
            admin["managed_key"],
            _relative(source, admin["identity_file"]),
        ),
        workload_user=v["workload_user"],
        sysctl=tuple(sorted(v["sysctl"].items())),
        labels=tuple(sorted(v["labels"].items())),
        groups=tuple(v["groups"]),
        waivers=tuple(w for w in waivers if w is not None),
    )


_UNTIL = re.compile(r"^until (\d{4}-\d{2}-\d{2}): (.*)$")


def _waiver(check_id: str, text: str, bad: Any) -> Waiver | None:
    """`reason` or `until YYYY-MM-DD: reason`; the id must be in the hardening catalogue."""
    if check_id not in catalogue.ids():
        bad(f"waivers.{check_id}", "not a check id of the hardening catalogue")
        return None
    expires = None
    m = _UNTIL.match(text)
    if m:
        try:
            expires = date.fromisoformat(m.group(1))
        except ValueError:
            bad(f"waivers.{check_id}", f"{m.group(1)!r} is not a date (YYYY-MM-DD)")
            return None
        text = m.group(2)
    if len(text.strip()) < 10:
        bad(f"waivers.{check_id}", "give the reason for the waiver (at least a sentence)")
        return None
    return Waiver(check_id, text.strip(), expires)


def _check_address(text: str, cidr: str | None, bad: Any) -> None:
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
    raw: dict[str, S.Parsed],
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
