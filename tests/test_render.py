"""Rendered artifacts: golden files, libvirt's own validation, cloud-init's schema, secrets."""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import replace
from pathlib import Path

import libvirt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from provision.baseline import hardening
from provision.boundary.process import run
from provision.config import inventory
from provision.core.model import Accel, Waiver
from provision.desired import domain, hostkeys, render, seed
from provision.desired.golden import UNRESOLVED
from tests.helpers import (
    ADMIN_KEY,
    GOLDEN,
    LOCAL,
    OSLO,
    UNBUILT,
    VERIFIER_KEY,
    keys_for,
    render_inv,
)

GOLDEN_DIR = Path(__file__).parent / "golden"
INVENTORIES = {"local": LOCAL, "oslo": OSLO}


def _all_renders() -> list[tuple[str, render.NodeRender]]:
    out = []
    for name, path in INVENTORIES.items():
        for r in render_inv(inventory.load(path)).nodes:
            out.append((f"{name}/{r.node.name}", r))
    return out


def _artifacts(r: render.NodeRender) -> dict[str, str]:
    files = {"domain.xml": r.domain_xml, "volume.xml": r.overlay_xml}
    for name, content in r.seed.files().items():
        files[f"seed/{name}"] = content if isinstance(content, str) else _mask(content.reveal())
    return files


def _mask(text: str) -> str:
    """OpenSSH private keys carry a random check value, so golden files hold a placeholder."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, x in enumerate(lines) if "BEGIN OPENSSH PRIVATE KEY" in x)
    end = next(i for i, x in enumerate(lines) if "END OPENSSH PRIVATE KEY" in x)
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    return "".join([*lines[: start + 1], f"{indent}<private key>\n", *lines[end:]])


@pytest.mark.parametrize(
    ("ident", "r"), _all_renders(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_golden_files(request: pytest.FixtureRequest, ident: str, r: render.NodeRender) -> None:
    """Rendered output is stable; after a reviewed change, regenerate: pytest --regen-golden."""
    regen = request.config.getoption("--regen-golden")
    for name, text in _artifacts(r).items():
        path = GOLDEN_DIR / ident / name
        if regen:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert path.exists(), f"missing golden file {path}: run pytest --regen-golden"
        assert text == path.read_text(), f"{path} differs: review, then pytest --regen-golden"


@pytest.fixture
def test_conn() -> libvirt.virConnect:
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()


@pytest.mark.parametrize(
    ("ident", "r"), _all_renders(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_libvirt_accepts_domain_with_schema_validation(
    test_conn: libvirt.virConnect, ident: str, r: render.NodeRender
) -> None:
    dom = test_conn.defineXMLFlags(r.domain_xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    try:
        # Our metadata survives the round trip through libvirt.
        meta = domain.parse_metadata(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domain.NS))
        assert meta == r.meta
        live = dom.XMLDesc(0)
        assert "io='native'" in live and "cache='none'" in live and "discard='unmap'" in live
        assert "<kernel>" in live and "root=/dev/vda" in live
        assert "<graphics" not in live
    finally:
        dom.undefine()


def test_libvirt_rejects_invalid_domain(test_conn: libvirt.virConnect) -> None:
    """The validation above can fail: a broken element is refused by libvirt's schema."""
    r = render_inv(inventory.load(LOCAL)).nodes[0]
    broken = r.domain_xml.replace('<vcpu placement="static">', '<vcpu placement="sideways">')
    with pytest.raises(libvirt.libvirtError):
        test_conn.defineXMLFlags(broken, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)


