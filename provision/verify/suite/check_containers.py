"""A.8 Container runtime defaults: the running containers of both daemons, as Docker runs them.

Each check reads `docker inspect` of every running container (the helper's `docker-inspect`
verb, root, per daemon) and, where the kernel says more than the config, the container's main
process in /proc (its Seccomp, CapEff and NoNewPrivs lines). The helper's own probe containers
are not workloads and are left out. No running container is no evidence: the check is skipped
as not applicable, never passed (catalogue C.6). The probe (`docker-probe`) separately proves
that each runtime enforces what it is asked for (no capabilities, no new privileges, a
read-only root filesystem): a runtime that does not is a FAIL of the id, but a probe that
shows it does is no evidence about workloads, so without workloads the id stays N/A and says
what the probe showed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from testinfra.host import Host

from provision.verify.checks import Inconclusive, check
from provision.verify.containers import (
    NET_BIND_SERVICE_BIT,
    Container,
    apparmor,
    capabilities,
    host_namespaces,
    name,
    non_root,
    open_port_bindings,
    parse_inspect,
    privileged,
    proc_and_sysctls,
    read_only_rootfs,
    resource_limits,
    seccomp_unconfined,
    sensitive_mounts,
    status_fields,
    violations,
)
from provision.verify.parse import parse_kv
from provision.verify.plugin import Facts, FactsError, Profile

DAEMONS = ("rootful", "rootless")
FIX = (
    "Re-create the container with the setting (docker run / compose file of the workload); the "
    "workload owner decides, the node only reports."
)

# --- node helpers ----------------------------------------------------------------------------


def running(facts: Facts, node: Profile, daemon: str) -> list[Container]:
    """The daemon's running workload containers; skips (N/A) when there are none."""
    containers = workloads(facts, node, daemon)
    if not containers:
        pytest.skip(f"N/A: no containers running on the {daemon} daemon")
    return containers


def workloads(facts: Facts, node: Profile, daemon: str) -> list[Container]:
    if daemon == "rootful" and "rootful" not in node.roles:
        pytest.skip("N/A: no system Docker daemon on this node")
    try:
        # `docker-inspect rootful|rootless` (root): `docker inspect` of every running container.
        text = facts("docker-inspect", daemon)
    except FactsError as exc:
        if "unknown verb" in str(exc):
            raise Inconclusive(
                "the node's facts helper has no docker-inspect verb: containers cannot be read"
            ) from None
        raise
    return parse_inspect(text)


def main_status(host: Host, c: Container) -> dict[str, str]:
    pid = int((c.get("State") or {}).get("Pid") or 0)
    f = host.file(f"/proc/{pid}/status")
    if pid <= 0 or not f.exists:
        raise Inconclusive(f"{name(c)}: its main process (pid {pid}) is not visible")
    return status_fields(f.content_string)


def expect_none(containers: list[Container], rule: Callable[[Container], str | None]) -> None:
    bad = violations(containers, rule)
    assert not bad, "; ".join(bad)


def runtime_enforces(facts: Facts, node: Profile, daemon: str, key: str, want: str) -> None:
    """The daemon's probe asked for the flag itself, so it proves that the runtime enforces it,
    not that any workload runs with it: FAIL when the runtime does not; with no workload
    running the id stays N/A (saying what the probe showed), and with workloads the other
    tests of the id judge them."""
    if daemon == "rootful" and "rootful" not in node.roles:
        pytest.skip("N/A: no system Docker daemon on this node")
    got = parse_kv(facts("docker-probe", daemon)).get(key)
    assert got == want, f"the {daemon} runtime does not enforce it: its probe has {key}={got}"
    if not workloads(facts, node, daemon):
        pytest.skip(
            f"N/A: no workload containers on the {daemon} daemon (the runtime enforces the "
            f"flag when asked: its probe has {key}={got})"
        )


# --- HN-CRT-01..12 ---------------------------------------------------------------------------


