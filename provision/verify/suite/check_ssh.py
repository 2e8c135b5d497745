"""A.3 SSH, always by the effective configuration (`sshd -T`), never by grepping files.

Debian's sshd_config includes sshd_config.d first and sshd keeps the first value it reads, so
only `sshd -T` says what the daemon really does.
"""

from __future__ import annotations

import re

import pytest

from provision.baseline import hardening
from provision.verify.checks import case, check
from provision.verify.plugin import Facts, Profile
from provision.verify.snapshot import Snapshot

SSH_FIX = (
    "sshd settings come from /etc/ssh/sshd_config.d/10-provision-hardening.conf (rendered from "
    "cloudinit/); remove any earlier drop-in that overrides it, `sshd -t`, reload ssh."
)

CIPHERS = (
    "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,"
    "aes256-ctr,aes192-ctr,aes128-ctr"
)
KEX = (
    "sntrup761x25519-sha512@openssh.com,curve25519-sha256@libssh.org,"
    "diffie-hellman-group-exchange-sha256"
)
MACS = (
    "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com,"
    "hmac-sha2-512,hmac-sha2-256"
)
SSH_07 = check(
    "HN-SSH-07",
    "Ensure modern SSH algorithms only (DEVSEC's exact lists for OpenSSH >= 8.5)",
    level="L1",
    severity="high",
    remediation=SSH_FIX,
)


def effective(facts: Facts) -> dict[str, list[str]]:
    """`sshd -T` as the verifier would be matched: keyword -> values (repeatable keywords)."""
    out: dict[str, list[str]] = {}
    for line in facts("sshd", hardening.VERIFIER_USER).splitlines():
        key, _, value = line.partition(" ")
        out.setdefault(key.lower(), []).append(value.strip())
    return out


def setting(facts: Facts, key: str) -> str:
    values = effective(facts).get(key)
    assert values, f"sshd -T does not report {key}"
    return values[0]


def _case(cid: str, title: str, key: str, value: str, level: str, severity: str) -> object:
    return case(cid, title, key, value, level=level, severity=severity, remediation=SSH_FIX)


@pytest.mark.parametrize(
    "key,value",
    [
        _case(
            "HN-SSH-01", "Ensure root cannot log in over SSH", "permitrootlogin", "no", "L1", "high"
        ),
        _case(
            "HN-SSH-04",
            "Ensure at most 2 authentication attempts",
            "maxauthtries",
            "2",
            "L1",
            "med",
        ),
    ],
)
def test_sshd_single(facts: Facts, key: str, value: str) -> None:
    assert setting(facts, key) == value, f"{key} is {setting(facts, key)}, expected {value}"


SSH_02 = check(
    "HN-SSH-02",
    "Ensure SSH allows no password, keyboard-interactive or empty-password logins",
    level="L1",
    severity="crit",
    remediation=SSH_FIX + " Never render ssh_pwauth: true (its cloud-init drop-in would win).",
)


@SSH_02
@pytest.mark.parametrize(
    "key", ["passwordauthentication", "kbdinteractiveauthentication", "permitemptypasswords"]
)
def test_no_passwords(facts: Facts, key: str) -> None:
    assert setting(facts, key) == "no", f"{key} is {setting(facts, key)}"


@check(
    "HN-SSH-03",
    "Ensure public-key authentication only, no host-based trust",
    level="L1",
    severity="med",
    remediation=SSH_FIX,
)
@pytest.mark.parametrize(
    "key,value",
    [
        ("pubkeyauthentication", "yes"),
        ("hostbasedauthentication", "no"),
        ("ignorerhosts", "yes"),
        ("ignoreuserknownhosts", "yes"),
    ],
)
def test_pubkey_only(facts: Facts, key: str, value: str) -> None:
    assert setting(facts, key) == value, f"{key} is {setting(facts, key)}, expected {value}"


@check(
    "HN-SSH-05",
    "Ensure session and startup limits (MaxSessions 4, MaxStartups 10:30:60)",
    level="L2",
    severity="low",
    remediation=SSH_FIX,
)
@pytest.mark.parametrize("key,value", [("maxsessions", "4"), ("maxstartups", "10:30:60")])
def test_session_limits(facts: Facts, key: str, value: str) -> None:
    assert setting(facts, key) == value, f"{key} is {setting(facts, key)}, expected {value}"


@check(
    "HN-SSH-06",
    "Ensure SSH forwarding, tunnels and user environments are off",
    level="L1",
    severity="med",
    remediation=SSH_FIX,
)
@pytest.mark.parametrize(
    "key,value",
    [
        ("allowtcpforwarding", "no"),
        ("allowagentforwarding", "no"),
        ("x11forwarding", "no"),
        ("x11uselocalhost", "yes"),
        ("permittunnel", "no"),
        ("gatewayports", "no"),
        ("permituserenvironment", "no"),
    ],
)
def test_no_forwarding(facts: Facts, key: str, value: str) -> None:
    assert setting(facts, key) == value, f"{key} is {setting(facts, key)}, expected {value}"


@SSH_07
@pytest.mark.parametrize(
    "key,value", [("ciphers", CIPHERS), ("kexalgorithms", KEX), ("macs", MACS)]
)
def test_crypto(facts: Facts, key: str, value: str) -> None:
    assert setting(facts, key) == value, f"{key} is {setting(facts, key)}"


@SSH_07
def test_moduli(snap: Snapshot) -> None:
    weak = snap.run("weak-moduli").stdout.strip()
    assert weak == "0", f"{weak} Diffie-Hellman moduli below 2048 bits in /etc/ssh/moduli"