def test_libvirt_accepts_pool_volume_and_network_xml(test_conn: libvirt.virConnect) -> None:
    rendered = render_inv(inventory.load(OSLO))
    pool_xml = next(iter(rendered.pools().values())).replace(
        "<name>provision</name>", "<name>provision-xml-test</name>"
    )
    pool = test_conn.storagePoolDefineXML(pool_xml, 0)
    try:
        pool.create(0)
        vol = pool.createXML(rendered.nodes[0].overlay_xml, 0)
        assert vol.name() == "cp1.qcow2"
        assert "<backingStore>" in vol.XMLDesc(0)
        vol.delete(0)
    finally:
        pool.destroy()
        pool.undefine()
    for xml in rendered.networks().values():
        net = test_conn.networkDefineXML(xml)
        assert "<forward mode='bridge'/>" in net.XMLDesc(0)
        assert "<ip" not in net.XMLDesc(0)  # no host-side address, no DHCP
        net.undefine()


@pytest.mark.parametrize(
    ("ident", "r"), _all_renders(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_user_data_passes_cloud_init_schema(
    tmp_path: Path, ident: str, r: render.NodeRender
) -> None:
    path = tmp_path / "user-data"
    path.write_text(r.seed.user_data.reveal())
    result = run(["cloud-init", "schema", "--config-file", path], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_cloud_init_schema_check_can_fail(tmp_path: Path) -> None:
    path = tmp_path / "user-data"
    path.write_text("#cloud-config\nssh_pwauth: [not, a, bool]\n")
    assert run(["cloud-init", "schema", "--config-file", path], check=False).returncode != 0


def _files(r: render.NodeRender) -> dict[str, str]:
    doc = yaml.safe_load(r.seed.user_data.reveal())
    return {f["path"]: f["content"] for f in doc["write_files"]}


def test_seed_carries_the_role_sysctls_and_docker_mode() -> None:
    oslo = render_inv(inventory.load(OSLO))
    for r in oslo.nodes:
        doc = yaml.safe_load(r.seed.user_data.reveal())
        files = _files(r)
        conf = files["/etc/sysctl.d/60-provision-hardening.conf"]
        for key, value in hardening.sysctls(r.node):
            assert f"{key} = {value}\n" in conf + "\n"
        assert "vm.swappiness = 10" in conf  # the inventory's override still applies
        assert "packages" not in doc and "package_update" not in doc
        assert seed.ROOTLESS_SCRIPT in files  # rootless for the workload
        rootful = r.node.docker.value == "rootful"
        assert ("/etc/docker/daemon.json" in files) == rootful
        assert ("/etc/modules-load.d/provision.conf" in files) == hardening.forwards(r.node)
        if rootful:
            daemon = json.loads(files["/etc/docker/daemon.json"])
            assert daemon["userns-remap"] == "default" and daemon["log-level"] == "info"
            assert "hosts" not in daemon  # Debian's ExecStart has -H fd://: both is fatal


def test_harden_script_runs_before_the_docker_steps() -> None:
    for r in render_inv(inventory.load(OSLO)).nodes:
        runcmd = yaml.safe_load(r.seed.user_data.reveal())["runcmd"]
        assert runcmd[:2] == ["set -e", [seed.HARDEN_SCRIPT]]
        assert [seed.ROOTLESS_SCRIPT] in runcmd[1:]


def test_verifier_account_logs_in_with_its_key_and_has_only_the_facts_helper() -> None:
    r = render_inv(inventory.load(LOCAL)).nodes[0]
    doc = yaml.safe_load(r.seed.user_data.reveal())
    [verifier] = [u for u in doc["users"] if u["name"] == hardening.VERIFIER_USER]
    assert verifier["ssh_authorized_keys"] == [f"restrict {VERIFIER_KEY.public}"]
    assert verifier["lock_passwd"] is True
    assert "sudo" not in verifier and "groups" not in verifier
    files = _files(r)
    sudoers = files["/etc/sudoers.d/60-provision-verifier"]
    assert f"verifier ALL=(root) NOPASSWD: {hardening.FACTS_HELPER}" in sudoers
    assert "Defaults:verifier !requiretty" in sudoers
    assert "ALL\n" not in sudoers.replace(hardening.FACTS_HELPER, "")
    assert hardening.FACTS_HELPER in files
    sshd = files["/etc/ssh/sshd_config.d/10-provision-hardening.conf"]
    assert "AllowUsers ops verifier" in sshd.splitlines()


def test_spec_hash_covers_the_verifier_key() -> None:
    inv = inventory.load(LOCAL)
    other = hostkeys.from_private_bytes(b"\xcc" * 32, "verifier@other").public
    base = render_inv(inv).nodes[0].meta.spec_hash
    changed = render.render(
        inv, GOLDEN, keys_for(inv), ADMIN_KEY.public, {"local": Accel.QEMU}, verifier_key=other
    )
    assert changed.nodes[0].meta.spec_hash != base


def test_spec_hash_ignores_waivers() -> None:
    """A waiver changes how the node is judged, not what it is: plan must not see a change."""
    inv = inventory.load(LOCAL)
    node = inv.nodes[0]
    waived = replace(node, waivers=(Waiver("HN-FW-02", "a reason long enough", None),))
    base = render_inv(inv).nodes[0].meta.spec_hash
    other = render_inv(replace(inv, nodes=(waived,))).nodes[0].meta.spec_hash
    assert other == base


def test_sshd_drop_in_carries_the_hardened_settings() -> None:
    sshd = _files(render_inv(inventory.load(LOCAL)).nodes[0])[
        "/etc/ssh/sshd_config.d/10-provision-hardening.conf"
    ]
    lines = sshd.splitlines()
    for line in (
        "PermitRootLogin no",
        "PasswordAuthentication no",
        "MaxAuthTries 2",
        "HostKey /etc/ssh/ssh_host_ed25519_key",
        "HostKeyAlgorithms ssh-ed25519",
        "ClientAliveCountMax 2",
        "MaxSessions 4",
        "Compression no",
        "PrintLastLog yes",
        "KexAlgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256@libssh.org,"
        "diffie-hellman-group-exchange-sha256",
    ):
        assert line in lines
    assert not [x for x in lines if x.startswith("HostKey ") and "ed25519" not in x]


def test_firewall_owns_one_table_and_never_flushes_the_ruleset() -> None:
    for r in render_inv(inventory.load(OSLO)).nodes:
        nft = _files(r)["/etc/provision/firewall.nft"]
        rules = [x.strip() for x in nft.splitlines() if not x.strip().startswith("#")]
        assert not [x for x in rules if x.startswith("flush")]
        assert nft.index("table inet provision {}") < nft.index("delete table inet provision")
        assert "policy drop;" in nft and "tcp dport 22 accept" in nft
        assert ('iifname "docker0" accept' in nft) == hardening.is_rootful(r.node)


def test_audit_rules_end_with_immutable_and_every_rule_has_a_key() -> None:
    rules = _files(render_inv(inventory.load(LOCAL)).nodes[0])[
        "/etc/audit/rules.d/60-provision.rules"
    ]
    active = [x for x in rules.splitlines() if x and not x.startswith("#")]
    assert active[-1] == "-e 2"
    assert all(" -k " in x for x in active[:-1])
    for path in ("/etc/subuid", "/usr/bin/newuidmap", "/usr/sbin/dockerd", "/var/log/sudo.log"):
        assert f"-w {path} " in rules


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
@pytest.mark.parametrize(
    ("ident", "r"), _all_renders(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_rendered_shell_scripts_pass_shellcheck(
    tmp_path: Path, ident: str, r: render.NodeRender
) -> None:
    files = _files(r)
    for path in (seed.HARDEN_SCRIPT, seed.ROOTLESS_SCRIPT, hardening.FACTS_HELPER):
        out = tmp_path / Path(path).name
        out.write_text(files[path])
        result = run(["shellcheck", "--shell=sh", out], check=False)
        assert result.returncode == 0, f"{path}:\n{result.stdout}{result.stderr}"


def test_host_key_is_pinned_and_private_half_only_in_user_data() -> None:
    inv = inventory.load(LOCAL)
    keys = keys_for(inv)
    r = render_inv(inv).nodes[0]
    key = keys["node1"]
    doc = yaml.safe_load(r.seed.user_data.reveal())
    assert doc["ssh_keys"]["ed25519_public"] == key.public
    private = doc["ssh_keys"]["ed25519_private"]
    loaded = serialization.load_ssh_private_key(private.encode(), password=None)
    assert loaded.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode() == " ".join(key.public.split()[:2])
    assert r.meta.host_key_fingerprint == key.fingerprint
    private_body = private.splitlines()[1]
    for text in (r.domain_xml, r.overlay_xml, r.seed.meta_data, r.seed.network_config):
        assert private_body not in text and "PRIVATE KEY" not in text
    assert "***" in repr(r.seed.user_data) and private_body not in repr(r)


def test_unbuilt_image_renders_unresolved_digests() -> None:
    r = render_inv(inventory.load(LOCAL), golden=UNBUILT).nodes[0]
    assert r.meta.kernel_sha256 == UNRESOLVED and r.meta.rootfs_sha256 == UNRESOLVED
    built = render_inv(inventory.load(LOCAL), golden=GOLDEN).nodes[0]
    assert built.meta.kernel_sha256 == GOLDEN.kernel_sha256
    assert built.meta.spec_hash != r.meta.spec_hash


def test_network_config_static_for_bridge_dhcp_for_user() -> None:
    oslo = render_inv(inventory.load(OSLO)).nodes[0]
    doc = yaml.safe_load(oslo.seed.network_config)
    eth = doc["ethernets"]["eth0"]
    assert eth["addresses"] == ["10.40.0.11/24"] and eth["dhcp4"] is False
    assert eth["routes"] == [{"to": "0.0.0.0/0", "via": "10.40.0.1"}]
    local = render_inv(inventory.load(LOCAL)).nodes[0]
    assert yaml.safe_load(local.seed.network_config)["ethernets"]["eth0"]["dhcp4"] is True


def test_user_mode_forwards_ssh_on_loopback_only() -> None:
    r = render_inv(inventory.load(LOCAL)).nodes[0]
    assert "user,id=provnet0,restrict=on,hostfwd=tcp:127.0.0.1:10022-:22" in r.domain_xml
    assert r.ssh_address == ("127.0.0.1", 10022)
    assert "[127.0.0.1]:10022 ssh-ed25519 " in render.known_hosts(render_inv(inventory.load(LOCAL)))


def test_kvm_domain_passes_host_cpu_through() -> None:
    r = render_inv(inventory.load(OSLO), accel=Accel.KVM).nodes[0]
    assert 'type="kvm"' in r.domain_xml and 'mode="host-passthrough"' in r.domain_xml


def test_write_makes_secret_files_owner_only(tmp_path: Path) -> None:
    rendered = render_inv(inventory.load(OSLO))
    written = render.write(rendered, tmp_path)
    user_data = tmp_path / "cp1" / "seed" / "user-data"
    assert user_data in written
    assert stat.S_IMODE(os.stat(user_data).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(user_data.parent).st_mode) == 0o700
    assert (tmp_path / "pools" / "kvm1.xml").exists()
    assert (tmp_path / "networks" / "prod.xml").exists()
    assert len((tmp_path / "known_hosts").read_text().splitlines()) == 4


def test_spec_hash_changes_with_any_node_setting() -> None:
    inv = inventory.load(LOCAL)
    base = render_inv(inv).nodes[0].meta.spec_hash
    import dataclasses

    node = dataclasses.replace(inv.nodes[0], memory_mib=2048)
    changed = dataclasses.replace(inv, nodes=(node,))
    assert render_inv(changed).nodes[0].meta.spec_hash != base
    assert render_inv(inv).nodes[0].meta.spec_hash == base  # and it is stable
