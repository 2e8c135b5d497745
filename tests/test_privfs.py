"""Issue #15: what a hostile local user can plant where provision reads and writes its secrets.

Each test stages the attack as it was reproduced on the code before the fix (a planted `.tmp`, a
symlink, a key someone else owns or could read) and runs the real CLI as a subprocess.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from provision.config import inventory
from provision.core import privfs
from provision.desired import hostkeys
from provision.state import keys, paths
from tests.helpers import LOCAL
from tests.helpers import run_cli as _cli

NOBODY = 65534


def _inventory(tmp_path: Path) -> Path:
    text = LOCAL.read_text()
    text = text.replace("state_dir: /var/lib/provision", f"state_dir: {tmp_path / 'state'}")
    text = text.replace("playbooks: [../playbooks/post-boot.yaml]", "")
    path = tmp_path / "local.yaml"
    path.write_text(text)
    return path


def _with_keys(tmp_path: Path) -> tuple[Path, hostkeys.KeyPair]:
    """An inventory whose node already has its host key (as after `up`)."""
    inv_path = _inventory(tmp_path)
    inv = inventory.load(inv_path)
    pair = keys.load_or_create(paths.node_host_key(inv, inv.nodes[0].name), inv.nodes[0].name)
    keys.load_or_create(paths.admin_key(inv), "provision@local")
    keys.load_or_create(paths.verifier_key(inv), "verifier@local")
    return inv_path, pair


def _body(pair: hostkeys.KeyPair) -> str:
    """A line of the private key's base64 body: what would betray it anywhere."""
    return pair.private.reveal().splitlines()[2]


@pytest.fixture
def as_nobody_dir(tmp_path: Path) -> Path:
    """A directory another local user made (the attacker's /tmp/out)."""
    d = tmp_path / "theirs"
    d.mkdir()
    os.chown(d, NOBODY, NOBODY)
    return d


def test_render_refuses_an_output_directory_someone_else_owns(
    tmp_path: Path, as_nobody_dir: Path
) -> None:
    inv, _pair = _with_keys(tmp_path)
    result = _cli("render", "-i", str(inv), "-o", str(as_nobody_dir))
    assert result.returncode == 1, result.stderr
    assert f"{as_nobody_dir} is not a private directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(as_nobody_dir.iterdir()) == []


