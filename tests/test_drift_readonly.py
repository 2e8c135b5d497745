"""`provision drift` is read-only by construction, proven on the wire: a real sshd on 127.0.0.1
stands in for a node (its ForceCommand records every command it receives and answers the facts
helper's verbs from a real node's recording), and libvirt is opened through a recorder around
the real library calls. Drift must send the three read-only collector verbs, each once, over one
SSH login per node, and open libvirt only with openReadOnly."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import libvirt
import pytest

from provision.boundary import ssh
from provision.config import inventory
from provision.core.events import Event
from provision.core.model import Inventory
from provision.drift import guest, run
from provision.drift.model import Layer
from provision.image import image, store
from provision.image.files import FILES_ARTIFACT
from provision.state import keys, paths
from tests.helpers import ROOT, loopback_inventory_text
from tests.sshd import running_sshd

DATA = ROOT / "tests" / "data"
ANSWERS = {
    "snapshot": DATA / "snapshot" / "snapshot.json",
    "tree": DATA / "snapshot" / "tree.txt",
    "drift": DATA / "snapshot" / "drift.txt",
}
NODES = ("ro-node1", "ro-node2")


def _inventory_text(state: Path, ports: dict[str, int]) -> str:
    return loopback_inventory_text(
        "drift-ro",
        state,
        "provision-drift-ro",
        {n: ports.get(n, 10990 + i) for i, n in enumerate(NODES)},
    )


def _image_store(inv: Inventory) -> None:
    """The golden image as drift reads it: its manifest (packages) and its file list."""
    directory = image.image_dir(store.images_dir(inv.state_dir), inv.image)
    directory.mkdir(parents=True)
    drift_txt = guest.sections(ANSWERS["drift"].read_text())["packages"]
    packages = tuple(
        (f[0], f[1], f[2]) for f in (line.split("\t") for line in drift_txt.splitlines())
    )
    artifacts = tuple(image.Artifact(a, "a" * 64, 1) for a in image.ARTIFACTS)
    manifest = image.Manifest(
        image.inputs_hash(inv.image),
        inv.image.name,
        "2026-12-01T00:00:00Z",
        "6.1.0-50-cloud-amd64",
        artifacts,
        packages,
        image.inputs(inv.image),
    )
    (directory / "manifest.json").write_text(manifest.to_json())
    (directory / FILES_ARTIFACT).write_bytes((DATA / "drift" / FILES_ARTIFACT).read_bytes())


@dataclass
class Site:
    inv: Inventory
    logs: dict[str, Path]  # node -> the commands its sshd received
    sshd_logs: dict[str, Callable[[], list[str]]]


def _sent(verb: str) -> str:
    """The command line sshd receives for a verb (ssh.Session gives it no stdin)."""
    return shlex.join(guest.command(verb)) + ssh.NO_STDIN


def _answering_script(tmp: Path) -> tuple[Path, Path]:
    """The stand-in node: record the command, answer the helper's verbs, refuse anything else."""
    log = tmp / "commands.log"
    cases = "".join(
        f"  {shlex.quote(_sent(verb))}) exec cat {shlex.quote(str(path))} ;;\n"
        for verb, path in ANSWERS.items()
    )
    script = tmp / "node.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$SSH_ORIGINAL_COMMAND" >> {shlex.quote(str(log))}\n'
        'case "$SSH_ORIGINAL_COMMAND" in\n'
        f"{cases}"
        '  *) echo "not a collector verb" >&2; exit 127 ;;\n'
        "esac\n"
    )
    script.chmod(0o755)
    return script, log


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    state = tmp_path / "state"
    inv_path = tmp_path / "inv.yaml"
    inv_path.write_text(_inventory_text(state, {}))
    inv = inventory.load(inv_path)
    verifier = keys.load_or_create(paths.verifier_key(inv), "verifier@drift-ro")
    _image_store(inv)
    ports: dict[str, int] = {}
    logs: dict[str, Path] = {}
    sshd_logs: dict[str, Callable[[], list[str]]] = {}
    with ExitStack() as stack:
        for name in NODES:
            server = stack.enter_context(
                running_sshd(
                    tmp_path / name,
                    host_key=keys.load_or_create(paths.node_host_key(inv, name), name),
                    force_command=_answering_script(_mkdir(tmp_path / f"{name}-answers"))[0],
                    authorized=verifier.public,
                )
            )
            ports[name] = server.port
            logs[name] = tmp_path / f"{name}-answers" / "commands.log"
            sshd_logs[name] = server.accepted_logins
        inv_path.write_text(_inventory_text(state, ports))
        yield Site(inventory.load(inv_path), logs, sshd_logs)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def as_root(target: ssh.Target) -> ssh.Session:
    """The stand-in sshd logs in only root (the node's `verifier` does not exist on this
    machine): the same pinned connection, under another user name."""
    return ssh.connect(replace(target, user="root"))


def test_drift_sends_only_the_read_only_collector_and_opens_libvirt_read_only(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[tuple[str, str]] = []
    real_open, real_ro = libvirt.open, libvirt.openReadOnly

    def recording(kind: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(uri: str | None = None, *args: Any) -> Any:
            opened.append((kind, str(uri)))
            return real(uri, *args)

        return call

    monkeypatch.setattr(libvirt, "open", recording("open", real_open))
    monkeypatch.setattr(libvirt, "openReadOnly", recording("openReadOnly", real_ro))
    events: list[Event] = []
    report = run.drift(
        site.inv, site.inv.nodes, events.append, date(2026, 12, 1), concurrency=4, connect=as_root
    )

    assert opened == [("openReadOnly", "test:///default")]  # one hypervisor, one connection
    wanted = sorted(_sent(v) for v in guest.VERBS)
    for name in NODES:
        assert sorted(site.logs[name].read_text().splitlines()) == wanted, name
        assert len(site.sshd_logs[name]()) == 1, name  # one login per node
    # Both nodes were compared (their recording is another node's: it drifts), and the
    # hypervisor too (the test driver has no such domains).
    assert report.unreachable == ()
    assert {i.node for i in report.items if i.layer is Layer.GUEST} == set(NODES)
    assert {(i.node, i.key) for i in report.items if i.layer is Layer.HYPERVISOR} == {
        (n, "domain") for n in NODES
    }
    assert report.exit_code == 2


def test_a_node_that_refuses_the_collector_is_unreachable_and_the_others_are_reported(
    site: Site,
) -> None:
    # The second node's helper answers nothing: its verbs fail, as on a node re-provisioned
    # without the facts helper. Reported, never a traceback; the first node still compared.
    script = site.logs[NODES[1]].parent / "node.sh"
    script.write_text("#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n")
    report = run.drift(
        site.inv,
        site.inv.nodes,
        lambda _e: None,
        date(2026, 12, 1),
        layers=frozenset({Layer.GUEST}),
        connect=as_root,
    )
    assert [(u.name, u.layer) for u in report.unreachable] == [(NODES[1], Layer.GUEST)]
    assert "a password is required" in report.unreachable[0].error
    assert {i.node for i in report.items} == {NODES[0]}
    assert report.exit_code == 3
