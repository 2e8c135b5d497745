"""The wheel is the whole tool (issue #12): built from the checkout and installed into a fresh
venv, it runs from outside the repository and reads its templates, scripts, catalogue, schemas
and verification suite from the installed copy.

Offline and fast: the fresh venv borrows this test venv's installed dependencies through a `.pth`
line (a directory a `.pth` names is only added to sys.path, its own `.pth` files are not run, so
an editable install living there stays inert), and the wheel is built without build isolation
when this venv's setuptools satisfies pyproject's build-system.requires (setup.sh installs it
with the test extra). The tests assert where every `provision` module was imported from.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

import provision
from provision.baseline import catalogue
from provision.desired import render, seed
from provision.verify import suite
from provision.verify.checks import REGISTRY
from tests.netguard import netguard

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / "inventories" / "local.yaml"

# Run by the fresh venv's interpreter: what it imported and which packaged files it read.
PROBE = """
import importlib, json, pkgutil, sys
from importlib import resources

import pytest

import provision
import provision.cli.main
from provision.baseline import catalogue
from provision.desired import render, seed
from provision.kubernetes import k8s_seed
from provision.verify import runner, suite
from provision.verify.checks import REGISTRY

checks = sorted(m.name for m in pkgutil.iter_modules(suite.__path__))
for name in checks:
    importlib.import_module(f"provision.verify.suite.{name}")


class Collected:
    # The modules pytest collects the suite from, the way `provision verify` runs it.
    items: list[tuple[str, str]] = []

    def pytest_collection_finish(self, session):
        self.items = sorted({(i.module.__name__, i.module.__file__) for i in session.items})


collected = Collected()
with resources.as_file(runner.SUITE) as suite_dir:
    code = pytest.main(
        [str(suite_dir), "-c", str(suite_dir / "pytest.ini"), "--rootdir", str(suite_dir),
         "-p", "no:cacheprovider", "-p", "no:pytest11.testinfra", "-q", "--collect-only"],
        plugins=[collected],
    )
schemas = resources.files("provision.kubernetes") / "k8s_schemas"
report = {
    "modules": {m: getattr(v, "__file__", None) for m, v in sys.modules.items()
                if m == "provision" or m.startswith("provision.")},
    "templates": str(seed.TEMPLATES),
    "digest": render.templates_digest(),
    "k8s_lib": k8s_seed.script("lib.sh"),
    "catalogue": str(catalogue.PATH),
    "ids": sorted(catalogue.ids()),
    "checks": checks,
    "registry": sorted(REGISTRY),
    "suite_dir": str(suite_dir),
    "collect_exit": int(code),
    "collected": collected.items,
    "schemas": sorted(p.name for p in schemas.iterdir()),
}
with open(sys.argv[1], "w") as out:
    json.dump(report, out)
"""


def _run(argv: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _source_copy(dest: Path) -> Path:
    """The checkout's files, without its build leftovers: setuptools builds in the source tree,
    and a stale build/lib there would leak into the wheel (and this test must not write into
    the checkout). The symlink provision/cloudinit is copied as a symlink."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
        if Path(folder) == ROOT:
            skip |= {".git", ".venv", "build", "dist", "out"}
        return {n for n in names if n in skip or n.endswith(".egg-info")}

    shutil.copytree(ROOT, dest, symlinks=True, ignore=ignore)
    return dest


def _build_isolation() -> list[str]:
    """Offline (this venv's setuptools) when it satisfies build-system.requires; otherwise pip's
    isolated build, which fetches setuptools (a venv made before the test extra listed it)."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for text in requires:
        req = Requirement(text)
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            return []
        if not req.specifier.contains(installed, prereleases=True):
            return []
    return ["--no-build-isolation"]


def _fresh_venv(path: Path) -> tuple[Path, Path]:
    """A venv without pip whose only borrowed paths are this venv's site directories."""
    _run([sys.executable, "-m", "venv", "--without-pip", path], cwd=path.parent)
    python = path / "bin" / "python"
    purelib = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], path
        ).strip()
    )
    (purelib / "_test_venv_deps.pth").write_text("".join(f"{p}\n" for p in site.getsitepackages()))
    return python, purelib


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    # Back only the network guard (issue #15): its folder holds no `provision`, so what the
    # children import from the fresh venv is unchanged.
    env["PYTHONPATH"] = netguard.GUARD_DIR
    env["HOME"] = str(home)  # render reads ~ (and creates nothing there)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _tree(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mode & 0o777, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _packaged_files() -> set[str]:
    """Every file the wheel must hold under provision/: the package folders as they are in the
    checkout (code and data), with the top-level cloudinit/ mapped to provision/cloudinit/."""
    out = set()
    for src, dest in (
        (ROOT / "provision", "provision"),
        (ROOT / "cloudinit", "provision/cloudinit"),
    ):
        for path in src.rglob("*"):
            rel = path.relative_to(src)
            if path.is_file() and "__pycache__" not in rel.parts:
                out.add(f"{dest}/{rel.as_posix()}")
    return out