def test_render_refuses_an_output_directory_others_can_write(tmp_path: Path) -> None:
    inv, _pair = _with_keys(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    result = _cli("render", "-i", str(inv), "-o", str(out))
    assert result.returncode == 1 and "is not a private directory" in result.stderr
    assert list(out.iterdir()) == []


def test_planted_tmp_files_and_symlinks_capture_nothing(tmp_path: Path) -> None:
    """Before the fix: `<file>.tmp` pre-planted 0666 was opened without O_EXCL and kept its mode
    (the host key came out world-readable), and a symlink at `<file>` was written through."""
    inv, pair = _with_keys(tmp_path)
    out = tmp_path / "out"
    node = out / "node1"
    seed = node / "seed"
    seed.mkdir(parents=True)
    seed.chmod(0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    planted = []
    for f in (seed / "user-data", seed / "meta-data", node / "domain.xml", out / "known_hosts"):
        tmp = f.with_name(f.name + ".tmp")
        tmp.write_text("")
        tmp.chmod(0o666)
        planted.append(tmp)
        f.symlink_to(victim)
    result = _cli("render", "-i", str(inv), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert victim.read_text() == "precious\n"
    for tmp in planted:
        assert tmp.read_text() == "", f"{tmp} captured a write"
        target = tmp.with_name(tmp.name.removesuffix(".tmp"))
        assert target.is_file() and not target.is_symlink()
    user_data = seed / "user-data"
    assert _body(pair) in user_data.read_text()
    assert stat.S_IMODE(user_data.stat().st_mode) == 0o600
    assert stat.S_IMODE(seed.stat().st_mode) == 0o700


def test_a_symlinked_node_directory_is_refused(tmp_path: Path) -> None:
    inv, _pair = _with_keys(tmp_path)
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    (out / "node1").symlink_to(elsewhere)
    result = _cli("render", "-i", str(inv), "-o", str(out))
    assert result.returncode == 1 and f"{out / 'node1'} is a symlink" in result.stderr
    assert list(elsewhere.iterdir()) == []


def _planted_admin(tmp_path: Path, uid: int, mode: int) -> tuple[Path, hostkeys.KeyPair]:
    inv_path = _inventory(tmp_path)
    inv = inventory.load(inv_path)
    key = paths.admin_key(inv)
    key.parent.mkdir(parents=True, mode=0o700)
    attacker = hostkeys.generate("attacker")
    key.write_text(attacker.private.reveal())
    key.with_name(key.name + ".pub").write_text(attacker.public + "\n")
    os.chown(key, uid, uid)
    key.chmod(mode)
    return inv_path, attacker


@pytest.mark.parametrize(
    ("uid", "mode", "says"),
    [(NOBODY, 0o600, "owner uid 65534"), (0, 0o644, "mode 0644")],
    ids=["owned-by-another-user", "readable-by-others"],
)
def test_a_planted_admin_key_is_never_authorised(
    tmp_path: Path, uid: int, mode: int, says: str
) -> None:
    """Before the fix the planted pair was loaded and its public half rendered into every node's
    sudoers-backed login (`NOPASSWD:ALL`)."""
    inv, attacker = _planted_admin(tmp_path, uid, mode)
    out = tmp_path / "out"
    result = _cli("render", "-i", str(inv), "-o", str(out))
    assert result.returncode == 1, result.stderr
    assert "admin_ed25519 is not ours alone" in result.stderr and says in result.stderr
    assert "Traceback" not in result.stderr
    blob = attacker.public.split()[1]
    assert not any(blob in p.read_text() for p in out.rglob("*") if p.is_file())


def test_a_public_half_that_does_not_match_is_refused(tmp_path: Path) -> None:
    """A swapped `.pub` (root-owned, 0644, so it passes the ownership checks) would pin or
    authorise another key than the private one we hold."""
    inv_path, _pair = _with_keys(tmp_path)
    inv = inventory.load(inv_path)
    pub = paths.node_host_key(inv, "node1").with_name("ssh_host_ed25519_key.pub")
    pub.write_text(hostkeys.generate("mitm").public + "\n")
    result = _cli("render", "-i", str(inv_path), "-o", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "does not hold the public half" in result.stderr


def test_a_state_dir_others_can_write_is_refused(tmp_path: Path) -> None:
    inv_path, _pair = _with_keys(tmp_path)
    (tmp_path / "state").chmod(0o777)
    result = _cli("render", "-i", str(inv_path), "-o", str(tmp_path / "out"))
    assert result.returncode == 1
    assert f"{tmp_path / 'state'} is writable by others" in result.stderr


def test_a_symlinked_key_is_refused(tmp_path: Path) -> None:
    inv_path, _pair = _with_keys(tmp_path)
    inv = inventory.load(inv_path)
    key = paths.verifier_key(inv)
    real = tmp_path / "real-key"
    key.rename(real)
    key.symlink_to(real)
    result = _cli("render", "-i", str(inv_path), "-o", str(tmp_path / "out"))
    assert result.returncode == 1 and "is a symlink: refusing to read it" in result.stderr


def test_keys_are_created_private_and_a_loose_inventory_dir_is_tightened(
    tmp_path: Path,
) -> None:
    inv = inventory.load(_inventory(tmp_path))
    d = paths.inventory_dir(inv)
    d.mkdir(parents=True)
    d.chmod(0o755)  # what earlier versions left: not writable by others, so nothing planted
    key = paths.node_host_key(inv, "node1")
    keys.load_or_create(key, "node1")
    privfs.ensure_dir(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert keys.load(key) is not None
