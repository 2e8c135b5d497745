"""The inventory's settings: one table per section, each row a key with its type, default,
limits and help, the field of core.model it fills and, for node settings, whether it reaches the
cloud-init seed.

The tables drive parsing (config.table builds the frozen dataclasses from them), the error
messages, `provision settings` and the generated broken-inventory tests. A new node setting is one
row in NODE and one field in core.model.Node; nothing else.
"""

from __future__ import annotations

from typing import Any

from provision.config.table import REQUIRED as REQUIRED
from provision.config.table import Kind as Kind
from provision.config.table import Setting as Setting
from provision.config.table import Table
from provision.core.model import (
    Accel,
    Admin,
    AllowRule,
    DockerMode,
    Hypervisor,
    ImageSpec,
    K8sInstall,
    Kubernetes,
    Network,
    NetworkMode,
    Node,
    Role,
    WorkloadNamespace,
)

NAME = r"^[a-z][a-z0-9-]{0,62}$"  # DNS label: node names become hostnames
USER = r"^[a-z_][a-z0-9_-]{0,31}$"
SYSCTL_KEY = r"^[a-z0-9_]+(\.[a-z0-9_*-]+)+$"


# The key naming a hypervisor, network, group or node.
NAME_KEY = Setting("name", Kind.STR, "Name of a hypervisor, network, group or node.", pattern=NAME)

IMAGE = Table(
    ImageSpec,
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
        "security_mirror",
        Kind.STR,
        "Debian security archive URL (default: the mirror's `-security` sibling, e.g. "
        "http://deb.debian.org/debian-security).",
        None,
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

HYPERVISOR = Table(
    Hypervisor,
    Setting(
        "uri",
        Kind.STR,
        "libvirt connection URI, e.g. qemu:///system or qemu+ssh://root@kvm1/system; "
        "qemu+tcp:// and no_verify are refused (the seeds travel over it).",
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
        enum=Accel,
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
        file=True,
    ),
    Setting(
        "identity_file",
        Kind.STR,
        "Private key for the SSH login to a remote hypervisor (default: ssh's own).",
        None,
        file=True,
    ),
)

NETWORK = Table(
    Network,
    Setting(
        "mode",
        Kind.ENUM,
        "user (loopback SSH forward) or bridge.",
        enum=NetworkMode,
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

ADMIN = Table(
    Admin,
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
        file=True,
    ),
)

# A row with seed=False never reaches the cloud-init seed; its comment names the policy field
# (desired.policy) that watches it instead. Every other row is seed: changing it recreates the node.
NODE = Table(
    Node,
    Setting(
        "hypervisor",
        Kind.STR,
        "Hypervisor (from `hypervisors`) that runs the node.",
        seed=False,  # the domain's place, not its contents
    ),
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
        seed=False,  # ssh-forward
    ),
    Setting(
        "vcpus",
        Kind.INT,
        "Virtual CPUs.",
        1,
        minimum=1,
        maximum=256,
        seed=False,  # vcpus
    ),
    Setting(
        "memory_mib",
        Kind.INT,
        "Memory in MiB.",
        1536,
        minimum=512,
        maximum=4194304,
        seed=False,  # memory
    ),
    Setting(
        "disk_gib",
        Kind.INT,
        "Size of the node's disk (qcow2 overlay) in GiB.",
        8,
        minimum=2,
        maximum=65536,
        seed=False,  # disk
    ),
    Setting(
        "data_disk_gib",
        Kind.INT,
        "Size of a data disk (vdc) in GiB, 0 for none. It survives `up --replace`.",
        0,
        minimum=0,
        maximum=65536,
        seed=False,  # data-disk
    ),
    Setting(
        "cmdline_extra",
        Kind.LIST,
        "Extra kernel command-line parameters.",
        [],
        pattern=r"^[A-Za-z0-9_.,:=/-]+$",
        seed=False,  # cmdline: the domain's direct kernel boot
    ),
    Setting("roles", Kind.ENUM_LIST, "Roles of the node.", [], enum=Role),
    Setting("docker", Kind.ENUM, "Docker mode.", "rootless", enum=DockerMode),
    Setting("admin", Kind.SECTION, "The operator's account.", {}, table=ADMIN),
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
        "Sysctl overrides on top of the hardening set; a value the node's role needs "
        "(e.g. ip_forward on Kubernetes) cannot be overridden.",
        {},
        pattern=SYSCTL_KEY,
    ),
    Setting(
        "labels",
        Kind.MAP,
        "Owner/env labels stored in domain metadata.",
        {},
        pattern=r"^[a-z][a-z0-9_.-]{0,62}$",
        seed=False,  # labels
    ),
    Setting(
        "waivers",
        Kind.MAP,
        "Verification waivers: catalogue id -> reason, optionally "
        "'until YYYY-MM-DD: reason' (an expired waiver no longer applies).",
        {},
        pattern=r"^HN-[A-Z0-9]+-[0-9]{2}$",
        seed=False,  # judging the node, not building it: no policy field needs to watch it
    ),
    Setting(
        "drift_ignore",
        Kind.MAP,
        "`provision drift` exceptions: item key pattern (fnmatch, e.g. file:/etc/motd, "
        "package:*) -> reason, optionally 'until YYYY-MM-DD: reason' (an expired ignore no "
        "longer applies).",
        {},
        pattern=r"^[A-Za-z0-9_.:/*?\[\]@+=-]{1,200}$",
        dest="drift_ignores",
        seed=False,  # judging the node, not building it
    ),
    # Only on a node itself: defaults and groups are parsed without it.
    Setting(
        "groups",
        Kind.LIST,
        "Groups (from `groups`) whose settings the node takes, in order.",
        [],
        pattern=NAME,
    ),
)

