"""The inventory made concrete on this machine: its nodes rendered with their persistent keys, the
accelerator each hypervisor resolves to, the golden digests in the local store; the URIs, SSH
targets and known_hosts through which they are reached.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from pathlib import Path

from provision.boundary import localhost, ssh, transport
from provision.core import privfs
from provision.core.errors import StateError, UsageError
from provision.core.model import Accel, Hypervisor, Inventory, Node
from provision.desired import render
from provision.desired.facts import AccelChoice, choose_accel, cpu_flags
from provision.desired.hostkeys import KeyPair
from provision.image import store
from provision.state import keys, paths


def select(inv: Inventory, names: Sequence[str] | None) -> tuple[Node, ...]:
    """The nodes named by --nodes (all when none), in inventory order."""
    if not names:
        return inv.nodes
    known = {n.name for n in inv.nodes}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"unknown node(s): {', '.join(unknown)}", hint=f"known: {', '.join(sorted(known))}"
        )
    return tuple(n for n in inv.nodes if n.name in names)


def probe_accel(hv: Hypervisor) -> AccelChoice:
    """Resolve `accel` for a hypervisor. Local: from /dev/kvm and /proc/cpuinfo here.

    Remote hypervisors are production KVM hosts: `auto` means kvm, checked at `up` time.
    """
    if not transport.is_local(hv.uri):
        return AccelChoice(Accel.KVM if hv.accel is Accel.AUTO else hv.accel, None)
    return choose_accel(hv.accel, localhost.kvm_device(), cpu_flags(localhost.cpuinfo()))


def render_inventory(
    inv: Inventory, nodes: tuple[Node, ...], *, create_keys: bool = False
) -> tuple[render.Rendered, list[str]]:
    """Render the nodes with their persistent keys; returns warnings for the user.

    Keys are created only with create_keys (the verbs that create nodes); otherwise a key that
    does not exist yet renders as a placeholder, and a warning says so.
    """
    missing: list[str] = []
    if create_keys:
        privfs.ensure_dir(paths.inventory_dir(inv))

    def key(path: Path, comment: str) -> KeyPair:
        if create_keys:
            try:
                return keys.load_or_create(path, comment)
            except OSError as exc:  # privfs writes through fresh names: nothing half-written
                raise StateError(
                    f"{comment}: cannot write its key {path}: {exc.strerror}",
                    hint=_state_hint(inv, exc),
                ) from exc
        pair = keys.load(path)
        if pair is None:
            missing.append(comment)
            return keys.placeholder()
        return pair

    host_keys = {n.name: key(paths.node_host_key(inv, n.name), n.name) for n in nodes}
    admin = None
    if any(n.admin.managed_key for n in nodes):
        admin = key(paths.admin_key(inv), f"provision@{inv.name}").public
    verifier = key(paths.verifier_key(inv), f"verifier@{inv.name}").public
    warnings: list[str] = []
    if missing:
        warnings.append(
            f"no keys yet for {', '.join(missing)}: rendered with placeholders "
            "(`provision up` creates them)"
        )
    accels: dict[str, Accel] = {}
    for hv_name in dict.fromkeys(n.hypervisor for n in nodes):
        choice = probe_accel(inv.hypervisor(hv_name))
        accels[hv_name] = choice.accel
        if choice.warning:
            warnings.append(f"{hv_name}: {choice.warning}")
    ref = store.resolve(inv.image, inv.state_dir)
    if not ref.resolved:
        warnings.append(
            f"golden image {ref.image_id[:16]} is not built yet: digests are marked unresolved "
            "(run `provision image build`)"
        )
    rendered = render.render(inv, ref, host_keys, admin, accels, nodes, verifier_key=verifier)
    return rendered, warnings


def hypervisor_uri(inv: Inventory, hv: Hypervisor) -> str:
    """The URI libvirt is opened with: remote transports check the pinned host key."""
    return transport.libvirt_uri(hv, paths.inventory_dir(inv))


def identity(inv: Inventory, node: Node) -> Path:
    if node.admin.identity_file is not None:
        return node.admin.identity_file
    return paths.admin_key(inv)


def ssh_target(inv: Inventory, r: render.NodeRender) -> ssh.Target:
    host, port = r.ssh_address
    return ssh.Target(
        host=host,
        port=port,
        user=r.node.admin.name,
        identity=identity(inv, r.node),
        known_hosts=paths.known_hosts(inv),
    )


def write_known_hosts(inv: Inventory, rendered: render.Rendered) -> None:
    """Merge our nodes' pinned keys into the inventory's known_hosts (other nodes' lines stay)."""
    path = paths.known_hosts(inv)
    ours = render.known_hosts(rendered).splitlines()
    hosts = {line.split()[0] for line in ours}
    try:
        privfs.ensure_dir(path.parent)
        old = privfs.read_file(path, secret=False) or b""
        kept = [x for x in old.decode().splitlines() if x and x.split()[0] not in hosts]
        text = ("\n".join([*kept, *ours]) + "\n").encode()
        if text != old:  # an unchanged run writes nothing, so it needs no free space
            privfs.write_file(path, text, 0o644)
    except OSError as exc:
        names = ", ".join(r.node.name for r in rendered.nodes)
        raise StateError(
            f"{names}: cannot write their pinned host keys to {path}: {exc.strerror}",
            hint=_state_hint(inv, exc),
        ) from exc


def _state_hint(inv: Inventory, exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"free space on the filesystem of state_dir {inv.state_dir}, then re-run; "
            "nothing was changed on the hypervisors"
        )
    return f"check that state_dir {inv.state_dir} is writable, then re-run"
