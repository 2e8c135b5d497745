"""Loading inventories: merging, typed results, and located errors for every kind of mistake."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml

from provision.config import inventory, settings
from provision.core.errors import ConfigError
from provision.core.model import DockerMode, NetworkMode, Role, Waiver
from tests.helpers import LOCAL, OSLO, load_text

VALID = """\
name: t
state_dir: /tmp/provision-test-state
hypervisors:
  h1:
    uri: qemu:///system
    pool_path: /var/lib/provision/pool
networks:
  lo:
    mode: user
  br:
    mode: bridge
    bridge: br0
    cidr: 10.9.0.0/24
    gateway: 10.9.0.1
    dns: [10.9.0.2]
defaults:
  hypervisor: h1
  network: lo
  sysctl:
    vm.swappiness: 10
  labels:
    owner: team
groups:
  big:
    memory_mib: 4096
    sysctl:
      kernel.panic: 10
    roles: [k8s-worker]
kubernetes:
  install: prerequisites
  namespaces:
    shop:
      sample_workload: true
      allow:
        web:
          pods: {app: web}
          from_namespaces: [edge]
          ports: ["8080"]
nodes:
  n1:
    ssh_port: 10022
    roles: [k8s-control-plane]
  n2:
    groups: [big]
    network: br
    address: 10.9.0.5/24
    memory_mib: 2048
    labels:
      env: dev