KUBERNETES = Table(
    Kubernetes,
    Setting(
        "version",
        Kind.STR,
        "Kubernetes version; every binary is pinned to it by checksum "
        "(provision/kubernetes/k8s_pins.py).",
        "1.34.4",
        pattern=r"^1\.[0-9]{1,2}\.[0-9]{1,3}$",
    ),
    Setting(
        "install",
        Kind.ENUM,
        "apt (pkgs.k8s.io packages in the golden image), bundle (an airgap bundle carried to "
        "the node), or prerequisites (prepare the nodes, bootstrap nothing).",
        "bundle",
        enum=K8sInstall,
    ),
    Setting("bundle", Kind.STR, "The airgap bundle file (install: bundle).", None, file=True),
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

NAMESPACE = Table(
    WorkloadNamespace,
    Setting(
        "sample_workload",
        Kind.BOOL,
        "Deploy the restricted sample workload in this namespace.",
        False,
    ),
)

ALLOW_RULE = Table(
    AllowRule,
    Setting("pods", Kind.MAP, "Labels of the pods this rule opens (podSelector).", {}),
    Setting("from_namespaces", Kind.LIST, "Namespaces whose pods may connect.", [], pattern=NAME),
    Setting("from_pods", Kind.MAP, "Labels of same-namespace pods that may connect.", {}),
    Setting(
        "ports",
        Kind.LIST,
        "TCP ports (all when empty).",
        [],
        pattern=r"^[0-9]{1,5}$",
        convert=lambda ports: tuple(int(p) for p in ports),
    ),
)

# The top level builds nothing itself: inventory assembles the Inventory from its sections.
TOP: Table[dict[str, Any]] = Table(
    dict,
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
        expands=True,
    ),
    Setting("image", Kind.SECTION, "The golden image spec.", {}, table=IMAGE),
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
        expands=True,
    ),
)


def reference() -> str:
    """Every table as text, for `provision settings`."""
    sections: tuple[tuple[str, Table[Any]], ...] = (
        ("top level", TOP),
        ("image", IMAGE),
        ("hypervisors.NAME", HYPERVISOR),
        ("networks.NAME", NETWORK),
        ("defaults / groups.NAME / nodes.NAME", NODE),
        ("admin", ADMIN),
        ("kubernetes", KUBERNETES),
        ("kubernetes.namespaces.NAME", NAMESPACE),
        ("kubernetes.namespaces.NAME.allow.RULE", ALLOW_RULE),
    )
    return "\n".join(line for title, table in sections for line in table.lines(title))
