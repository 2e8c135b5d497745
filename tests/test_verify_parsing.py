"""The suite's pure parsers and per-container rules, on outputs recorded from a real node.

No node: the inputs are what the facts helper, /proc and `docker inspect` printed on a
Debian 12 rootful+rootless node (docker.io 20.10.24), trimmed where noted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from provision.verify import containers as crt
from provision.verify.parse import (
    Stat,
    audit_watches,
    environment_path,
    flag_keys,
    install_commands,
    k8s_expectation,
    listening_ports,
    mount_of,
    parse_execstart,
    parse_kv,
    parse_mounts,
    parse_stat,
    parse_world_writable,
    probe_failures,
    subid_range,
    sudo_defaults,
    unit_values,
    watched,
)
from provision.verify.plugin import FactsError, sysctl_evidence

DATA = Path(__file__).parent / "data"

# --- stat and find ---------------------------------------------------------------------------


def test_parse_stat_reads_owner_group_and_octal_mode() -> None:
    out = parse_stat("/run/user/1001/docker.sock app:UNKNOWN 1660\n/etc/docker root:root 755\n")
    assert out["/run/user/1001/docker.sock"] == Stat(
        "/run/user/1001/docker.sock", "app", "UNKNOWN", 0o1660
    )
    assert out["/etc/docker"].mode == 0o755


def test_parse_stat_reads_numeric_ids_the_same_way() -> None:
    st = parse_stat("/var/lib/docker/296608.296608 0:296608 710\n")["/var/lib/docker/296608.296608"]
    assert (st.owner, st.group, st.mode) == ("0", "296608", 0o710)


@pytest.mark.parametrize(
    "mode,allowed,excess",
    [(0o644, 0o644, 0), (0o600, 0o644, 0), (0o664, 0o644, 0o020), (0o4755, 0o755, 0o4000)],
)
def test_stat_excess_is_the_bits_beyond_the_allowed_mode(
    mode: int, allowed: int, excess: int
) -> None:
    assert Stat("/p", "root", "root", mode).excess(allowed) == excess


def test_world_writable_lines_split_into_dirs_and_files() -> None:
    dirs, files = parse_world_writable("dir-nosticky /srv/drop\nfile /etc/oops\nfile /var/x y\n")
    assert dirs == ["/srv/drop"]
    assert files == ["/etc/oops", "/var/x y"]


def test_k8s_expectation_by_kind_of_file() -> None:
    assert k8s_expectation("/etc/kubernetes/pki/ca.key") == 0o600
    assert k8s_expectation("/etc/kubernetes/pki/etcd/ca.crt") == 0o644
    assert k8s_expectation("/etc/kubernetes/manifests/etcd.yaml") == 0o600
    assert k8s_expectation("/etc/kubernetes/pki") is None


# --- mounts and modules ----------------------------------------------------------------------

PROC_MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
udev /dev devtmpfs rw,nosuid,relatime,size=743364k,nr_inodes=185841,mode=755,inode64 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev,noexec,inode64 0 0
tmpfs /tmp tmpfs rw,nosuid,nodev,relatime,size=524288k,inode64 0 0
tmpfs /tmp tmpfs rw,nosuid,nodev,noexec,relatime,size=524288k,inode64 0 0
nfs:/export /srv/my\\040data nfs4 rw,relatime 0 0
"""


def test_parse_mounts_last_mount_wins_and_escapes_are_decoded() -> None:
    m = parse_mounts(PROC_MOUNTS)
    assert "noexec" in m["/tmp"].options  # the remount on top
    assert m["/dev"].fstype == "devtmpfs" and "noexec" not in m["/dev"].options
    assert m["/srv/my data"].fstype == "nfs4"


def test_mount_of_picks_the_longest_mount_point_prefix() -> None:
    m = parse_mounts(PROC_MOUNTS)
    assert mount_of("/home/app/.local/share/docker", m).target == "/"
    assert mount_of("/srv/my data/docker", m).fstype == "nfs4"
    assert mount_of("/tmpfoo", m).target == "/"  # a prefix of the name is not a parent


def test_install_commands_from_modprobe_dry_run() -> None:
    assert install_commands("install /bin/false \n") == ["/bin/false"]
    assert install_commands("insmod /lib/modules/6.1.0/kernel/fs/udf/udf.ko \n") == []


