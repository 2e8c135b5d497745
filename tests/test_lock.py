"""Run locks and pool locks: real flock(2) on real files, held by a real second process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from provision.state import lock

HOLD = """
import sys, time
from pathlib import Path
from provision.state import lock
with lock.hold([("inventory x on hypervisor h", Path(sys.argv[1]))], "provision up -i x", 0, print):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(path: Path, seconds: float) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_a_held_lock_is_refused_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "h.lock"
    p = _holder(path, 30)
    try:
        with pytest.raises(lock.LockedError) as err:  # noqa: SIM117
            with lock.hold([("inventory x on hypervisor h", path)], "me", 0, print):
                pass
        message = str(err.value)
        assert f"inventory x on hypervisor h is locked by pid {p.pid}" in message
        assert "`provision up -i x`" in message and "--wait-lock" in message
        assert err.value.exit_code == 3
    finally:
        p.kill()
        p.wait()


def test_waiting_takes_the_lock_once_the_holder_ends(tmp_path: Path) -> None:
    path = tmp_path / "h.lock"
    p = _holder(path, 1.5)
    said: list[str] = []
    t0 = time.monotonic()
    with lock.hold([("inv on h", path)], "me", 30, said.append):
        waited = time.monotonic() - t0
    p.wait()
    assert said and "waiting up to 30s for inv on h" in said[0]
    assert waited > 0.5  # it did wait for the holder (no upper bound asserted: shared machine)


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "h.lock"
    p = _holder(path, 60)
    p.kill()  # SIGKILL: the kernel drops the flock
    p.wait()
    with lock.hold([("inv on h", path)], "me", 0, print):
        assert '"command": "me"' in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600


def test_pool_lock_serialises_threads(tmp_path: Path) -> None:
    path = tmp_path / "pool.lock"
    inside = 0
    most = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal inside, most
        for _ in range(20):
            with lock.exclusive(path):
                with guard:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.001)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 1


def test_sigint_stops_a_run_that_inherited_sigint_ignored(tmp_path: Path) -> None:
    """Issue #12: a shell starts a script's background jobs with SIGINT ignored; `provision`
    must still stop on SIGINT (exit 130) instead of running on. Real process, real signal: the
    run waits on a real run lock held here, so it is certainly mid-run when the signal lands."""
    import signal

    root = Path(__file__).resolve().parents[1]
    text = (root / "inventories" / "local.yaml").read_text()
    text = text.replace("state_dir: /var/lib/provision", f"state_dir: {tmp_path}")
    text = text.replace("playbooks: [../playbooks/post-boot.yaml]", "")
    inv_path = tmp_path / "local.yaml"
    inv_path.write_text(text)
    held = _holder(tmp_path / "inventories" / "local" / "locks" / "local.lock", 60)
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "provision.cli",
            "down",
            "-i",
            str(inv_path),
            "--json",
            "--wait-lock",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert run.stdout is not None
        line = run.stdout.readline()  # the lock event: the run is now waiting mid-run
        assert '"lock"' in line and "waiting up to 60s" in line, line
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=30) == 130, run.stderr.read() if run.stderr else ""
    finally:
        run.kill()
        held.kill()
        held.wait()