@check(
    "HN-CRT-01",
    "Ensure no container runs privileged",
    level="L1",
    severity="crit",
    roles="rootless rootful",
    remediation=FIX + " Never --privileged.",
)
@pytest.mark.parametrize("daemon", DAEMONS)
def test_not_privileged(facts: Facts, node: Profile, daemon: str) -> None:
    expect_none(running(facts, node, daemon), privileged)


CRT_02 = check(
    "HN-CRT-02",
    "Ensure containers drop ALL capabilities and add at most NET_BIND_SERVICE",
    level="L1",
    severity="high",
    roles="rootless rootful",
    remediation=FIX + " --cap-drop ALL [--cap-add NET_BIND_SERVICE].",
)


@CRT_02
@pytest.mark.parametrize("daemon", DAEMONS)
def test_capabilities_config(facts: Facts, node: Profile, daemon: str) -> None:
    expect_none(running(facts, node, daemon), capabilities)


@CRT_02
@pytest.mark.parametrize("daemon", DAEMONS)
def test_capabilities_effective(host: Host, facts: Facts, node: Profile, daemon: str) -> None:
    bad = []
    for c in running(facts, node, daemon):
        capeff = int(main_status(host, c).get("CapEff", "0"), 16)
        if capeff & ~NET_BIND_SERVICE_BIT:
            bad.append(f"{name(c)}: CapEff {capeff:016x}")
    assert not bad, "; ".join(bad)


@CRT_02
@pytest.mark.parametrize("daemon", DAEMONS)
def test_runtime_drops_capabilities(facts: Facts, node: Profile, daemon: str) -> None:
    runtime_enforces(facts, node, daemon, "capeff", "0000000000000000")  # --cap-drop ALL


CRT_03 = check(
    "HN-CRT-03",
    "Ensure containers cannot gain privileges (no-new-privileges)",
    level="L1",
    severity="high",
    roles="rootless rootful",
    remediation=FIX + " --security-opt no-new-privileges (rootful: daemon default, HN-DKR-04).",
)


@CRT_03
@pytest.mark.parametrize("daemon", DAEMONS)
def test_no_new_privileges_effective(host: Host, facts: Facts, node: Profile, daemon: str) -> None:
    bad = [
        name(c)
        for c in running(facts, node, daemon)
        if main_status(host, c).get("NoNewPrivs") != "1"
    ]
    assert not bad, f"NoNewPrivs is not set in: {', '.join(bad)}"


@CRT_03
@pytest.mark.parametrize("daemon", DAEMONS)
def test_runtime_sets_no_new_privileges(facts: Facts, node: Profile, daemon: str) -> None:
    runtime_enforces(facts, node, daemon, "nonewprivs", "1")


CRT_04 = check(
    "HN-CRT-04",
    "Ensure containers run under a seccomp filter, never unconfined",
    level="L1",
    severity="high",
    roles="rootless rootful",
    remediation=FIX + " Remove --security-opt seccomp=unconfined.",
)


@CRT_04
@pytest.mark.parametrize("daemon", DAEMONS)
def test_seccomp_not_unconfined(facts: Facts, node: Profile, daemon: str) -> None:
    expect_none(running(facts, node, daemon), seccomp_unconfined)


@CRT_04
@pytest.mark.parametrize("daemon", DAEMONS)
def test_seccomp_effective(host: Host, facts: Facts, node: Profile, daemon: str) -> None:
    bad = [
        f"{name(c)}: Seccomp {mode}"
        for c in running(facts, node, daemon)
        if (mode := main_status(host, c).get("Seccomp")) != "2"
    ]
    assert not bad, "; ".join(bad)


CRT_05 = check(
    "HN-CRT-05",
    "Ensure containers have a read-only root filesystem",
    level="L1",
    severity="med",
    roles="rootless rootful",
    remediation=FIX + " --read-only (with tmpfs or volumes for what must be written).",
)


