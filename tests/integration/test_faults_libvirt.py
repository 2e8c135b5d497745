"""Outside faults (issue #15): a tampered golden image, a full state_dir, a full storage pool and
libvirtd stopped mid-run. Each gives one clear line naming the node and the next step, a non-zero
exit and no traceback; the other nodes' work stays; once the fault is gone a re-run converges.

Everything runs in a private site (tests/integration/site.py): a libvirtd of this module's own in
its own mount and network namespaces, so the small tmpfs mounts (a state dir, a pool) and the
stopped daemon are never the machine's. Nodes are only defined (`up --no-start`): no guest boots.
The golden image is the cached one, linked (rootfs) and copied (the rest) into each state dir, so
a tampered copy is never the cache's file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.config import inventory
from provision.image import image, store
from provision.state import lock, paths, workspace
from tests.integration.site import Site, private_site

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "provision.cli"]
URI = "qemu:///system"
HANG_S = 900  # a bound on a hung run, never a timing assertion


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def errors(self) -> list[str]:
        return [x for x in self.stderr.splitlines() if x.startswith("error:")]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with private_site(tmp_path_factory.mktemp("site")) as s:
        # Sealed before anything is defined: only loopback, and no route off it.
        assert s.links() == ["lo"]
        assert all(" dev lo " in f"{r} " for r in s.routes().splitlines() if r.strip())
        yield s


@pytest.fixture(scope="module")
def pool_base() -> Iterator[Path]:
    """Where the pools live: on disk (a base image is 750 MiB), traversable by libvirt-qemu."""
    base = Path(tempfile.mkdtemp(prefix="provision-fa-", dir="/var/tmp"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def image_store(golden_dir: Path, images: Path, copy: tuple[str, ...] = ()) -> Path:
    """A store holding the cached image: rootfs hard-linked unless in `copy`, the rest copied."""
    d = images / golden_dir.name
    d.mkdir(parents=True)
    for f in golden_dir.iterdir():
        if f.name == "rootfs.qcow2" and f.name not in copy:
            os.link(f, d / f.name)
        else:
            shutil.copyfile(f, d / f.name)
    return d


class Fleet:
    """An inventory of pv-fa-* nodes, each on its own hypervisor entry (one pool each), run by the
    CLI inside the site."""

    def __init__(
        self,
        site: Site,
        path: Path,
        state_dir: Path,
        pools: dict[str, Path],  # hypervisor -> pool path
        nodes: dict[str, tuple[str, int]],  # node -> (hypervisor, ssh port)
    ) -> None:
        self.site, self.path, self.state_dir = site, path, state_dir
        self.pools = {hv: (f"provision-fa-{hv}", p) for hv, p in pools.items()}
        self.nodes = nodes
        doc: dict[str, Any] = yaml.safe_load((ROOT / "inventories" / "local.yaml").read_text())
        doc["name"] = f"fa-{path.stem}"
        doc["state_dir"] = str(state_dir)
        doc["hypervisors"] = {
            hv: {"uri": URI, "pool_name": name, "pool_path": str(p), "require_nvme": False}
            for hv, (name, p) in self.pools.items()
        }
        doc["defaults"].update({"docker": "none", "memory_mib": 512})
        doc["defaults"]["hypervisor"] = next(iter(pools))
        doc["playbooks"] = []
        doc["nodes"] = {n: {"hypervisor": hv, "ssh_port": port} for n, (hv, port) in nodes.items()}
        path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def argv(self, *args: str) -> list[str]:
        return [*CLI, *args, "-i", str(self.path)]

    def run(self, *args: str) -> Run:
        p = self.site.run(self.argv(*args), cwd=ROOT)
        return Run(p.returncode, p.stdout, p.stderr)

    def up(self) -> Run:
        return self.run("up", "--no-start")

    def defined(self, node: str) -> bool:
        return self.site.virsh("dominfo", node).returncode == 0

    def volumes(self, hv: str) -> dict[str, int]:
        """Volume file -> bytes, as the site's libvirtd sees the pool directory."""
        d = self.site.path(self.pools[hv][1])
        return {p.name: p.stat().st_size for p in d.iterdir()} if d.is_dir() else {}

    def pool_exists(self, hv: str) -> bool:
        return self.site.virsh("pool-info", self.pools[hv][0]).returncode == 0

    def teardown(self) -> None:
        self.run("down", "--purge")
        for name, _ in self.pools.values():
            self.site.virsh("pool-destroy", name)
            self.site.virsh("pool-undefine", name)


