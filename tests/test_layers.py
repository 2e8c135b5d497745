"""The package's folders are layers, and every import points down (issue #12).

Read from the source with `ast`, function-local imports included: a cycle hidden inside a function
is still a cycle. One module per outside system: only boundary/ imports libvirt, paramiko or
subprocess.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "provision"

# Bottom to top. A module may import its own folder and any folder of a lower rank; folders of
# one rank are siblings and never import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("baseline",),
    ("config",),
    ("kubernetes",),
    ("desired",),
    ("boundary",),
    ("image",),
    ("state",),
    ("converge", "verify"),
    ("drift",),
    ("cli",),
)
RANK = {folder: rank for rank, group in enumerate(LAYERS) for folder in group}
OUTSIDE = {"libvirt": "hypervisor", "paramiko": "ssh", "subprocess": "process"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANK) else None


def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}


def test_every_module_sits_in_a_layer_folder() -> None:
    loose = [m for m in _modules() if m.count(".") == 1 and _folder(m) is None]
    assert loose == [], f"modules outside the layer folders: {loose}"
    unknown = sorted({m.split(".")[1] for m in _modules() if m.count(".") >= 2} - set(RANK))
    assert unknown == [], f"folders missing from LAYERS: {unknown}"


def test_imports_point_down() -> None:
    bad = []
    for module, deps in graph().items():
        here = _folder(module)
        for dep in deps:
            there = _folder(dep)
            if here is None or there is None or here == there:
                continue
            if RANK[there] >= RANK[here]:
                bad.append(f"{module} -> {dep}")
    assert bad == [], "imports that do not point down:\n" + "\n".join(sorted(bad))


def test_no_import_cycles_even_inside_functions() -> None:
    g = graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done
    cycles: list[str] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(g[m]):
            if d.startswith(m + "."):  # a package importing its own submodule
                continue
            if state.get(d) == 1:
                cycles.append(" -> ".join([*stack[stack.index(d) :], d]))
            elif d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def test_only_the_boundary_talks_to_outside_systems() -> None:
    bad = []
    for module, path in _modules().items():
        for name in _imports(path):
            top = name.split(".")[0]
            if top in OUTSIDE and module != f"provision.boundary.{OUTSIDE[top]}":
                bad.append(f"{module} imports {top}")
    assert bad == [], bad


def test_the_layer_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself can fail: desired/ importing the libvirt boundary is refused."""
    probe = PACKAGE / "desired" / "_layer_probe.py"
    probe.write_text("from provision.boundary import hypervisor\n")
    try:
        try:
            test_imports_point_down()
        except AssertionError as exc:
            assert "provision.desired._layer_probe -> provision.boundary.hypervisor" in str(exc)
        else:
            raise AssertionError("an upward import was not reported")
    finally:
        probe.unlink()


def test_no_module_is_over_500_lines() -> None:
    """Modules are nouns with one job; past ~500 lines a module is doing two."""
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}, long