@CRT_05
@pytest.mark.parametrize("daemon", DAEMONS)
def test_read_only_rootfs(facts: Facts, node: Profile, daemon: str) -> None:
    expect_none(running(facts, node, daemon), read_only_rootfs)


@CRT_05
@pytest.mark.parametrize("daemon", DAEMONS)
def test_runtime_makes_rootfs_read_only(facts: Facts, node: Profile, daemon: str) -> None:
    runtime_enforces(facts, node, daemon, "rootfs_write", "denied")  # --read-only


@check(
    "HN-CRT-06",
    "Ensure containers run as a non-root user",
    level="L1",
    severity="high",
    roles="rootless rootful",
    remediation=FIX + " USER in the image or --user UID:GID (not 0).",
)
@pytest.mark.parametrize("daemon", DAEMONS)
def test_non_root(facts: Facts, node: Profile, daemon: str) -> None:
    expect_none(running(facts, node, daemon), non_root)


@check(
    "HN-CRT-07",
    "Ensure containers share no host namespace",
    level="L1",
    severity="high",
    roles="rootless rootful",
    remediation=FIX + " No --network/--pid/--ipc/--uts/--userns host.",
)
@pytest.mark.parametrize("daemon", DAEMONS)
def test_no_host_namespaces(facts: Facts, node: Profile, daemon: str) -> None:
    expect_none(running(facts, node, daemon), host_namespaces)


@check(
    "HN-CRT-08",
    "Ensure containers mount no sensitive host path and no docker.sock",
    level="L1",
    severity="crit",
    roles="rootless rootful",
    remediation=FIX + " Use named volumes; never bind /, /etc, /proc, /sys, ... or docker.sock.",
)
@pytest.mark.parametrize("daemon", DAEMONS)
def test_no_sensitive_mounts(facts: Facts, node: Profile, daemon: str) -> None:
    expect_none(running(facts, node, daemon), sensitive_mounts)


@check(
    "HN-CRT-09",
    "Ensure containers have memory, CPU and pids limits",
    level="L1",
    severity="med",
    roles="rootless rootful",
    remediation=FIX + " --memory, --cpus or --cpu-shares, --pids-limit (rootless: HN-DKRL-07).",
)
@pytest.mark.parametrize("daemon", DAEMONS)
def test_resource_limits(facts: Facts, node: Profile, daemon: str) -> None:
    expect_none(running(facts, node, daemon), resource_limits)


@check(
    "HN-CRT-10",
    "Ensure rootful containers run under the docker-default AppArmor profile",
    level="L1",
    severity="med",
    roles="rootful",
    remediation=FIX + " Remove --security-opt apparmor=unconfined.",
)
def test_apparmor_profile(facts: Facts, node: Profile) -> None:
    # Rootless Docker cannot apply AppArmor at all (Docker rootless "Known limitations").
    expect_none(running(facts, node, "rootful"), apparmor)


@check(
    "HN-CRT-11",
    "Ensure /proc stays masked and containers set only safe namespaced sysctls",
    level="L1",
    severity="med",
    roles="rootless rootful",
    remediation=FIX + " Remove --security-opt systempaths=unconfined and unsafe --sysctl.",
)
@pytest.mark.parametrize("daemon", DAEMONS)
def test_proc_and_sysctls(facts: Facts, node: Profile, daemon: str) -> None:
    expect_none(running(facts, node, daemon), proc_and_sysctls)


@check(
    "HN-CRT-12",
    "Ensure published ports are bound to a specific address",
    level="L1",
    severity="med",
    roles="rootless rootful",
    remediation=FIX + " -p 127.0.0.1:HOST:CONTAINER (or a specific interface address).",
)
@pytest.mark.parametrize("daemon", DAEMONS)
def test_port_bindings(facts: Facts, node: Profile, daemon: str) -> None:
    expect_none(running(facts, node, daemon), open_port_bindings)
