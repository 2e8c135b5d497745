"""The command line: help a newcomer can read, usage errors with exit 2, render end to end."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import yaml

from tests.helpers import OSLO
from tests.helpers import run_cli as _cli


def test_help_lists_every_command() -> None:
    out = _cli("--help").stdout
    for verb in (
        "up",
        "down",
        "status",
        "ssh",
        "ssh-config",
        "console",
        "render",
        "plan",
        "settings",
        "image",
    ):
        assert f"    {verb}" in out
    assert "render" in _cli("render", "--help").stdout


def test_unknown_node_is_a_usage_error(tmp_path: Path) -> None:
    result = _cli("render", "-i", str(OSLO), "--nodes", "nope", "-o", str(tmp_path), home=tmp_path)
    assert result.returncode == 2
    assert "unknown node(s): nope" in result.stderr and "Traceback" not in result.stderr


def test_render_oslo_writes_every_node(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _cli("render", "-i", str(OSLO), "-o", str(out), home=tmp_path)
    assert result.returncode == 0, result.stderr
    for node in ("cp1", "w1", "w2", "w3"):
        assert (out / node / "domain.xml").exists()
        user_data = out / node / "seed" / "user-data"
        assert stat.S_IMODE(user_data.stat().st_mode) == 0o600
        assert yaml.safe_load(user_data.read_text())["hostname"] == node
    # The image is not built under this HOME: digests are marked, never invented.
    assert 'sha256="unresolved"' in (out / "cp1" / "domain.xml").read_text()
    assert "not built yet" in result.stderr
    # Rendering writes nothing outside its output (#12): no key is created, placeholders show
    # where keys will go, and say so; a second render is identical.
    assert "no keys yet for cp1, w1, w2, w3" in result.stderr and "placeholders" in result.stderr
    assert "host key placeholder" in result.stdout
    assert not (tmp_path / ".local/share/provision").exists()
    first = (out / "known_hosts").read_text()
    _cli("render", "-i", str(OSLO), "-o", str(out), home=tmp_path)
    assert (out / "known_hosts").read_text() == first
    assert "BEGIN OPENSSH PRIVATE KEY" not in (out / "cp1" / "seed" / "user-data").read_text()


def test_policy_coverage_reads_kubectl_json_and_names_decoys(tmp_path: Path) -> None:
    ingress_only = {
        "kind": "List",
        "items": [
            {
                "kind": "NetworkPolicy",
                "metadata": {"name": "deny", "namespace": "shop"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
            }
        ],
    }
    path = tmp_path / "netpol.json"
    path.write_text(yaml.safe_dump(ingress_only))
    run = _cli("policy-coverage", "-i", str(OSLO), str(path), home=tmp_path)
    assert run.returncode == 1, run.stderr
    assert "decoy    shop" in run.stdout and "missing  edge" in run.stdout


def test_plan_and_render_create_no_state(tmp_path: Path) -> None:
    """Issue #12: looking never changes state. Keys are created by `up` only; `plan` (against
    libvirt's test driver) and `render` leave the state directory as they found it."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "inventories" / "local.yaml").read_text()
    text = text.replace("state_dir: /var/lib/provision", f"state_dir: {tmp_path / 'state'}")
    text = text.replace("uri: qemu:///system", "uri: test:///default")
    text = text.replace("playbooks: [../playbooks/post-boot.yaml]", "")
    inv = tmp_path / "local.yaml"
    inv.write_text(text)
    plan = _cli("plan", "-i", str(inv), "--json", home=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["nodes"][0]["action"] == "create"
    plan = _cli("plan", "-i", str(inv), home=tmp_path)
    assert plan.returncode == 0 and "rendered with placeholders" in plan.stderr, plan.stderr
    render = _cli("render", "-i", str(inv), "-o", str(tmp_path / "out"), home=tmp_path)
    assert render.returncode == 0, render.stderr
    assert not (tmp_path / "state").exists()