"""


def test_shipped_inventories_load() -> None:
    local = inventory.load(LOCAL)
    oslo = inventory.load(OSLO)
    assert [n.name for n in local.nodes] == ["node1"]
    assert local.network("loopback").mode is NetworkMode.USER
    assert len(oslo.hypervisors) == 3
    assert all(h.require_nvme and h.uri.startswith("qemu+ssh://") for h in oslo.hypervisors)
    assert Role.K8S_CONTROL_PLANE in oslo.node("cp1").roles
    assert oslo.node("w1").docker is DockerMode.ROOTFUL


def test_defaults_then_groups_then_node_merge(tmp_path: Path) -> None:
    inv = load_text(tmp_path, VALID)
    n1, n2 = inv.node("n1"), inv.node("n2")
    assert n1.memory_mib == 1536  # table default
    assert n2.memory_mib == 2048  # node beats group
    assert n2.roles == (Role.K8S_WORKER,)  # from the group
    # maps merge key by key across layers
    assert dict(n2.sysctl) == {"vm.swappiness": "10", "kernel.panic": "10"}
    assert dict(n2.labels) == {"owner": "team", "env": "dev"}
    assert dict(n1.sysctl) == {"vm.swappiness": "10"}


WAIVED = VALID.replace(
    "  labels:\n    owner: team\n",
    "  labels:\n    owner: team\n  waivers:\n"
    '    HN-FW-02: "until 2027-03-01: the metrics port opens with the next image"\n',
    1,
).replace(
    "    ssh_port: 10022\n",
    '    ssh_port: 10022\n    waivers:\n      HN-SSH-11: "a bastion account is being added"\n',
)


def test_waivers_merge_with_reason_and_expiry(tmp_path: Path) -> None:
    inv = load_text(tmp_path, WAIVED)
    assert inv.node("n1").waivers == (
        Waiver("HN-FW-02", "the metrics port opens with the next image", date(2027, 3, 1)),
        Waiver("HN-SSH-11", "a bastion account is being added", None),
    )
    assert [w.check_id for w in inv.node("n2").waivers] == ["HN-FW-02"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("HN-SSH-11", "HN-SSH-99"), "nodes.n1.waivers.HN-SSH-99: not a check id of the hardening"),
        (("HN-SSH-11", "SSH-11"), "nodes.n1.waivers.SSH-11: 'SSH-11' is not a valid key"),
        (("2027-03-01", "2027-13-01"), "waivers.HN-FW-02: '2027-13-01' is not a date"),
        (("a bastion account is being added", "ok"), "give the reason for the waiver"),
    ],
)
def test_bad_waivers_are_located_errors(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    errors = _errors(tmp_path, WAIVED.replace(*change))
    assert any(expected in e and re.match(r".*inv\.yaml:\d+:\d+: ", e) for e in errors), errors


def test_the_verifier_account_name_is_reserved(tmp_path: Path) -> None:
    errors = _errors(
        tmp_path, VALID.replace("  labels:\n", "  workload_user: verifier\n  labels:\n", 1)
    )
    assert any("workload_user: 'verifier' is reserved" in e for e in errors), errors


def test_loaded_inventory_is_frozen(tmp_path: Path) -> None:
    inv = load_text(tmp_path, VALID)
    with pytest.raises(AttributeError):
        inv.nodes[0].memory_mib = 1  # type: ignore[misc]


def _errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_text(tmp_path, text)
    return [str(p) for p in exc.value.problems]


def _mutated(mutate: object) -> str:
    doc = yaml.safe_load(VALID)
    mutate(doc)  # type: ignore[operator]
    return yaml.safe_dump(doc, sort_keys=False)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = VALID.replace("ssh_port: 10022", "ssh_port: 80\n    vcpus: many\n    colour: red")
    errors = _errors(tmp_path, text)
    assert len(errors) == 3, errors
    path = tmp_path / "inv.yaml"
    assert errors[0] == f"{path}:41:15: nodes.n1.ssh_port: 80 is out of range [1024, 65535]"
    assert errors[1] == f"{path}:42:12: nodes.n1.vcpus: expected an integer, got str 'many'"
    assert errors[2].startswith(f"{path}:43:5: nodes.n1.colour: unknown key")


def test_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    errors = _errors(tmp_path, "name: t\nnodes:\n  n1: [unclosed\n")
    assert re.match(r".*inv\.yaml:\d+:\d+: YAML syntax error", errors[0]), errors


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    errors = _errors(tmp_path, VALID.replace("  n1:\n", "  n1:\n    vcpus: 1\n    vcpus: 2\n"))
    assert any("nodes.n1.vcpus: duplicate key" in e for e in errors), errors


@pytest.mark.parametrize(
    ("text_change", "expected"),
    [
        (("hypervisor: h1", "hypervisor: h9"), "nodes.n1.hypervisor: unknown hypervisor 'h9'"),
        (("groups: [big]", "groups: [small]"), "nodes.n2.groups[0]: unknown group 'small'"),
        (("address: 10.9.0.5/24", "address: 10.8.0.5/24"), "is outside the network's cidr"),
        (("address: 10.9.0.5/24", "address: 10.9.0.5"), "needs a prefix length"),
        (("    ssh_port: 10022\n", ""), "nodes.n1.ssh_port: a node on a user-mode network needs"),
        (("cidr: 10.9.0.0/24", "cidr: 10.9.0.0/33"), "networks.br.cidr:"),
        (("    bridge: br0\n", ""), "networks.br: bridge mode needs 'bridge'"),
    ],
)
def test_cross_reference_errors(
    tmp_path: Path, text_change: tuple[str, str], expected: str
) -> None:
    errors = _errors(tmp_path, VALID.replace(*text_change))
    assert any(expected in e for e in errors), errors


def test_duplicate_ssh_port_on_one_hypervisor(tmp_path: Path) -> None:
    text = VALID + "  n3:\n    ssh_port: 10022\n"
    errors = _errors(tmp_path, text)
    assert any("nodes.n3.ssh_port: 10022 is already used by n1" in e for e in errors), errors


# --- broken inventories generated from the settings table -----------------------------------

SECTIONS = {
    # table -> (path in the document, a container we can mutate)
    "image": (settings.IMAGE, ("image",)),
    "hypervisor": (settings.HYPERVISOR, ("hypervisors", "h1")),
    "network": (settings.NETWORK, ("networks", "br")),
    "node": (settings.NODE, ("nodes", "n2")),
    "admin": (settings.ADMIN, ("nodes", "n2", "admin")),
}


def _wrong_value(s: settings.Setting) -> object:
    if s.kind in (settings.Kind.INT,):
        return "not-a-number"
    if s.kind is settings.Kind.BOOL:
        return "yes please"
    if s.kind in (settings.Kind.LIST, settings.Kind.ENUM_LIST):
        return "not-a-list"
    if s.kind in (settings.Kind.MAP, settings.Kind.SECTION):
        return ["not", "a", "mapping"]
    return {"not": "a string"}


def _cases() -> list[tuple[str, str, str, object]]:
    cases: list[tuple[str, str, str, object]] = []
    for section, (table, _) in SECTIONS.items():
        for s in table:
            cases.append((section, s.name, "wrong type", _wrong_value(s)))
            if s.maximum is not None:
                cases.append((section, s.name, "out of range", s.maximum + 1))
            if s.minimum is not None:
                cases.append((section, s.name, "out of range", s.minimum - 1))
            if s.choices:
                cases.append((section, s.name, "not a choice", "no-such-choice"))
            if s.required and section != "node":
                cases.append((section, s.name, "missing", None))
        cases.append((section, "bogus_key", "unknown key", 1))
    return cases


@pytest.mark.parametrize(("section", "key", "kind", "value"), _cases())
def test_broken_inventory_from_settings_table(
    tmp_path: Path, section: str, key: str, kind: str, value: object
) -> None:
    _table, where = SECTIONS[section]

    def mutate(doc: dict) -> None:  # type: ignore[type-arg]
        target = doc
        for part in where:
            target = target.setdefault(part, {})
        if kind == "missing":
            target.pop(key, None)
        else:
            target[key] = value

    text = _mutated(mutate)
    path = tmp_path / "inv.yaml"
    errors = _errors(tmp_path, text)
    key_path = ".".join(where)
    assert errors, "no error reported"
    # Every message is `file:line:col: key.path: message` and names the broken key.
    pattern = rf"^{re.escape(str(path))}:(\d+):(\d+): {re.escape(key_path)}"
    matching = [e for e in errors if re.match(pattern, e) and key in e]
    assert matching, errors
    line = int(re.match(pattern, matching[0]).group(1))  # type: ignore[union-attr]
    lines = text.splitlines()
    assert 1 <= line <= len(lines)
    if kind != "missing":
        # The location points at the key's own line (or, for nested values, just below it).
        assert key in lines[line - 1] or key in lines[line - 2], (matching[0], lines[line - 1])


def test_missing_required_node_key_says_where_to_set_it(tmp_path: Path) -> None:
    text = VALID.replace("  hypervisor: h1\n", "")
    errors = _errors(tmp_path, text)
    assert any(
        "nodes.n1: missing required key 'hypervisor' (set it on the node, a group or defaults)" in e
        for e in errors
    ), errors


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        inventory.load(tmp_path / "nope.yaml")
    assert "cannot read" in str(exc.value)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provision.cli", *args], capture_output=True, text=True, check=False
    )


def test_cli_reports_located_errors_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        VALID.replace("vm.swappiness: 10", "vm.swappiness: [1]").replace(
            "ssh_port: 10022", "ssh_port: 99999"
        )
    )
    result = _cli("render", "-i", str(path), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert any(
        re.match(rf"^{re.escape(str(path))}:\d+:\d+: defaults\.sysctl\.vm\.swappiness: ", x)
        for x in lines
    ), lines
    assert any("nodes.n1.ssh_port: 99999 is out of range" in x for x in lines), lines
    assert not (tmp_path / "out").exists()


def test_cli_yaml_syntax_error_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [\n")
    result = _cli("plan", "-i", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path}:" in result.stderr and "YAML syntax error" in result.stderr


def test_cli_debug_shows_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [\n")
    result = _cli("--debug", "plan", "-i", str(path))
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_settings_reference_lists_every_setting() -> None:
    text = settings.reference()
    for table in (
        settings.TOP,
        settings.IMAGE,
        settings.HYPERVISOR,
        settings.NETWORK,
        settings.NODE,
        settings.ADMIN,
    ):
        for s in table:
            assert f"  {s.name} " in text


def test_kubernetes_section_parses(tmp_path: Path) -> None:
    k8s = load_text(tmp_path, VALID).kubernetes
    assert k8s is not None and k8s.version == "1.34.4" and k8s.api_port == 6443
    [shop] = k8s.namespaces
    assert shop.sample_workload and shop.allow[0].ports == (8080,)
    assert shop.allow[0].pods == (("app", "web"),) and shop.allow[0].from_namespaces == ("edge",)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("install: prerequisites", "install: bundle"),
            "kubernetes: install: bundle needs 'bundle'",
        ),
        (("install: prerequisites", "install: helm"), "kubernetes.install: "),
        (('ports: ["8080"]', 'ports: ["80x"]'), "kubernetes.namespaces.shop.allow.web.ports[0]"),
        (
            ("    shop:\n", "    kube-system:\n"),
            "kubernetes.namespaces.kube-system: not a workload",
        ),
        (("    roles: [k8s-control-plane]\n", ""), "exactly one node needs role k8s-control-plane"),
        (
            ("          pods: {app: web}\n          from_namespaces: [edge]\n", ""),
            "an allow rule needs pods or a source",
        ),
    ],
)
def test_kubernetes_mistakes_are_located(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, VALID.replace(*change, 1))
    assert any(expected in str(p) for p in err.value.problems), err.value.problems
