"""HN-CRT: the running workload containers and what each runtime enforces (its probe).

The clean node runs no workload, so `setup` starts one on the rootful daemon: the recorded
`good` container of tests/data/verify-docker-inspect.json (a real `docker inspect`: drop ALL,
no-new-privileges, read-only, uid 1000, limits, a port on 127.0.0.1), with its main process's
/proc status as the verifier reads it live. Each mutation then breaks one property of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.mutations import Edit, mutation, probe
from tests.recording import Recording

INSPECT = json.loads(
    (Path(__file__).parent.parent / "data" / "verify-docker-inspect.json").read_text()
)
GOOD: dict[str, Any] = next(c for c in INSPECT if c["Name"] == "/good")
PID = GOOD["State"]["Pid"]
STATUS = "Name:\tbusybox\nNoNewPrivs:\t1\nSeccomp:\t2\nCapEff:\t0000000000000000\n"
# What testinfra asks before it reads a file: the system it talks to.
OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'


def _containers(rec: Recording) -> list[dict[str, Any]]:
    part = rec.part("verbs", "docker-inspect rootful")
    found: list[dict[str, Any]] = json.loads(part["stdout"])
    return found


def _write(rec: Recording, containers: list[dict[str, Any]]) -> None:
    rec.part("verbs", "docker-inspect rootful")["stdout"] = json.dumps(containers)


def workload(rec: Recording) -> None:
    assert _containers(rec) == [], "the clean node runs no workload"
    _write(rec, [json.loads(json.dumps(GOOD))])
    rec.live.update(
        {
            "uname -s": "Linux\n",
            "uname -m": "x86_64\n",
            "cat /etc/os-release": OS_RELEASE,
            f"test -e /proc/{PID}/status": "",
            f"cat -- /proc/{PID}/status": STATUS,
        }
    )


def container(path: str, value: object) -> Edit:
    """Set a field of the workload's inspect, by dotted path ("HostConfig.Privileged")."""

    def edit(rec: Recording) -> None:
        containers = _containers(rec)
        *parents, leaf = path.split(".")
        node = containers[0]
        for key in parents:
            node = node[key]
        node[leaf] = value
        _write(rec, containers)

    return edit


def status(field: str, value: str) -> Edit:
    def edit(rec: Recording) -> None:
        key = f"cat -- /proc/{PID}/status"
        old = rec.live[key]
        assert f"{field}:\t" in old
        rec.live[key] = "".join(
            f"{field}:\t{value}\n" if line.startswith(f"{field}:") else line + "\n"
            for line in old.splitlines()
        )

    return edit


def _crt(check_id: str, what: str, change: Edit) -> Any:
    return mutation(check_id, what, change, setup=workload)


MUTATIONS = [
    _crt("HN-CRT-01", "privileged", container("HostConfig.Privileged", True)),
    _crt("HN-CRT-02", "cap-add SYS_ADMIN", container("HostConfig.CapAdd", ["SYS_ADMIN"])),
    _crt("HN-CRT-02", "CapEff has CAP_SYS_ADMIN", status("CapEff", "0000000000200000")),
    _crt("HN-CRT-02", "runtime keeps caps", probe("rootful", "capeff", "00000000a80425fb")),
    _crt("HN-CRT-03", "NoNewPrivs 0", status("NoNewPrivs", "0")),
    _crt("HN-CRT-03", "runtime ignores no-new-privileges", probe("rootful", "nonewprivs", "0")),
    _crt(
        "HN-CRT-04",
        "seccomp=unconfined",
        container("HostConfig.SecurityOpt", ["no-new-privileges", "seccomp=unconfined"]),
    ),
    _crt("HN-CRT-04", "Seccomp 0", status("Seccomp", "0")),
    _crt("HN-CRT-05", "writable rootfs", container("HostConfig.ReadonlyRootfs", False)),
    _crt("HN-CRT-05", "runtime ignores --read-only", probe("rootful", "rootfs_write", "allowed")),
    _crt("HN-CRT-06", "runs as root", container("Config.User", "0:0")),
    _crt("HN-CRT-07", "--pid host", container("HostConfig.PidMode", "host")),
    _crt(
        "HN-CRT-08",
        "mounts docker.sock",
        container(
            "Mounts",
            [{"Type": "bind", "Source": "/run/docker.sock", "Destination": "/var/run/docker.sock"}],
        ),
    ),
    _crt("HN-CRT-09", "no memory limit", container("HostConfig.Memory", 0)),
    _crt("HN-CRT-10", "AppArmor unconfined", container("AppArmorProfile", "unconfined")),
    _crt("HN-CRT-11", "/proc unmasked", container("HostConfig.MaskedPaths", [])),
    _crt("HN-CRT-11", "unsafe sysctl", container("HostConfig.Sysctls", {"kernel.msgmax": "1"})),
    _crt(
        "HN-CRT-12",
        "port on all addresses",
        container("HostConfig.PortBindings", {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}),
    ),
]