def one_clear_line(run: Run, node: str, *words: str) -> str:
    """The run failed with exactly one error line for `node`, naming each of `words`."""
    assert run.returncode != 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    lines = [x for x in run.errors if node in x]
    assert len(lines) == 1, run.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# --- golden image tampered after build --------------------------------------------------------


def _flip(path: Path) -> None:
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0x01]))


def _edit_digest(manifest: Path) -> None:
    doc = json.loads(manifest.read_text())
    for a in doc["artifacts"]:
        if a["name"] == "vmlinuz":
            a["sha256"] = "0" * 64
    manifest.write_text(json.dumps(doc))


def _drop_initrd(manifest: Path) -> None:
    doc = json.loads(manifest.read_text())
    doc["artifacts"] = [a for a in doc["artifacts"] if a["name"] != "initrd.img"]
    manifest.write_text(json.dumps(doc))


TAMPER = {
    "rootfs.qcow2": (lambda d: _flip(d / "rootfs.qcow2"), "rootfs.qcow2: sha256 differs"),
    "vmlinuz": (lambda d: _flip(d / "vmlinuz"), "vmlinuz: sha256 differs"),
    "initrd.img": (lambda d: _flip(d / "initrd.img"), "initrd.img: sha256 differs"),
    "manifest digest": (lambda d: _edit_digest(d / "manifest.json"), "vmlinuz: sha256 differs"),
    "manifest entry": (lambda d: _drop_initrd(d / "manifest.json"), "initrd.img: not in"),
    "manifest corrupt": (lambda d: (d / "manifest.json").write_text("{"), "is corrupt"),
}


@pytest.mark.parametrize("what", list(TAMPER))
def test_a_tampered_golden_image_is_refused_before_libvirt_is_touched(
    what: str, site: Site, pool_base: Path, golden_dir: Path, tmp_path: Path
) -> None:
    tamper, says = TAMPER[what]
    copy = ("rootfs.qcow2",) if what == "rootfs.qcow2" else ()
    directory = image_store(golden_dir, tmp_path / "state" / "images", copy)
    tamper(directory)
    fleet = Fleet(
        site,
        tmp_path / "tamper.yaml",
        tmp_path / "state",
        {"tamper": pool_base / "tamper"},
        {"pv-fa-t1": ("tamper", 10300), "pv-fa-t2": ("tamper", 10301)},
    )
    try:
        run = fleet.up()
        line = one_clear_line(run, "pv-fa-t1", "pv-fa-t2", says, "image build --force")
        assert str(directory) in line, "the line names the image"
        print(f"\n{what}: {line}")
        assert not fleet.pool_exists("tamper")
        assert not fleet.defined("pv-fa-t1") and not fleet.defined("pv-fa-t2")
    finally:
        fleet.teardown()


# --- the disk of state_dir full ---------------------------------------------------------------


def _fill(path: Path) -> None:
    """Write zeros to `path` until its filesystem is full."""
    with path.open("wb", buffering=0) as f:
        chunk = b"\0" * 4096
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    assert path.stat().st_size > 0


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        # Lock files hold who runs now, not state a later run trusts.
        if p.is_file() and not p.is_symlink() and p.name != "filler" and p.parent.name != "locks"
    }


