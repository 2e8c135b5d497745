"""Per-container rules over `docker inspect`: pure, tested on recorded outputs.

`parse_inspect` reads the running containers (leaving out the verifier's own probes); each rule
takes one container and says what is wrong with it, or None when nothing is. The HN-CRT checks in
provision/verify/suite/check_containers.py apply the rules to both daemons' containers, and read
a container's main process through `status_fields`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Container = dict[str, Any]
PROBE_NAMES = frozenset({"/provision-probe", "/provision-probe-user"})
NET_BIND_SERVICE_BIT = 1 << 10


def parse_inspect(text: str) -> list[Container]:
    """`docker inspect` JSON of the running containers, without the verifier's own probes."""
    doc = json.loads(text or "[]")
    if not isinstance(doc, list):
        raise ValueError("docker-inspect did not return a JSON array")
    return [c for c in doc if c.get("Name") not in PROBE_NAMES]


def name(c: Container) -> str:
    return str(c.get("Name", "?")).lstrip("/") or str(c.get("Id", "?"))[:12]


def _hc(c: Container) -> dict[str, Any]:
    hc: dict[str, Any] = c.get("HostConfig") or {}
    return hc


def _secopts(c: Container) -> list[str]:
    return [str(o) for o in _hc(c).get("SecurityOpt") or []]


def privileged(c: Container) -> str | None:
    return "privileged" if _hc(c).get("Privileged") else None


def capabilities(c: Container) -> str | None:
    drop = {x.upper().removeprefix("CAP_") for x in _hc(c).get("CapDrop") or []}
    add = {x.upper().removeprefix("CAP_") for x in _hc(c).get("CapAdd") or []}
    problems = []
    if "ALL" not in drop:
        problems.append("does not drop ALL")
    if add - {"NET_BIND_SERVICE"}:
        problems.append(f"adds {','.join(sorted(add - {'NET_BIND_SERVICE'}))}")
    return "; ".join(problems) or None


def seccomp_unconfined(c: Container) -> str | None:
    bad = [o for o in _secopts(c) if o.replace(":", "=") == "seccomp=unconfined"]
    return "seccomp=unconfined" if bad else None


def read_only_rootfs(c: Container) -> str | None:
    return None if _hc(c).get("ReadonlyRootfs") else "writable root filesystem"


ROOT_USERS = ("", "0", "root")


def non_root(c: Container) -> str | None:
    user = str((c.get("Config") or {}).get("User") or "")
    return (
        f"runs as user {user or '(image default: root)'}"
        if user.split(":")[0] in ROOT_USERS
        else None
    )


def host_namespaces(c: Container) -> str | None:
    hc = _hc(c)
    shared = [
        key
        for key in ("NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode")
        if str(hc.get(key) or "") == "host"
    ]
    return f"shares the host's {', '.join(shared)}" if shared else None


SENSITIVE = ("/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr")


def sensitive_mounts(c: Container) -> str | None:
    bad = []
    for m in c.get("Mounts") or []:
        src = str(m.get("Source") or "").rstrip("/") or "/"
        if (
            src == "/"
            or any(src == s or src.startswith(s + "/") for s in SENSITIVE)
            or src.endswith("docker.sock")
        ):
            bad.append(src)
    return f"mounts {', '.join(bad)}" if bad else None


def resource_limits(c: Container) -> str | None:
    hc = _hc(c)
    missing = []
    if not hc.get("Memory"):
        missing.append("memory")
    if not (hc.get("CpuShares") or hc.get("NanoCpus") or hc.get("CpuQuota")):
        missing.append("cpu")
    if not hc.get("PidsLimit") or int(hc["PidsLimit"]) <= 0:
        missing.append("pids")
    return f"no {', '.join(missing)} limit" if missing else None


def apparmor(c: Container) -> str | None:
    profile = c.get("AppArmorProfile")
    return None if profile == "docker-default" else f"AppArmor profile {profile or 'none'}"


# Kubernetes' Pod Security "safe" sysctls (PSS baseline, v1.29): the only ones a container sets.
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)


def proc_and_sysctls(c: Container) -> str | None:
    """Docker's procMount: systempaths=unconfined unmasks /proc; sysctls only from the safe set."""
    problems = []
    unmasked = _hc(c).get("MaskedPaths") == []  # what systempaths=unconfined and --privileged do
    if unmasked or any(o.replace(":", "=") == "systempaths=unconfined" for o in _secopts(c)):
        problems.append("unmasked /proc (no MaskedPaths)")
    unsafe = sorted(set(_hc(c).get("Sysctls") or {}) - SAFE_SYSCTLS)
    if unsafe:
        problems.append(f"sets sysctls {', '.join(unsafe)}")
    return "; ".join(problems) or None


def open_port_bindings(c: Container) -> str | None:
    bad = []
    for port, bindings in (_hc(c).get("PortBindings") or {}).items():
        for b in bindings or []:
            if str(b.get("HostIp") or "") in ("", "0.0.0.0", "::"):
                bad.append(f"{b.get('HostPort')}->{port}")
    return f"publishes on all addresses: {', '.join(bad)}" if bad else None


def status_fields(text: str) -> dict[str, str]:
    """/proc/PID/status as a dict (`Seccomp:\t2` -> {"Seccomp": "2"})."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def violations(containers: list[Container], rule: Callable[[Container], str | None]) -> list[str]:
    return [f"{name(c)}: {problem}" for c in containers if (problem := rule(c)) is not None]