@check(
    "HN-SSH-08",
    "Ensure the node's only host key is its provisioner-generated ed25519 key",
    level="L2",
    severity="med",
    remediation="Host keys come from the seed (ssh_keys) and are pinned; other types are "
    "deleted at first boot (ssh_deletekeys) and not listed as HostKey.",
)
def test_host_keys(snap: Snapshot, facts: Facts) -> None:
    keys = effective(facts).get("hostkey", [])
    assert keys == ["/etc/ssh/ssh_host_ed25519_key"], f"HostKey lines: {keys}"
    algorithms = setting(facts, "hostkeyalgorithms")
    assert algorithms == "ssh-ed25519", f"HostKeyAlgorithms {algorithms}"
    others = [
        f for f in snap.output("ls-etc-ssh").split() if re.match(r"ssh_host_(rsa|ecdsa|dsa)_key", f)
    ]
    assert not others, f"unused host keys left on disk: {others}"


SSH_09 = check(
    "HN-SSH-09",
    "Ensure SSH logging, timeouts and banners (Lynis where it and DEVSEC differ)",
    level="L1",
    severity="low",
    remediation=SSH_FIX,
)


@SSH_09
@pytest.mark.parametrize(
    "key,value",
    [
        ("loglevel", "VERBOSE"),
        ("syslogfacility", "AUTH"),
        ("logingracetime", "30"),
        ("clientaliveinterval", "300"),
        ("clientalivecountmax", "2"),
        ("strictmodes", "yes"),
        ("usedns", "no"),
        ("tcpkeepalive", "no"),
        ("printmotd", "no"),
        ("printlastlog", "yes"),
        ("compression", "no"),
    ],
)
def test_logging_and_timeouts(facts: Facts, key: str, value: str) -> None:
    assert setting(facts, key) == value, f"{key} is {setting(facts, key)}, expected {value}"


@SSH_09
def test_no_debian_banner(ssh_server_version: str) -> None:
    """`sshd -T` does not print DebianBanner: read what the server announced instead."""
    assert ssh_server_version.startswith("SSH-2.0-OpenSSH_"), ssh_server_version
    assert "Debian" not in ssh_server_version, f"sshd announces {ssh_server_version!r}"


@check(
    "HN-SSH-10",
    "Ensure SSH configuration and host key file modes",
    level="L1",
    severity="med",
    remediation="chmod 0755 /etc/ssh, 0600 /etc/ssh/sshd_config and private host keys (root).",
)
@pytest.mark.parametrize(
    "path,mode",
    [
        ("/etc/ssh", 0o755),
        ("/etc/ssh/sshd_config", 0o600),
        ("/etc/ssh/ssh_host_ed25519_key", 0o600),
        ("/etc/ssh/sshd_config.d/10-provision-hardening.conf", 0o600),
    ],
)
def test_ssh_file_modes(snap: Snapshot, path: str, mode: int) -> None:
    f = snap.file(path)
    assert f.exists, f"{path} is missing"
    assert (f.user, f.group) == ("root", "root"), f"{path} is {f.user}:{f.group}"
    assert f.mode == mode, f"{path} is {f.mode:o}, expected {mode:o}"


@check(
    "HN-SSH-11",
    "Ensure SSH logins are allow-listed (the admin and the verifier only)",
    level="L1",
    severity="med",
    remediation=SSH_FIX + " AllowUsers must keep the verifier, or verification locks itself out.",
)
def test_allow_users(facts: Facts, node: Profile) -> None:
    allowed = set(" ".join(effective(facts).get("allowusers", [])).split())
    assert allowed, "no AllowUsers: every account may try to log in"
    assert allowed == {node.admin, hardening.VERIFIER_USER}, f"AllowUsers {sorted(allowed)}"


@check(
    "HN-SSH-12",
    "Ensure the node presents exactly the host key pinned by the provisioner",
    level="L1",
    severity="crit",
    remediation="The verifier connected with the pinned key only (RejectPolicy); if the key on "
    "disk differs, the node was tampered with or re-keyed: investigate, then re-provision.",
)
def test_pinned_host_key(facts: Facts, node: Profile) -> None:
    keys = facts.host_keys()
    on_disk = keys.get("/etc/ssh/ssh_host_ed25519_key.pub")
    assert on_disk == node.host_key, "the node's host key differs from the pinned key"


@check(
    "HN-SSH-13",
    "Ensure repeated SSH authentication failures ban their source (fail2ban sshd jail)",
    level="L2",
    severity="low",
    remediation="fail2ban is in the golden image; /etc/fail2ban/jail.local comes from the seed "
    "(cloudinit/fail2ban-jail.local.j2). `systemctl restart fail2ban` after restoring it.",
)
def test_fail2ban_sshd_jail(snap: Snapshot) -> None:
    assert snap.service("fail2ban").is_running, "fail2ban is not running"
    part = snap.run("fail2ban-sshd")
    assert part.rc == 0, f"fail2ban has no sshd jail: {(part.stdout + part.stderr).strip()[-300:]}"
    lines = part.stdout.splitlines()
    assert any("Journal matches:" in line and "_COMM=sshd" in line for line in lines), (
        "the sshd jail does not read sshd's journal: " + part.stdout.strip()[-300:]
    )
    numbers = [line.strip() for line in lines if line.strip().isdigit()]
    assert numbers and int(numbers[-1]) <= 5, f"sshd jail maxretry is {numbers or 'unknown'}"
    assert any(line.strip().startswith("nftables") for line in lines), (
        "the sshd jail does not ban through nftables: " + part.stdout.strip()[-300:]
    )