# --- rootless --------------------------------------------------------------------------------

ROOTLESS_PROBE = """\
container_uid=0
host_uid=1001
seccomp=2
capeff=0000000000000000
nonewprivs=1
rootfs_write=denied
host_uid_user1000=166535
subuid_start=165536
user_uid=1001
"""


def test_parse_kv_reads_probe_output() -> None:
    p = parse_kv(ROOTLESS_PROBE + "not a pair\n")
    assert p["host_uid_user1000"] == "166535"
    assert p["rootfs_write"] == "denied"
    assert "not a pair" not in p


def test_rootless_probe_as_recorded_is_clean() -> None:
    assert probe_failures(parse_kv(ROOTLESS_PROBE)) == []


@pytest.mark.parametrize(
    "line,finding",
    [
        ("host_uid=0", "container root is host uid 0"),
        ("host_uid_user1000=1000", "container uid 1000 is host uid 1000"),
        ("container_uid=1001", "id -u in the container is 1001"),
    ],
)
def test_rootless_probe_flags_a_broken_mapping(line: str, finding: str) -> None:
    bad = probe_failures(parse_kv(ROOTLESS_PROBE + line + "\n"))
    assert any(finding in b for b in bad), bad


UNIT = """\
[Service]
Environment=PATH=/usr/share/docker.io/contrib:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
# ExecStart=/usr/bin/dockerd-rootless.sh
ExecStart=/usr/share/docker.io/contrib/dockerd-rootless.sh
"""


def test_unit_values_skip_comments() -> None:
    assert unit_values(UNIT, "ExecStart") == ["/usr/share/docker.io/contrib/dockerd-rootless.sh"]


def test_environment_path_of_a_unit() -> None:
    assert "/usr/sbin" in environment_path(UNIT)
    assert environment_path('Environment="PATH=/a:/b" FOO=1\n') == ["/a", "/b"]


# --- rootful daemon --------------------------------------------------------------------------

EXECSTART = (
    "{ path=/usr/sbin/dockerd ; argv[]=/usr/sbin/dockerd -H fd:// "
    "--containerd=/run/containerd/containerd.sock ; ignore_errors=no ; start_time=[n/a] ; "
    "stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }"
)


def test_execstart_argv_and_the_daemon_json_keys_its_flags_set() -> None:
    argv = parse_execstart(EXECSTART)[0]
    assert argv[:3] == ["/usr/sbin/dockerd", "-H", "fd://"]
    assert flag_keys(argv) == {"hosts", "containerd"}


AUDITCTL = """\
-w /etc/docker -p wa -k docker
-w /usr/sbin/dockerd -p wa -k docker
-a always,exit -F arch=b64 -S mount,umount2 -F auid>=1000 -F auid!=-1 -F key=mounts
-a always,exit -F dir=/run/containerd/ -F perm=wa -F key=docker
"""


def test_audit_watches_cover_paths_and_their_contents() -> None:
    w = audit_watches(AUDITCTL)
    assert watched("/etc/docker/daemon.json", w)
    assert watched("/run/containerd/containerd.sock", w)
    assert not watched("/usr/sbin/runc", w)
    assert not watched("/etc/dockerfoo", w)


def test_listening_ports_from_ss() -> None:
    ss = "LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\nLISTEN 0 4096 [::]:2375 [::]:*\n"
    assert listening_ports(ss) == {22, 2375}


def test_subid_range_of_a_user() -> None:
    text = "app:165536:65536\ndockremap:296608:65536\n"
    assert subid_range(text, "dockremap") == (296608, 65536)
    assert subid_range(text, "nobody") is None


# --- containers (docker inspect recorded on a rootful node) ---------------------------------


@pytest.fixture(scope="module")
def inspected() -> dict[str, Any]:
    containers = crt.parse_inspect((DATA / "verify-docker-inspect.json").read_text())
    return {crt.name(c): c for c in containers}


RULES = [
    crt.privileged,
    crt.capabilities,
    crt.seccomp_unconfined,
    crt.read_only_rootfs,
    crt.non_root,
    crt.host_namespaces,
    crt.sensitive_mounts,
    crt.resource_limits,
    crt.apparmor,
    crt.proc_and_sysctls,
    crt.open_port_bindings,
]


