"""The settings engine (config.table): a row and a field are all a new setting needs.

The inventory's tables build the frozen dataclasses of core.model; a node setting added at test
time (one more row, one more field) is parsed, located in errors, listed by `provision settings`
and counted as seed by the update policy, with no other module edited.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from provision.cli.main import main
from provision.config import inventory, settings
from provision.config.table import Kind, Setting, Table
from provision.core import model
from provision.core.errors import ConfigError
from provision.desired import render
from provision.desired.domain import DomainFact
from provision.desired.plan import Action, plan_node
from tests.helpers import LOCAL, load_text, render_inv
from tests.test_inventory import VALID


@dataclasses.dataclass(frozen=True)
class NodeWithHugepages(model.Node):
    """core.model.Node as it would be with one more field (a default, as it follows waivers)."""

    hugepages: int = 0


HUGEPAGES = Setting(
    "hugepages", Kind.INT, "2 MiB huge pages reserved at boot.", 0, minimum=0, maximum=4096
)


@pytest.fixture
def hugepages(monkeypatch: pytest.MonkeyPatch) -> None:
    """The node table with the new row, building the dataclass with the new field."""
    monkeypatch.setattr(settings, "NODE", settings.NODE.extended(HUGEPAGES, into=NodeWithHugepages))


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_text(tmp_path, text)
    return [str(p) for p in exc.value.problems]


def test_a_new_node_setting_is_one_row_and_one_field(
    hugepages: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Parsed and merged like every node setting: defaults, then groups, then the node.
    text = VALID.replace("defaults:\n", "defaults:\n  hugepages: 64\n", 1).replace(
        "    ssh_port: 10022\n", "    ssh_port: 10022\n    hugepages: 128\n", 1
    )
    inv = load_text(tmp_path, text)
    n1, n2 = inv.node("n1"), inv.node("n2")
    assert isinstance(n1, NodeWithHugepages) and isinstance(n2, NodeWithHugepages)
    assert (n1.hugepages, n2.hugepages) == (128, 64)

    # Located errors, collected with the others, on every layer.
    path = tmp_path / "inv.yaml"
    broken = text.replace("hugepages: 128", "hugepages: lots").replace(
        "    memory_mib: 4096\n", "    memory_mib: 4096\n    hugepages: 5000\n    hugepage: 1\n"
    )
    lines = broken.splitlines()

    def at(text: str, col: int) -> str:
        return f"{path}:{next(i for i, x in enumerate(lines, 1) if x.strip() == text)}:{col}"

    assert _problems(tmp_path, broken) == [
        f"{at('hugepages: 5000', 16)}: groups.big.hugepages: 5000 is out of range [0, 4096]",
        f"{at('hugepage: 1', 5)}: groups.big.hugepage: unknown key (did you mean 'hugepages'?)",
        f"{at('hugepages: lots', 16)}: nodes.n1.hugepages: expected an integer, got str 'lots'",
    ]

    # Listed by `provision settings`, in the node table.
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    node_section = out[out.index("defaults / groups.NAME / nodes.NAME:") :]
    assert "  hugepages          integer in [0, 4096]; default 0\n" in node_section
    assert "2 MiB huge pages reserved at boot." in node_section

    # Counted as seed by the update policy: a change means a new first boot.
    local = inventory.load(LOCAL)
    assert isinstance(local.nodes[0], NodeWithHugepages) and local.nodes[0].hugepages == 0
    before = render_inv(local).nodes[0]
    node = dataclasses.replace(local.nodes[0], hugepages=64)
    after = render_inv(dataclasses.replace(local, nodes=(node,))).nodes[0]
    plan = plan_node(after, DomainFact(node.name, True, before.booted_xml, before.meta))
    assert plan.action is Action.RECREATE
    assert {c.field for c in plan.changes} == {"seed"}


def test_a_row_that_says_seed_false_leaves_the_seed() -> None:
    """NOT_IN_SEED is the table's: only rows marked seed=False are outside the seed."""
    assert settings.NODE.outside_seed == render.NOT_IN_SEED
    in_seed = settings.NODE.extended(HUGEPAGES, into=NodeWithHugepages)
    assert in_seed.outside_seed == render.NOT_IN_SEED
    kept_out = settings.NODE.extended(
        dataclasses.replace(HUGEPAGES, seed=False), into=NodeWithHugepages
    )
    assert kept_out.outside_seed == render.NOT_IN_SEED | {"hugepages"}


# The fields of each dataclass that no row fills: the loader gives them (a name from the key above,
# or what a cross-reference decides). Anything else must be a row, so nothing is copied by hand.
GIVEN_BY_THE_LOADER: list[tuple[Table[Any], set[str]]] = [
    (settings.IMAGE, set()),
    (settings.HYPERVISOR, {"name"}),
    (settings.NETWORK, {"name"}),
    (settings.ADMIN, set()),
    (settings.NODE, {"name"}),
    (settings.KUBERNETES, {"namespaces"}),
    (settings.NAMESPACE, {"name", "allow"}),
    (settings.ALLOW_RULE, {"name"}),
]


@pytest.mark.parametrize(("table", "given"), GIVEN_BY_THE_LOADER)
def test_every_field_is_a_row_or_given_by_the_loader(table: Table[Any], given: set[str]) -> None:
    assert dataclasses.is_dataclass(table.into)
    fields = {f.name for f in dataclasses.fields(table.into)}
    assert fields - {row.dest for row in table} == given


def test_a_row_without_a_field_is_refused_when_the_table_is_made() -> None:
    with pytest.raises(TypeError, match=r"Node has no field \['colour'\]"):
        Table(model.Node, Setting("colour", Kind.STR, "A typo of a field."))


def test_an_explicit_null_takes_the_default_in_every_section(tmp_path: Path) -> None:
    """Regression (#12): `snapshot: ~` (or any optional key set to null) in a section that is not
    merged (image, hypervisors, networks, kubernetes) left the key out and ended in a KeyError
    traceback instead of taking the default."""
    text = (
        VALID.replace(
            "    pool_path: /var/lib/provision/pool\n", "    pool_path: /p\n    known_hosts: ~\n"
        )
        .replace("    gateway: 10.9.0.1\n", "    gateway: null\n")
        .replace("  install: prerequisites\n", "  install: prerequisites\n  bundle: null\n")
        + "image:\n  snapshot: null\n"
    )
    inv = load_text(tmp_path, text)
    assert inv.image.snapshot is None and inv.hypervisors[0].known_hosts is None
    assert inv.network("br").gateway is None
    assert inv.kubernetes is not None and inv.kubernetes.bundle is None


def test_relative_files_are_the_inventory_s(tmp_path: Path) -> None:
    text = VALID.replace(
        "    pool_path: /var/lib/provision/pool\n",
        "    pool_path: /p\n    known_hosts: keys/known_hosts\n    identity_file: ~/id\n",
    )
    hv = load_text(tmp_path, text).hypervisors[0]
    assert hv.known_hosts == tmp_path / "keys" / "known_hosts"
    assert hv.identity_file == Path("~/id").expanduser()


def test_a_layer_checks_keys_and_builds_nothing(tmp_path: Path) -> None:
    from provision.config.yamlsrc import loads

    problems: list[Any] = []
    layer = settings.NODE.layer(loads("vcpus: 2\nadmin: {name: ops}\n", "f.yaml"), "x", problems)
    assert problems == [] and layer.built is None
    assert layer.values == {"vcpus": 2, "admin": {"name": "ops"}}
    full = settings.ADMIN.parse(loads("name: ops\n", "f.yaml"), "admin", problems)
    assert full.built == model.Admin("ops", (), True, None)
