"""Run locks and pool locks: real flock(2) on real files, held by a real second process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from provision import lock

HOLD = """
import sys, time
from pathlib import Path
from provision import lock
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
