"""The command line's grammar: verbs, their arguments and help. No behaviour: main.py acts on it."""

from __future__ import annotations

import argparse
from enum import StrEnum
from pathlib import Path

from provision import __version__

DEFAULT_INVENTORY = Path("inventories/local.yaml")


class Verb(StrEnum):
    UP = "up"
    DOWN = "down"
    STATUS = "status"
    SSH = "ssh"
    SSH_CONFIG = "ssh-config"
    CONSOLE = "console"
    RENDER = "render"
    PLAN = "plan"
    SETTINGS = "settings"
    IMAGE = "image"
    VERIFY = "verify"
    DRIFT = "drift"
    POLICY_COVERAGE = "policy-coverage"


def _inventory_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-i",
        "--inventory",
        type=Path,
        default=DEFAULT_INVENTORY,
        help=f"inventory YAML file (default: {DEFAULT_INVENTORY})",
    )
    p.add_argument("--nodes", nargs="+", metavar="NODE", help="limit the command to these nodes")


def _wait_lock_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait-lock",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="if another run holds this inventory's hypervisors, wait up to SECONDS "
        "(default: refuse at once, exit 3)",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="provision",
        description="Hardened KVM nodes from a YAML inventory: golden images, libvirt guests with "
        "their own kernel, cloud-init hardening, and verification over pinned SSH.",
        epilog="Start with `provision render -i inventories/local.yaml -o out/` to see what a "
        "node is made of, then `provision plan` to compare it with the hypervisor.",
    )
    p.add_argument("--version", action="version", version=f"provision {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    u = sub.add_parser(
        Verb.UP,
        help="build or reuse the golden image, then create and boot nodes until SSH and "
        "cloud-init are done",
        description="Converge every node: golden image (cached), storage pool, one upload per "
        "image digest, a qcow2 overlay and a NoCloud seed per node, define, start, wait for SSH "
        "with the pinned host key, wait for cloud-init, then remove the seed. Re-running with an "
        "unchanged inventory changes nothing. Then verify the nodes against the hardening "
        "catalogue (as `provision verify`) unless --no-verify.",
    )
    _inventory_arg(u)
    u.add_argument("--json", action="store_true", help="JSON line events on stdout")
    u.add_argument(
        "--no-verify",
        action="store_true",
        help="skip `provision verify` of the nodes once they are up (it runs by default)",
    )
    u.add_argument(
        "--replace",
        action="store_true",
        help="allow recreating nodes whose seed, root disk size or golden rootfs changed "
        "(new root disk and first boot; the data disk is kept)",
    )
    u.add_argument(
        "--no-start",
        action="store_true",
        help="create volumes and define domains but leave new nodes shut off",
    )
    u.add_argument(
        "--parallel",
        type=int,
        default=4,
        metavar="N",
        help="converge up to N nodes at once (default 4); pool operations stay one at a time",
    )
    _wait_lock_arg(u)

    d = sub.add_parser(
        Verb.DOWN,
        help="stop and undefine nodes (disks stay unless --purge)",
        description="Stop and undefine this inventory's domains. Domains without provision "
        "metadata are never touched. Volumes stay unless --purge, which also removes golden "
        "artifacts no remaining domain uses.",
    )
    _inventory_arg(d)
    d.add_argument(
        "--purge", action="store_true", help="also delete the nodes' volumes, data disks included"
    )
    _wait_lock_arg(d)
    d.add_argument("--json", action="store_true", help="JSON line events on stdout")

    st = sub.add_parser(Verb.STATUS, help="node, state, address, image, uptime")
    _inventory_arg(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")

    sh = sub.add_parser(
        Verb.SSH,
        help="SSH to a node with its pinned host key (OpenSSH, StrictHostKeyChecking yes)",
    )
    sh.add_argument("-i", "--inventory", type=Path, default=DEFAULT_INVENTORY)
    sh.add_argument("node")
    sh.add_argument(
        "command", nargs=argparse.REMAINDER, help="-- COMMAND to run instead of a shell"
    )

    sc = sub.add_parser(
        Verb.SSH_CONFIG,
        help="print an OpenSSH config for the nodes (pinned known_hosts, strict checking)",
    )
    _inventory_arg(sc)

    co = sub.add_parser(Verb.CONSOLE, help="attach to a node's serial console (libvirt stream)")
    co.add_argument("-i", "--inventory", type=Path, default=DEFAULT_INVENTORY)
    co.add_argument("node")

    r = sub.add_parser(
        Verb.RENDER,
        help="write every artifact per node for review (no hypervisor needed)",
        description="Render domain, volume, pool and network XML and the cloud-init seed of each "
        "node into a directory, one folder per node. Files with secrets are 0600.",
    )
    _inventory_arg(r)
    r.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("out"),
        help="directory (default: out)",
    )

    pl = sub.add_parser(
        Verb.PLAN,
        help="show what `up` would create, change or leave, per node",
        description="Connect to each hypervisor and compare the rendered nodes with its "
        "domains, field by field: create (absent), nothing (identical), update (in place: "
        "labels), reboot (memory, vcpus, kernel, command line, devices), recreate (seed, root "
        "disk size, golden rootfs: needs `up --replace`), refuse (a domain that is not ours). "
        "`provision settings` lists the policy table.",
    )
    _inventory_arg(pl)
    pl.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser(
        Verb.SETTINGS,
        help="list every inventory setting with its type, default and meaning",
    )

    ve = sub.add_parser(
        Verb.VERIFY,
        help="check running nodes against the hardening catalogue (testinfra over pinned SSH)",
    )
    _inventory_arg(ve)
    ve.add_argument("node", nargs="*", help="nodes to verify (default: all; same as --nodes)")
    ve.add_argument("--json", action="store_true", help="print the report as JSON")
    ve.add_argument("--junit", type=Path, metavar="FILE", help="also write a JUnit XML report")
    ve.add_argument(
        "-k",
        dest="select",
        metavar="EXPR",
        help="only checks matching this pytest -k expression",
    )

    dr = sub.add_parser(
        Verb.DRIFT,
        help="compare hypervisors and nodes with what the inventory renders (read-only)",
        description="Layer hypervisor: each domain over a read-only libvirt connection (metadata, "
        "digests, the definition on every field provision sets, domains on our pools that are "
        "not ours). Layer guest: each node as the verifier over pinned SSH (every catalogue id "
        "from the verification snapshot, every file, package and firewall rule against the "
        "image and the seed). Nothing is changed. Exit 0 clean, 2 drift, 3 something "
        "unreachable, 1 the tool failed.",
    )
    _inventory_arg(dr)
    dr.add_argument("node", nargs="*", help="nodes to check (default: all; same as --nodes)")
    dr.add_argument(
        "--layer",
        choices=("all", "hypervisor", "guest"),
        default="all",
        help="compare only this layer (default: both)",
    )
    dr.add_argument("--json", action="store_true", help="print the report as JSON")
    dr.add_argument("--junit", type=Path, metavar="FILE", help="also write a JUnit XML report")
    dr.add_argument(
        "--concurrency",
        type=int,
        default=16,
        metavar="N",
        help="nodes and hypervisors compared at once (default 16; one connection each)",
    )

    pc = sub.add_parser(
        Verb.POLICY_COVERAGE,
        help="check that every workload namespace has default-deny for Ingress and Egress",
        description="Read NetworkPolicies (`kubectl get netpol -A -o json`, or manifests as a "
        "JSON/YAML list) from FILE or stdin and report, for each workload namespace of the "
        "inventory, ok / missing / decoy (allow-all, ingress-only, partial selector). Exit 1 "
        "unless every namespace is ok.",
    )
    _inventory_arg(pc)
    pc.add_argument("file", nargs="?", type=Path, help="policies as JSON or YAML (default stdin)")
    pc.add_argument("--json", action="store_true", help="machine-readable output")

    im = sub.add_parser(Verb.IMAGE, help="build, list and verify golden images")
    im_sub = im.add_subparsers(dest="image_verb", required=True, metavar="ACTION")
    b = im_sub.add_parser("build", help="build the inventory's golden image (cached by inputs)")
    _inventory_arg(b)
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    ls = im_sub.add_parser("list", help="list built images")
    _inventory_arg(ls)
    v = im_sub.add_parser("verify", help="re-hash an image's artifacts against its manifest")
    _inventory_arg(v)
    return p
