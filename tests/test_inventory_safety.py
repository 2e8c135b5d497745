"""Issue #15, bad input: inventory values that were accepted and then did harm are refused with a
located error (exit 2): trailing newlines and control characters, hypervisor URIs that would
carry the seed unprotected, sysctl overrides that break the node's role, and YAML that makes the
loader do unbounded work."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from provision.baseline import hardening
from provision.cli.main import main
from provision.config import inventory, playbook, safety, settings
from provision.config.table import Kind, Setting
from provision.config.yamlsrc import Loc, Value
from provision.core.errors import ConfigError, Problem
from provision.core.model import DockerMode, Role
from tests.helpers import LOCAL

# A local inventory: nothing in it reaches libvirt or the network when rendered.
BASE = LOCAL.read_text().replace("/var/lib/provision", "/nonexistent/provision-state")
BASE = BASE.replace("playbooks: [../playbooks/post-boot.yaml]\n", "")
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<path>[^ :]+): (?P<msg>.+)$")


def _render(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """`provision render` of `text` in this process: the exit code and the stderr lines."""
    path = tmp_path / "inv.yaml"
    path.write_text(text)
    code = main(["render", "-i", str(path), "-o", str(tmp_path / "out")])
    return code, capsys.readouterr().err.splitlines()


def _problems(tmp_path: Path, text: str) -> list[Problem]:
    path = tmp_path / "inv.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        inventory.load(path)
    return exc.value.problems


def test_the_base_inventory_renders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _render(tmp_path, BASE, capsys)
    assert code == 0, err


# --- one line of text: the `$` of re.match let a trailing newline through -----------------------


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        # Rendered `AllowUsers ops` and a stray ` verifier` line into the sshd drop-in (issue #15).
        ("    name: ops\n", '    name: "ops\\n"\n', "defaults.admin.name"),
        # Wrote a label value over two lines of the domain's metadata.
        ("    env: local\n", '    env: "local\\nx"\n', "defaults.labels.env"),
        ("  vcpus: 1\n", '  vcpus: 1\n  workload_user: "app\\u2028"\n', "defaults.workload_user"),
        ("  vcpus: 1\n", '  vcpus: 1\n  sysctl: {vm.swappiness: "10\\n"}\n', "defaults.sysctl"),
        ("    pool_name: provision-local\n", '    pool_name: "p\\0"\n', "hypervisors.local"),
        ("name: local\n", 'name: "local\\n"\n', "name"),
        ("state_dir: ", 'state_dir: "/tmp/x\\ny"\nx: ', "state_dir"),
    ],
)
def test_issue15_trailing_newline_and_control_characters_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, path: str
) -> None:
    assert old in BASE
    code, err = _render(tmp_path, BASE.replace(old, new, 1), capsys)
    assert code == 2, err
    located = [m for m in map(LINE.match, err[:-1]) if m]
    assert len(located) == len(err) - 1, err  # every line is `file:line:col: key.path: message`
    assert any(m["path"].startswith(path) for m in located), err
    assert not (tmp_path / "out").exists()


def test_admin_name_with_a_newline_names_the_character(tmp_path: Path) -> None:
    problems = _problems(tmp_path, BASE.replace("    name: ops\n", '    name: "ops\\n"\n'))
    assert [(p.line, p.path) for p in problems] == [(31, "defaults.admin.name")]
    assert "control character '\\n'" in problems[0].message


def test_every_single_line_string_setting_refuses_a_newline() -> None:
    """Every STR and LIST row of every table, inventory and playbooks: only a put's content is
    text of many lines."""
    tables = (
        settings.TOP,
        settings.IMAGE,
        settings.HYPERVISOR,
        settings.NETWORK,
        settings.ADMIN,
        settings.NODE,
        settings.KUBERNETES,
        settings.ALLOW_RULE,
        playbook.PUT,
        playbook.STEP,
    )
    rows = [r for t in tables for r in t if r.kind in (Kind.STR, Kind.LIST) and r.parse is None]
    multiline = [r.name for r in rows if r.multiline]
    assert multiline == ["content"]
    loc = Loc("f", 1, 1)
    for row in rows:
        if row.multiline:
            continue
        item = Value("a\n", loc)
        value = Value([item], loc) if row.kind is Kind.LIST else item
        problems: list[Problem] = []
        assert row.check(value, row.name, problems) is None, row.name
        assert problems, row.name


def test_a_pattern_must_match_the_whole_value() -> None:
    row = Setting("x", Kind.STR, "", pattern=r"^[a-z]+$", multiline=True)
    problems: list[Problem] = []
    assert row.check(Value("abc\n", Loc("f", 1, 1)), "x", problems) is None
    assert problems and "'abc\\n' is not a valid x" in problems[0].message
    assert row.check(Value("abc", Loc("f", 1, 1)), "x", []) == "abc"


def test_a_map_key_with_a_newline_is_refused(tmp_path: Path) -> None:
    problems = _problems(tmp_path, BASE.replace("    env: local\n", '    "env\\n": local\n'))
    assert [p.path for p in problems] == ["defaults.labels.'env\\n'"]


def test_a_put_content_may_span_lines(tmp_path: Path) -> None:
    path = tmp_path / "pb.yaml"
    path.write_text('steps:\n  - name: motd\n    put: {path: /etc/motd, content: "a\\nb\\n"}\n')
    (step,) = playbook.load(path).steps
    assert isinstance(step.action, playbook.PutAction) and step.action.content == "a\nb\n"


# --- hypervisor URIs: the seed (the node's private host key) travels over them ---------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("qemu+tcp://kvm1/system", "qemu+tcp:// is neither authenticated nor encrypted"),
        ("qemu+tls://kvm1/system?no_verify=1", "check of the hypervisor's TLS certificate"),
        ("qemu://kvm1/system?no_verify=1", "check of the hypervisor's TLS certificate"),
        ("qemu://kvm1/system?NO_Verify=yes", "TLS certificate"),
        ("qemu+tls://kvm1/system?no%5Fverify=1", "TLS certificate"),
        ("qemu+tls://kvm1/system?pkipath=/x;no_verify=1", "TLS certificate"),
        ("qemu+ssh://root@kvm1/system?no_verify=1", "check of the hypervisor's SSH host key"),
        ("qemu+libssh://root@kvm1/system?x=1&No_Verify=2", "SSH host key"),
        ("qemu+ext:///system?command=/bin/x&no_verify=1", "hypervisor's identity"),
        ("qemu+ssh://root@kvm1:99999/system", "is not a valid URI"),
        ("qemu+ssh://[::1/system", "is not a valid URI"),
    ],
)
def test_issue15_unprotected_hypervisor_uris_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], uri: str, expected: str
) -> None:
    text = BASE.replace("uri: qemu:///system", f"uri: {uri}\n    known_hosts: /dev/null")
    code, err = _render(tmp_path, text, capsys)
    assert code == 2, err
    (line, _summary) = err
    m = LINE.match(line)
    assert m and m["line"] == "13" and m["path"] == "hypervisors.local.uri", line
    assert expected in m["msg"], line
    if "tcp" in uri or "tls" in uri or "qemu://" in uri:
        assert "use qemu+ssh:// with known_hosts" in m["msg"]  # and what to use instead


@pytest.mark.parametrize(
    "uri",
    [
        "qemu:///system",
        "qemu:///session",
        "qemu+unix:///system",
        "test:///default",
        "qemu+tls://kvm1/system",
        "qemu://kvm1/system?no_verify=0",
        "qemu+ssh://root@kvm1/system?no_verify=0&keyfile=/k",
        "qemu+libssh://root@kvm1:2222/system?sshauth=privkey",
    ],
)
def test_authenticated_and_local_uris_stay_valid(uri: str) -> None:
    assert safety.uri_problems(uri) == []


# --- sysctl overrides that break what the node runs ----------------------------------------------


def _with(docker: str, sysctl: str, roles: str = "") -> str:
    text = BASE.replace("  docker: rootful\n", f"  docker: {docker}\n  sysctl: {{{sysctl}}}\n")
    if roles:
        text = text.replace("    ssh_port: 10022\n", f"    ssh_port: 10022\n    roles: [{roles}]\n")
        text += "kubernetes: {install: prerequisites}\n"
    return text


@pytest.mark.parametrize(
    ("docker", "roles", "sysctl", "expected"),
    [
        (
            "rootless",
            "",
            "user.max_user_namespaces: 0",
            "nodes.node1.sysctl.user.max_user_namespaces: 0 would break rootless Docker "
            "(needs user.max_user_namespaces >= 1, HN-SYS-07)",
        ),
        (
            "rootless",
            "",
            "kernel.unprivileged_userns_clone: 0",
            "nodes.node1.sysctl.kernel.unprivileged_userns_clone: 0 would break rootless Docker "
            "(needs kernel.unprivileged_userns_clone = 1, HN-SYS-08)",
        ),
        (
            "rootful",
            "",
            "user.max_user_namespaces: 0",
            "0 would break rootless Docker and the system Docker daemon's userns-remap",
        ),
        (
            "rootful",
            "",
            "net.ipv4.ip_forward: 0",
            "nodes.node1.sysctl.net.ipv4.ip_forward: 0 would break the system Docker daemon's "
            "bridge network (needs net.ipv4.ip_forward = 1, HN-SYS-09)",
        ),
        ("none", "k8s-control-plane", "net.ipv4.ip_forward: 0", "would break Kubernetes"),
        (
            "none",
            "k8s-control-plane",
            "net.bridge.bridge-nf-call-iptables: 0",
            "would break Kubernetes (needs net.bridge.bridge-nf-call-iptables = 1",
        ),
        ("none", "k8s-control-plane", "net.ipv6.conf.all.forwarding: 0", "Kubernetes"),
        ("none", "k8s-control-plane", "kernel.panic: 0", "the kubelet (protectKernelDefaults)"),
        ("none", "k8s-control-plane", "vm.overcommit_memory: 0", "needs vm.overcommit_memory = 1"),
        ("rootless", "", "kernel.unprivileged_userns_clone: yes", "needs"),
        ("rootless", "", "kernel.unprivileged_userns_clone: '1_0'", "needs"),
    ],
)
def test_issue15_sysctl_overrides_that_break_a_role_are_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    docker: str,
    roles: str,
    sysctl: str,
    expected: str,
) -> None:
    code, err = _render(tmp_path, _with(docker, sysctl, roles), capsys)
    assert code == 2, err
    m = LINE.match(err[0])
    assert m and expected in f"{m['path']}: {m['msg']}", err
    assert m["line"] == "30", err  # the override's own line, in defaults


@pytest.mark.parametrize(
    ("docker", "roles", "sysctl"),
    [
        ("rootless", "", "net.ipv4.ip_forward: 0"),  # rootless forwards inside RootlessKit
        ("rootless", "", "user.max_user_namespaces: 65536"),
        ("rootful", "", "net.ipv4.ip_forward: '1'"),
        ("none", "", "user.max_user_namespaces: 0"),
        ("none", "", "kernel.unprivileged_userns_clone: 0"),
        ("none", "k8s-control-plane", "vm.swappiness: 10"),
        # Only unprivileged users need it, and a Kubernetes node without Docker has none.
        ("none", "k8s-control-plane", "kernel.unprivileged_userns_clone: 0"),
    ],
)
def test_sysctl_overrides_that_keep_the_role_working_are_accepted(
    tmp_path: Path, docker: str, roles: str, sysctl: str
) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text(_with(docker, sysctl, roles))
    inventory.load(path)


def test_requirements_come_from_the_role_rows_of_the_hardening_set() -> None:
    """One source: every role row whose features the node runs is a requirement, its own value
    passes, and the value the key takes on a node without Docker or Kubernetes (the hardening
    default) is refused. Every requirement is also refused by the loader (the parametrized
    cases above cover each key)."""
    node = inventory.load(LOCAL).nodes[0]
    bare = dataclasses.replace(node, docker=DockerMode.NONE, roles=())
    plain = dict(hardening.sysctls(bare))
    assert safety.requirements(bare) == ()
    for docker in DockerMode:
        for roles in ((), (Role.K8S_WORKER,), (Role.K8S_CONTROL_PLANE,)):
            shaped = dataclasses.replace(node, docker=docker, roles=roles)
            rows = hardening.sysctl_rules(shaped)
            needed = [r.name for r in rows if any(f.present(shaped) for f in r.needed_by)]
            needs = safety.requirements(shaped)
            assert [n.key for n in needs] == needed
            for need in needs:
                assert need.allows(need.value) and need.features, need
                if need.key in plain and plain[need.key] != need.value:
                    assert not need.allows(plain[need.key]), need


# --- YAML that makes the loader work without bound --------------------------------------------


def _laughs(levels: int) -> str:
    text = 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for i in range(1, levels):
        text += f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n"
    return text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_laughs(10), "once aliases are expanded (refused)"),  # 9**10 values if expanded
        ("a: &x [*x]\n", "too deep once aliases are expanded"),
        ("a: " + "[" * 10_000 + "]" * 10_000 + "\n", "nested deeper than 64 levels"),
        ("a: " + "{b: " * 1000 + "1" + "}" * 1000 + "\n", "nested deeper than 64 levels"),
        ("name: t\nx: a\x00b\n", "character '\\x00' is not allowed"),
        ("name: " + "9" * 5000 + "\n", "invalid value: Exceeds the limit (4300 digits)"),
        ("name: !foo x\n", "could not determine a constructor for the tag '!foo'"),
        # Found by tests/test_inventory_fuzz.py: PyYAML's constructors raised KeyError,
        # AttributeError and IndexError on explicitly tagged text of the wrong shape.
        ("name: !!bool maybe\n", "invalid value: 'maybe' is not a bool"),
        ("name: !!timestamp x\n", "invalid value: 'x' is not a timestamp"),
        ("name: !!int ''\n", "invalid value: '' is not a int"),
        ("name: !!float ''\n", "invalid value: '' is not a float"),
    ],
)
def test_issue15_yaml_bombs_and_deep_nesting_are_refused_not_expanded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    code, err = _render(tmp_path, text, capsys)
    assert code == 2, err
    assert any(expected in line for line in err), err
    assert all(re.match(r"^[^:]+:\d+:\d+: \S", line) for line in err[:-1]), err


def test_non_utf8_is_located_at_the_first_bad_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "inv.yaml"
    path.write_bytes(b"name: t\nimage:\n  name: caf\xe9\n")
    code = main(["render", "-i", str(path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err[0] == f"{path}:3:12: not UTF-8 text: byte 0xe9 cannot start a character here"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/x/" + "a" * 256, "a path component of 256 bytes"),
        ("/x" * 2100, "a path of 4200 bytes"),
    ],
)
def test_a_path_linux_cannot_open_is_a_located_error_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str, expected: str
) -> None:
    """Found by tests/test_inventory_fuzz.py: render raised ENAMETOOLONG out of the key store."""
    text = BASE.replace("/nonexistent/provision-state", path, 1)
    code, err = _render(tmp_path, text, capsys)
    assert code == 2, err
    m = LINE.match(err[0])
    assert m and m["path"] == "state_dir" and expected in m["msg"], err


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("state_dir: /nonexistent/provision-state", "state_dir: ~nouser-pv/state", "state_dir"),
        (
            "    managed_key: true ",
            "    identity_file: ~nouser-pv/k\n    managed_key: true ",
            "defaults.admin.identity_file",
        ),
        ("nodes:\n", "playbooks: [~nouser-pv/pb.yaml]\nnodes:\n", "playbooks[0]"),
    ],
)
def test_a_home_of_no_user_is_a_located_error_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, path: str
) -> None:
    """Found by tests/test_inventory_fuzz.py: pathlib raised RuntimeError out of the loader."""
    assert old in BASE
    code, err = _render(tmp_path, BASE.replace(old, new, 1), capsys)
    assert code == 2, err
    m = LINE.match(err[0])
    assert m and m["path"] == path and "no user 'nouser-pv' on this machine" in m["msg"], err