def test_a_full_state_dir_is_one_line_leaves_nothing_half_written_and_a_rerun_converges(
    site: Site, pool_base: Path, golden_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    image_store(golden_dir, tmp_path / "images")
    site.mount_tmpfs(state, "1m")  # in the site only: the machine never sees this mount
    inside = site.path(state)
    (inside / "images").symlink_to(tmp_path / "images")
    fleet = Fleet(
        site,
        tmp_path / "full.yaml",
        state,
        {"state": pool_base / "state"},
        {"pv-fa-s1": ("state", 10305)},
    )
    try:
        filler = inside / "filler"
        _fill(filler)
        run = fleet.up()
        line = one_clear_line(run, "pv-fa-s1", "No space left on device", str(state), "re-run")
        print(f"\nkeys: {line}")
        assert _files(inside) == {}, "a partial key or known_hosts is left for a re-run to trust"
        assert not fleet.pool_exists("state") and not fleet.defined("pv-fa-s1")

        filler.unlink()
        run = fleet.up()
        assert run.returncode == 0, run.stderr
        assert fleet.defined("pv-fa-s1")
        inv = inventory.load(fleet.path)
        known_hosts = site.path(paths.known_hosts(inv))
        written = _files(inside)

        # Full again, with every file written: an unchanged `up` needs no space, and converges,
        # even when its run lock's file must be made anew.
        shutil.rmtree(site.path(paths.run_lock(inv, "state").parent))
        _fill(filler)
        run = fleet.up()
        assert run.returncode == 0, run.stderr
        assert _files(inside) == written

        # A known_hosts that must be rewritten on a full disk: the old one stays whole.
        filler.unlink()
        other = "[127.0.0.1]:10319 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherNodeKeyStaysPinned00"
        known_hosts.write_text(other + "\n")
        _fill(filler)
        run = fleet.up()
        line = one_clear_line(run, "pv-fa-s1", "known_hosts", "No space left on device", "re-run")
        print(f"known_hosts: {line}")
        assert known_hosts.read_text() == other + "\n"
        assert _files(inside).keys() == written.keys(), "a temporary file is left behind"

        filler.unlink()
        run = fleet.up()
        assert run.returncode == 0, run.stderr
        ours = written[str(paths.known_hosts(inv).relative_to(state))].decode()
        assert known_hosts.read_text() == other + "\n" + ours
    finally:
        fleet.teardown()


# --- storage pool full ------------------------------------------------------------------------


def _spawn(fleet: Fleet, *args: str) -> subprocess.Popen[str]:
    """A run whose progress lines the test follows; killed if it hangs (a bound, not a timing)."""
    proc = fleet.site.popen(
        fleet.argv(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    watchdog = threading.Timer(HANG_S, proc.kill)
    watchdog.daemon = True
    watchdog.start()
    return proc


def _progress(
    proc: subprocess.Popen[str], lines: list[str], want: Callable[[list[str]], bool]
) -> None:
    """Read the run's progress lines (stderr) until one satisfies `want`."""
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        if want(line.split()):
            return
    pytest.fail("the run ended before the awaited event:\n" + "".join(lines))


def _finish(proc: subprocess.Popen[str], lines: list[str]) -> Run:
    out, err = proc.communicate(timeout=HANG_S)
    return Run(proc.returncode, out, "".join(lines) + err)


def test_a_full_pool_fails_its_node_in_one_line_keeps_the_other_and_a_rerun_converges(
    site: Site, pool_base: Path, golden_dir: Path, golden_image: image.Manifest, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    image_store(golden_dir, state / "images")
    small = pool_base / "small"
    small.mkdir(mode=0o711)
    site.mount_tmpfs(small, "64m")  # in the site only
    fleet = Fleet(
        site,
        tmp_path / "pool.yaml",
        state,
        {"small": small, "normal": pool_base / "normal"},
        {"pv-fa-p1": ("small", 10310), "pv-fa-p2": ("normal", 10311)},
    )
    base = store.resolve(inventory.load(fleet.path).image, state).base_volume
    other = {"pv-fa-p2.qcow2", "pv-fa-p2-seed.img"}
    proc: subprocess.Popen[str] | None = None
    try:
        # Too small from the start: the preflight refuses the node, the other converges.
        run = fleet.up()
        line = one_clear_line(run, "pv-fa-p1", "pool provision-fa-small", "MiB free", "free space")
        print(f"\npreflight: {line}")
        assert fleet.defined("pv-fa-p2") and not fleet.defined("pv-fa-p1")
        assert other <= set(fleet.volumes("normal"))

        # Big enough at the preflight, full during the base image's upload (another writer).
        site.resize_tmpfs(small, "2g")
        proc = _spawn(fleet, "up", "--no-start")
        lines: list[str] = []
        _progress(proc, lines, lambda w: w[:3] == ["*", "upload", "info"] and base in w)
        assert Path(f"/proc/{proc.pid}/comm").read_text().startswith("python")
        os.kill(proc.pid, signal.SIGSTOP)  # while the filler takes all but 8 MiB
        try:
            st = os.statvfs(site.path(small))
            filler = site.path(small / "filler")
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, st.f_bavail * st.f_frsize - (8 << 20))
            finally:
                os.close(fd)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        run = _finish(proc, lines)
        line = one_clear_line(run, "pv-fa-p1", "provision-fa-small", "No space left", "re-run")
        print(f"upload: {line}")
        assert base not in fleet.volumes("small"), "the partial upload is left in the pool"
        assert fleet.defined("pv-fa-p2") and other <= set(fleet.volumes("normal"))

        # Space again; a partial base volume planted where an upload died (SIGKILL: nothing
        # could delete it) is not taken for the image: the re-run replaces it.
        filler.unlink()
        site.path(small / base).write_bytes(b"\0" * (1 << 20))
        site.virsh("pool-refresh", "provision-fa-small")
        run = fleet.up()
        assert run.returncode == 0, run.stderr
        assert fleet.defined("pv-fa-p1") and fleet.defined("pv-fa-p2")
        volume = site.path(small / base)
        assert volume.stat().st_size == golden_image.artifacts[0].size
        assert image.sha256_file(volume) == golden_image.digest("rootfs.qcow2")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        fleet.teardown()


# --- libvirtd stopped mid-run -----------------------------------------------------------------


def test_libvirtd_stopped_mid_run_is_one_line_keeps_what_was_done_and_a_rerun_converges(
    site: Site, pool_base: Path, golden_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    image_store(golden_dir, state / "images")
    fleet = Fleet(
        site,
        tmp_path / "stop.yaml",
        state,
        {"one": pool_base / "one", "two": pool_base / "two"},
        {"pv-fa-k1": ("one", 10315), "pv-fa-k2": ("two", 10316)},
    )
    inv = inventory.load(fleet.path)
    # Holding hypervisor two's pool lock holds its node before its first pool operation, so
    # libvirtd stops after pv-fa-k1 is defined and before pv-fa-k2 has anything: no race.
    two = paths.pool_lock(
        inv, workspace.hypervisor_uri(inv, inv.hypervisor("two")), "provision-fa-two"
    )
    proc: subprocess.Popen[str] | None = None
    try:
        lines: list[str] = []
        with lock.exclusive(two):
            proc = _spawn(fleet, "up", "--no-start", "--parallel", "2")
            _progress(proc, lines, lambda w: w[:3] == ["pv-fa-k1", "define", "done"])
            site.stop_libvirtd()
        run = _finish(proc, lines)
        line = one_clear_line(run, "pv-fa-k2", "libvirtd", "start it", "re-run")
        print(f"\nlibvirtd stopped: {line}")
        assert not [x for x in run.errors if "pv-fa-k1" in x], run.stderr

        site.start_libvirtd()
        assert fleet.defined("pv-fa-k1"), "what was done before the stop is kept"
        assert {"pv-fa-k1.qcow2", "pv-fa-k1-seed.img"} <= set(fleet.volumes("one"))
        run = fleet.up()
        assert run.returncode == 0, run.stderr
        assert fleet.defined("pv-fa-k2")
        assert {"pv-fa-k2.qcow2", "pv-fa-k2-seed.img"} <= set(fleet.volumes("two"))
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if site.libvirtd_pid is None:
            site.start_libvirtd()
        fleet.teardown()
