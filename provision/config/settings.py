"""The settings table: every inventory key with its type, default, limits and help.

One table drives parsing, the error messages, `provision settings` (the reference a newcomer reads)
and the generated broken-inventory tests.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from provision.config.yamlsrc import Value
from provision.core.errors import Problem
from provision.core.model import Accel, DockerMode, NetworkMode, Role


class Kind(StrEnum):
    STR = "string"
    INT = "integer"
    BOOL = "boolean"
    ENUM = "one of"
    LIST = "list of strings"
    ENUM_LIST = "list of"
    MAP = "mapping of key to scalar"
    SECTION = "mapping"


class _Required:
    def __repr__(self) -> str:
        return "required"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Setting:
    name: str
    kind: Kind
    help: str
    default: Any = REQUIRED
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None  # for STR, LIST items and MAP keys
    fields: tuple[Setting, ...] = ()  # for SECTION

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> str:
        kind = self.kind.value
        if self.choices:
            kind = f"{kind} {', '.join(self.choices)}"
        if self.minimum is not None or self.maximum is not None:
            kind = f"{kind} in [{self.minimum}, {self.maximum}]"
        return kind


NAME = r"^[a-z][a-z0-9-]{0,62}$"  # DNS label: node names become hostnames
USER = r"^[a-z_][a-z0-9_-]{0,31}$"
SYSCTL_KEY = r"^[a-z0-9_]+(\.[a-z0-9_*-]+)+$"


def _values(enum: Iterable[StrEnum]) -> tuple[str, ...]:
    return tuple(e.value for e in enum)


IMAGE = (
    Setting("name", Kind.STR, "Name of the golden image.", "bookworm-node", pattern=NAME),
    Setting(
        "suite",
        Kind.ENUM,
        "Debian suite to bootstrap.",
        "bookworm",
        choices=("bookworm",),
    ),
    Setting(
        "mirror",
        Kind.STR,
        "Debian mirror URL.",
        "http://deb.debian.org/debian",
        pattern=r"^https?://\S+$",
    ),
    Setting(
        "snapshot",
        Kind.STR,
        "snapshot.debian.org timestamp for a reproducible build.",
        None,
        pattern=r"^\d{8}T\d{6}Z$",
    ),
    Setting(
        "kernel_flavour",
        Kind.ENUM,
        "Debian kernel flavour (linux-image-<flavour>).",
        "cloud-amd64",
        choices=("cloud-amd64", "amd64"),
    ),
    Setting(
        "extra_packages",
        Kind.LIST,
        "Packages added to the base set.",
        [],
        pattern=r"^[a-z0-9][a-z0-9+.-]+$",
    ),
    Setting(
        "source_date_epoch",
        Kind.INT,
        "SOURCE_DATE_EPOCH of the build.",
        1700000000,
        minimum=0,
        maximum=2**32,
    ),
)

HYPERVISOR = (
    Setting(
        "uri",
        Kind.STR,
        "libvirt connection URI, e.g. qemu:///system or qemu+ssh://root@kvm1/system.",
        pattern=r"^[a-z0-9+]+://\S*$",
    ),
    Setting(
        "pool_name",
        Kind.STR,
        "libvirt storage pool for images and overlays.",
        "provision",
        pattern=NAME,
    ),
    Setting(
        "pool_path",
        Kind.STR,
        "Directory of the pool on the hypervisor (local NVMe).",
        pattern=r"^/\S*$",
    ),
    Setting(
        "accel",
        Kind.ENUM,
        "kvm, qemu (TCG), or auto (kvm only if usable).",
        "auto",
        choices=_values(Accel),
    ),
    Setting(
        "require_nvme",
        Kind.BOOL,
        "Refuse a pool whose backing device is not NVMe.",
        False,
    ),
    Setting(
        "known_hosts",
        Kind.STR,
        "known_hosts file pinning the hypervisor's SSH host key (remote URIs); required for "
        "qemu+ssh and qemu+libssh, and checked strictly.",
        None,
    ),
    Setting(
        "identity_file",
        Kind.STR,
        "Private key for the SSH login to a remote hypervisor (default: ssh's own).",
        None,
    ),
)

NETWORK = (
    Setting(
        "mode",
        Kind.ENUM,
        "user (loopback SSH forward) or bridge.",
        choices=_values(NetworkMode),
    ),
    Setting(
        "bridge",
        Kind.STR,
        "Host bridge (bridge mode).",
        None,
        pattern=r"^[a-zA-Z0-9_.-]{1,15}$",
    ),
    Setting("cidr", Kind.STR, "Subnet of static addresses (bridge mode).", None),
    Setting("gateway", Kind.STR, "Default gateway (bridge mode).", None),
    Setting("dns", Kind.LIST, "DNS servers (bridge mode).", []),
)

ADMIN = (
    Setting("name", Kind.STR, "Login of the operator on every node.", "ops", pattern=USER),
    Setting(
        "ssh_keys",
        Kind.LIST,
        "Public keys authorised for the operator.",
        [],
        pattern=r"^(ssh-ed25519|ecdsa-sha2-nistp\d+|ssh-rsa|sk-\S+) [A-Za-z0-9+/=]+( .*)?$",
    ),
    Setting(
        "managed_key",
        Kind.BOOL,
        "Generate and keep an operator key in the state dir.",
        True,
    ),
    Setting(
        "identity_file",
        Kind.STR,
        "Private key provision logs in with (default: the managed key).",
        None,
    ),
)

NODE = (
    Setting("hypervisor", Kind.STR, "Hypervisor (from `hypervisors`) that runs the node."),
    Setting("network", Kind.STR, "Network (from `networks`) of the node's NIC."),
    Setting(
        "address",
        Kind.STR,
        "Static address with prefix, e.g. 10.20.0.11/24 (bridge mode).",
        None,
    ),
    Setting(
        "ssh_port",
        Kind.INT,
        "Loopback port forwarded to the node's SSH (user mode).",
        None,
        minimum=1024,
        maximum=65535,
    ),
    Setting("vcpus", Kind.INT, "Virtual CPUs.", 1, minimum=1, maximum=256),
    Setting("memory_mib", Kind.INT, "Memory in MiB.", 1536, minimum=512, maximum=4194304),
    Setting(
        "disk_gib",
        Kind.INT,
        "Size of the node's disk (qcow2 overlay) in GiB.",
        8,
        minimum=2,
        maximum=65536,
    ),
    Setting(
        "data_disk_gib",
        Kind.INT,
        "Size of a data disk (vdc) in GiB, 0 for none. It survives `up --replace`.",
        0,
        minimum=0,
        maximum=65536,
    ),
    Setting(
        "cmdline_extra",
        Kind.LIST,
        "Extra kernel command-line parameters.",
        [],
        pattern=r"^[A-Za-z0-9_.,:=/-]+$",
    ),
    Setting("roles", Kind.ENUM_LIST, "Roles of the node.", [], choices=_values(Role)),
    Setting("docker", Kind.ENUM, "Docker mode.", "rootless", choices=_values(DockerMode)),
    Setting("admin", Kind.SECTION, "The operator's account.", {}, fields=ADMIN),
    Setting(
        "workload_user",
        Kind.STR,
        "Unprivileged user that runs rootless Docker.",
        "app",
        pattern=USER,
    ),
    Setting(
        "sysctl",
        Kind.MAP,
        "Sysctl overrides on top of the hardening set.",
        {},
        pattern=SYSCTL_KEY,
    ),
    Setting(
        "labels",
        Kind.MAP,
        "Owner/env labels stored in domain metadata.",
        {},
        pattern=r"^[a-z][a-z0-9_.-]{0,62}$",
    ),
    Setting(
        "waivers",
        Kind.MAP,
        "Verification waivers: catalogue id -> reason, optionally "
        "'until YYYY-MM-DD: reason' (an expired waiver no longer applies).",
        {},
        pattern=r"^HN-[A-Z0-9]+-[0-9]{2}$",
    ),
)

KUBERNETES = (
    Setting(
        "version",
        Kind.STR,
        "Kubernetes version; every binary is pinned to it by checksum (provision/k8s_pins.py).",
        "1.34.4",
        pattern=r"^1\.[0-9]{1,2}\.[0-9]{1,3}$",
    ),
    Setting(
        "install",
        Kind.ENUM,
        "apt (pkgs.k8s.io packages in the golden image), bundle (an airgap bundle carried to "
        "the node), or prerequisites (prepare the nodes, bootstrap nothing).",
        "bundle",
        choices=("apt", "bundle", "prerequisites"),
    ),
    Setting("bundle", Kind.STR, "The airgap bundle file (install: bundle).", None),
    Setting(
        "bundle_sha256",
        Kind.STR,
        "sha256 of the bundle file, as its builder published it (install: bundle).",
        None,
        pattern=r"^[0-9a-f]{64}$",
    ),
    Setting("pod_cidr", Kind.STR, "Pod network.", "10.244.0.0/16", pattern=r"^[0-9./]+$"),
    Setting("service_cidr", Kind.STR, "Service network.", "10.96.0.0/12", pattern=r"^[0-9./]+$"),
    Setting("api_port", Kind.INT, "API server port.", 6443, minimum=1, maximum=65535),
)

NAMESPACE = (
    Setting(
        "sample_workload",
        Kind.BOOL,
        "Deploy the restricted sample workload in this namespace.",
        False,
    ),
)

ALLOW_RULE = (
    Setting("pods", Kind.MAP, "Labels of the pods this rule opens (podSelector).", {}),
    Setting("from_namespaces", Kind.LIST, "Namespaces whose pods may connect.", [], pattern=NAME),
    Setting("from_pods", Kind.MAP, "Labels of same-namespace pods that may connect.", {}),
    Setting("ports", Kind.LIST, "TCP ports (all when empty).", [], pattern=r"^[0-9]{1,5}$"),
)

NODE_ONLY = (
    Setting(
        "groups",
        Kind.LIST,
        "Groups (from `groups`) whose settings the node takes, in order.",
        [],
        pattern=NAME,
    ),
)

TOP = (
    Setting(
        "name",
        Kind.STR,
        "Name of the inventory (owner label and lock name).",
        pattern=NAME,
    ),
    Setting(
        "state_dir",
        Kind.STR,
        "Where images, keys and known_hosts live; ~ expands.",
        "~/.local/share/provision",
    ),
    Setting("image", Kind.SECTION, "The golden image spec.", {}, fields=IMAGE),
    Setting("hypervisors", Kind.SECTION, "Named hypervisors (see HYPERVISOR settings)."),
    Setting("networks", Kind.SECTION, "Named networks (see NETWORK settings)."),
    Setting("defaults", Kind.SECTION, "Node settings every node takes.", {}),
    Setting("groups", Kind.SECTION, "Named groups of node settings.", {}),
    Setting("nodes", Kind.SECTION, "Named nodes (see NODE settings)."),
    Setting(
        "kubernetes",
        Kind.SECTION,
        "The cluster of the nodes with Kubernetes roles (see KUBERNETES settings; "
        "`namespaces: {NAME: {sample_workload, allow: {RULE: ALLOW settings}}}`).",
        None,
    ),
    Setting(
        "playbooks",
        Kind.LIST,
        "Playbook files (relative to the inventory) run in order after the nodes are up.",
        [],
    ),
)


@dataclass
class Parsed:
    """Values of one section with the location each came from."""

    values: dict[str, Any] = field(default_factory=dict)
    locs: dict[str, Value] = field(default_factory=dict)
    invalid: set[str] = field(default_factory=set)  # present but wrong: already reported


def _type_name(data: Any) -> str:
    if data is None:
        return "null"
    if isinstance(data, dict):
        return "a mapping"
    if isinstance(data, list):
        return "a list"
    return f"{type(data).__name__} {data!r}"


def _scalar(setting: Setting, value: Value, path: str, problems: list[Problem]) -> Any:
    data = value.data
    bad = value.loc.problem
    if setting.kind is Kind.BOOL:
        if not isinstance(data, bool):
            problems.append(bad(path, f"expected a boolean (true/false), got {_type_name(data)}"))
            return None
        return data
    if setting.kind is Kind.INT:
        if isinstance(data, bool) or not isinstance(data, int):
            problems.append(bad(path, f"expected an integer, got {_type_name(data)}"))
            return None
        lo, hi = setting.minimum, setting.maximum
        if (lo is not None and data < lo) or (hi is not None and data > hi):
            problems.append(bad(path, f"{data} is out of range [{lo}, {hi}]"))
            return None
        return data
    if not isinstance(data, str) or isinstance(data, bool):
        problems.append(bad(path, f"expected a string, got {_type_name(data)}"))
        return None
    if setting.choices and data not in setting.choices:
        problems.append(bad(path, f"{data!r} is not one of: {', '.join(setting.choices)}"))
        return None
    if setting.pattern and not re.match(setting.pattern, data):
        problems.append(bad(path, f"{data!r} is not a valid {setting.name}"))
        return None
    return data


def parse_value(setting: Setting, value: Value, path: str, problems: list[Problem]) -> Any:
    """Check one value against its setting; append problems, return the parsed value or None."""
    if setting.kind in (Kind.LIST, Kind.ENUM_LIST):
        if not value.is_list:
            problems.append(
                value.loc.problem(path, f"expected a list, got {_type_name(value.data)}")
            )
            return None
        item = Setting(
            setting.name,
            Kind.STR if setting.kind is Kind.LIST else Kind.ENUM,
            setting.help,
            choices=setting.choices,
            pattern=setting.pattern,
        )
        items = [parse_value(item, v, f"{path}[{i}]", problems) for i, v in enumerate(value.data)]
        return None if None in items else tuple(items)
    if setting.kind is Kind.MAP:
        if not value.is_map:
            problems.append(
                value.loc.problem(path, f"expected a mapping, got {_type_name(value.data)}")
            )
            return None
        out: dict[str, str] = {}
        for key, v in value.data.items():
            sub = f"{path}.{key}"
            if setting.pattern and not re.match(setting.pattern, key):
                problems.append(value.key_locs[key].problem(sub, f"{key!r} is not a valid key"))
            elif v.is_map or v.is_list or v.data is None:
                problems.append(v.loc.problem(sub, f"expected a scalar, got {_type_name(v.data)}"))
            else:
                out[key] = str(v.data).lower() if isinstance(v.data, bool) else str(v.data)
        return out
    if setting.kind is Kind.SECTION:
        if not value.is_map:
            problems.append(
                value.loc.problem(path, f"expected a mapping, got {_type_name(value.data)}")
            )
            return None
        return parse_section(setting.fields, value, path, problems, partial=True).values
    return _scalar(setting, value, path, problems)


def parse_section(
    table: tuple[Setting, ...],
    value: Value,
    path: str,
    problems: list[Problem],
    *,
    partial: bool = False,
) -> Parsed:
    """Parse a mapping against a table; unknown keys are errors.

    With partial (defaults, groups, nodes before merging), missing keys are left for later.
    """
    parsed = Parsed()
    if not value.is_map:
        problems.append(
            value.loc.problem(path, f"expected a mapping, got {_type_name(value.data)}")
        )
        return parsed
    known = {s.name: s for s in table}
    for key, item in value.data.items():
        sub = f"{path}.{key}" if path else key
        setting = known.get(key)
        if setting is None:
            hint = _closest(key, known)
            problems.append(value.key_locs[key].problem(sub, f"unknown key{hint}"))
            continue
        if item.data is None and not setting.required and setting.default is None:
            continue  # an explicit null means "not set" for optional settings
        result = parse_value(setting, item, sub, problems)
        if result is not None:
            parsed.values[key] = result
            parsed.locs[key] = item
        else:
            parsed.invalid.add(key)
    if not partial:
        for setting in table:
            if setting.name in value.data:
                continue
            if setting.required:
                problems.append(value.loc.problem(path, f"missing required key {setting.name!r}"))
            else:
                parsed.values[setting.name] = setting.default
    return parsed


def _closest(key: str, known: dict[str, Setting]) -> str:
    match = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {match[0]!r}?)" if match else f" (known: {', '.join(sorted(known))})"


def reference() -> str:
    """The settings table as text, for `provision settings`."""
    lines: list[str] = []
    for title, table in (
        ("top level", TOP),
        ("image", IMAGE),
        ("hypervisors.NAME", HYPERVISOR),
        ("networks.NAME", NETWORK),
        ("defaults / groups.NAME / nodes.NAME", NODE + NODE_ONLY),
        ("admin", ADMIN),
        ("kubernetes", KUBERNETES),
        ("kubernetes.namespaces.NAME", NAMESPACE),
        ("kubernetes.namespaces.NAME.allow.RULE", ALLOW_RULE),
    ):
        lines.append(f"{title}:")
        for s in table:
            default = "required" if s.required else f"default {s.default!r}"
            lines.append(f"  {s.name:<18} {s.describe()}; {default}")
            lines.append(f"  {'':<18} {s.help}")
        lines.append("")
    return "\n".join(lines)