def test_a_checkout_reads_its_own_packaged_files() -> None:
    """Under pytest the packaged files are this checkout's, even when the venv holds an editable
    install of another checkout: provision/cloudinit is a symlink to ../cloudinit."""
    assert Path(provision.__file__).resolve() == ROOT / "provision" / "__init__.py"
    assert Path(str(seed.TEMPLATES)).resolve() == ROOT / "cloudinit"
    assert Path(str(catalogue.PATH)).resolve() == ROOT / "provision" / "baseline" / "catalogue.md"
    assert (ROOT / "provision" / "cloudinit").readlink() == Path("..") / "cloudinit"


def test_the_wheel_runs_from_a_fresh_venv_outside_the_checkout(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip"]
    src, dist = _source_copy(tmp_path / "src"), tmp_path / "dist"
    build = [*pip, "wheel", ".", "--no-deps", "-q", "-w", dist, *_build_isolation()]
    _run(build, cwd=src, env=_clean_env(tmp_path / "home"))
    (wheel,) = dist.glob("provision-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    assert {n for n in names if not n.startswith("provision-")} == _packaged_files()

    python, purelib = _fresh_venv(tmp_path / "venv")
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env(home)
    # This venv's pip installs into the fresh one (which has none): no download, no index.
    install = [*pip, "--python", python, "install", "--no-deps", "--no-index", "-q", wheel]
    _run(install, cwd=elsewhere, env=env)

    tool = python.parent / "provision"
    settings = _run([tool, "settings"], cwd=elsewhere, env=env)
    assert settings == _run([sys.executable, "-m", "provision.cli", "settings"], ROOT, env)
    assert "--junit" in _run([tool, "verify", "--help"], cwd=elsewhere, env=env)
    _run([tool, "render", "-i", LOCAL, "-o", tmp_path / "wheel-out"], cwd=elsewhere, env=env)
    checkout_render = [sys.executable, "-m", "provision.cli", "render", "-i", LOCAL]
    _run([*checkout_render, "-o", tmp_path / "checkout-out"], cwd=ROOT, env=env)
    rendered = _tree(tmp_path / "wheel-out")
    assert "node1/seed/user-data" in rendered
    assert rendered == _tree(tmp_path / "checkout-out")

    _run([python, "-c", PROBE, tmp_path / "probe.json"], cwd=elsewhere, env=env)
    probe = json.loads((tmp_path / "probe.json").read_text())
    installed = purelib.resolve()
    assert {"provision", "provision.cli.main", "provision.verify.runner"} <= set(probe["modules"])
    for module, file in probe["modules"].items():
        if file is not None:
            assert Path(file).resolve().is_relative_to(installed), (module, file)
    for key in ("templates", "catalogue", "suite_dir"):
        assert Path(probe[key]).resolve().is_relative_to(installed / "provision"), key
    assert probe["digest"] == render.templates_digest()
    assert probe["k8s_lib"] == (ROOT / "cloudinit" / "k8s" / "lib.sh").read_text()
    assert probe["ids"] == sorted(catalogue.ids())
    schemas = ROOT / "provision" / "kubernetes" / "k8s_schemas"
    assert probe["schemas"] == sorted(p.name for p in schemas.iterdir())

    checks = sorted(m.name for m in pkgutil.iter_modules(suite.__path__))
    for name in checks:
        importlib.import_module(f"provision.verify.suite.{name}")
    assert probe["checks"] == checks and probe["registry"] == sorted(REGISTRY)
    assert probe["collect_exit"] == 0
    assert [m for m, _ in probe["collected"]] == [f"provision.verify.suite.{c}" for c in checks]
    for _, file in probe["collected"]:
        assert Path(file).resolve().is_relative_to(installed), file