@pytest.mark.parametrize("rule", RULES, ids=[r.__name__ for r in RULES])
def test_hardened_container_passes_every_rule(inspected: dict[str, Any], rule: Any) -> None:
    """`good`: --read-only --cap-drop ALL --cap-add NET_BIND_SERVICE no-new-privileges
    --user 1000:1000 --memory --cpus --pids-limit -p 127.0.0.1:8080:80."""
    assert rule(inspected["good"]) is None


@pytest.mark.parametrize("rule", RULES, ids=[r.__name__ for r in RULES])
def test_careless_container_fails_every_rule(inspected: dict[str, Any], rule: Any) -> None:
    """`bad`: --privileged --network host --pid host --userns host -v /etc:/host-etc
    seccomp=unconfined systempaths=unconfined --sysctl kernel.msgmax -p 8081:80."""
    assert rule(inspected["bad"]) is not None


def test_container_findings_name_the_container(inspected: dict[str, Any]) -> None:
    found = crt.violations(list(inspected.values()), crt.host_namespaces)
    assert found == ["bad: shares the host's NetworkMode, PidMode, UsernsMode"]


def test_probe_containers_are_not_workloads() -> None:
    text = json.dumps([{"Name": "/provision-probe"}, {"Name": "/web"}])
    assert [crt.name(c) for c in crt.parse_inspect(text)] == ["web"]
    assert crt.parse_inspect("[]") == []


def test_proc_status_fields() -> None:
    status = "Name:\tbusybox\nNoNewPrivs:\t1\nSeccomp:\t2\nCapEff:\t0000000000000400\n"
    fields = crt.status_fields(status)
    assert fields["Seccomp"] == "2"
    assert int(fields["CapEff"], 16) == crt.NET_BIND_SERVICE_BIT


SUDO_L = """Matching Defaults entries for verifier on node1:
    env_reset, mail_badpass,
    secure_path=/usr/local/sbin\\:/usr/local/bin\\:/usr/sbin\\:/usr/bin\\:/sbin\\:/bin, use_pty,
    logfile=/var/log/sudo.log, log_input\\, quoted

User verifier may run the following commands on node1:
    (root) NOPASSWD: /usr/local/libexec/provision/verify-facts
"""


def test_sudo_defaults_are_judged_entry_by_entry() -> None:
    d = sudo_defaults(SUDO_L)
    assert d is not None
    assert d["use_pty"] is True and d["logfile"] == "/var/log/sudo.log"
    assert d["secure_path"].startswith("/usr/local/sbin\\:")  # type: ignore[union-attr]
    assert "log_input\\, quoted" in d  # an escaped comma does not split


def test_negated_sudo_defaults_do_not_pass_for_the_setting_they_name() -> None:
    """Issue #13: `!use_pty` and `!logfile` contain the words a substring match looked for."""
    negated = SUDO_L.replace("logfile=/var/log/sudo.log", "logfile=/var/log/sudo.log, !use_pty")
    negated = negated.replace("env_reset,", "env_reset, !logfile,")  # before: the later one wins
    d = sudo_defaults(negated)
    assert d is not None and d["use_pty"] is False and d["logfile"] == "/var/log/sudo.log"
    d = sudo_defaults(SUDO_L.replace("logfile=/var/log/sudo.log,", "logfile=/x, !logfile,"))
    assert d is not None and d["logfile"] is False


def test_a_listing_without_defaults_is_no_evidence() -> None:
    assert sudo_defaults("User verifier may run the following commands on n1:\n") is None


def test_an_empty_sysctl_answer_is_no_evidence_not_not_applicable() -> None:
    """Issue #13: an empty `sysctl -a` made every HN-SYS check N/A; now it is an ERROR."""
    with pytest.raises(FactsError, match="no evidence"):
        sysctl_evidence("")
    with pytest.raises(FactsError):
        sysctl_evidence("sysctl: permission denied on key 'fs.protected_regular'\n")
    values = sysctl_evidence("kernel.ostype = Linux\nkernel.kptr_restrict = 2\n")
    assert values["kernel.kptr_restrict"] == "2"
