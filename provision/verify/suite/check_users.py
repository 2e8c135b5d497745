"""A.4 Users, authentication and sudo (HN-USR-07, the docker group, is with the Docker checks)."""

from __future__ import annotations

import pytest
from testinfra.host import Host

from provision.baseline import hardening
from provision.verify.checks import check
from provision.verify.parse import sudo_defaults
from provision.verify.plugin import Facts, FactsError, Profile
from provision.verify.snapshot import Snapshot

ACCOUNTS_FIX = "Accounts come from the seed's users: section; re-provision rather than edit."


def _passwd(snap: Snapshot) -> list[list[str]]:
    return [line.split(":") for line in str(snap.output("getent-passwd")).splitlines()]


@check(
    "HN-USR-01",
    "Ensure only root has UID 0 and UIDs and GIDs are unique",
    level="L1",
    severity="crit",
    remediation=ACCOUNTS_FIX,
)
def test_unique_ids(snap: Snapshot) -> None:
    rows = _passwd(snap)
    root_ids = [r[0] for r in rows if r[2] == "0"]
    assert root_ids == ["root"], f"UID 0 accounts: {root_ids}"
    uids = [r[2] for r in rows]
    assert len(uids) == len(set(uids)), "duplicate UIDs in /etc/passwd"
    gids = [line.split(":")[2] for line in str(snap.output("getent-group")).splitlines()]
    assert len(gids) == len(set(gids)), "duplicate GIDs in /etc/group"


def _status(facts: Facts) -> dict[str, list[str]]:
    """`passwd -S -a`: name -> [status, changed, min, max, warn, inactive]."""
    return {f[0]: f[1:] for f in (line.split() for line in facts("password-status").splitlines())}


@check(
    "HN-USR-02",
    "Ensure the root password is locked",
    level="L1",
    severity="high",
    remediation="passwd -l root (the provisioner's hardening script does it at first boot).",
)
def test_root_locked(facts: Facts) -> None:
    status = _status(facts)["root"][0]
    assert status == "L", f"root password status is {status}, expected L (locked)"


@check(
    "HN-USR-03",
    "Ensure no account has an empty or unshadowed password",
    level="L1",
    severity="crit",
    remediation="Lock the accounts listed (passwd -l).",
)
def test_no_empty_passwords(snap: Snapshot, facts: Facts) -> None:
    empty = facts("empty-passwords").split()
    assert not empty, f"empty passwords: {empty}"
    unshadowed = [r[0] for r in _passwd(snap) if r[1] != "x"]
    assert not unshadowed, f"passwords in /etc/passwd: {unshadowed}"


@check(
    "HN-USR-04",
    "Ensure account database file modes",
    level="L1",
    severity="high",
    remediation="chown/chmod as expected (Debian: shadow files are root:shadow 0640).",
)
@pytest.mark.parametrize(
    "path,owner,mode",
    [
        ("/etc/passwd", "root:root", 0o644),
        ("/etc/group", "root:root", 0o644),
        ("/etc/shadow", "root:shadow", 0o640),
        ("/etc/gshadow", "root:shadow", 0o640),
    ],
)
def test_account_file_modes(snap: Snapshot, path: str, owner: str, mode: int) -> None:
    f = snap.file(path)
    assert f"{f.user}:{f.group}" == owner, f"{path} is {f.user}:{f.group}, expected {owner}"
    assert f.mode == mode, f"{path} is {f.mode:o}, expected {mode:o}"


LOGIN_DEFS = {
    "UMASK": "027",
    "PASS_MAX_DAYS": "60",
    "PASS_MIN_DAYS": "7",
    "PASS_WARN_AGE": "7",
    "LOGIN_RETRIES": "5",
    "LOGIN_TIMEOUT": "60",
    "SHA_CRYPT_MIN_ROUNDS": "100000",
    "SHA_CRYPT_MAX_ROUNDS": "100000",
    "HOME_MODE": "0750",
}
USR_05 = check(
    "HN-USR-05",
    "Ensure login.defs policy, and no password ageing on the automation accounts",
    level="L1",
    severity="low",
    remediation="login.defs is set by /usr/local/sbin/provision-harden; automation accounts "
    "need `chage -M -1` or ageing locks them out.",
)


@USR_05
@pytest.mark.parametrize("key,value", sorted(LOGIN_DEFS.items()))
def test_login_defs(snap: Snapshot, key: str, value: str) -> None:
    lines = str(snap.file("/etc/login.defs").content_string).splitlines()
    found = [
        line.split()[1] for line in lines if line.split()[:1] == [key] and len(line.split()) > 1
    ]
    assert found == [value], f"{key} is {found or 'unset'}, expected {value}"


@USR_05
def test_no_ageing_on_automation_accounts(facts: Facts, node: Profile) -> None:
    status = _status(facts)
    for user in (node.admin, hardening.VERIFIER_USER, node.workload_user):
        assert user in status, f"{user} has no account"
        state, _changed, _min, max_days = status[user][:4]
        assert state == "L", f"{user}'s password is not locked ({state})"
        assert max_days in ("-1", "99999"), f"{user}'s password expires after {max_days} days"


USR_06 = check(
    "HN-USR-06",
    "Ensure sudo logs, uses a pty, parses cleanly and grants NOPASSWD only to named accounts",
    level="L1",
    severity="high",
    remediation="sudoers drop-ins come from the seed (10-provision-defaults, "
    "60-provision-verifier); remove other NOPASSWD grants.",
)


@USR_06
def test_sudoers_parse(snap: Snapshot) -> None:
    r = snap.verb("sudoers-check")  # `visudo -c -q` as root, in the snapshot
    if r is None:
        raise FactsError("the snapshot has no sudoers-check")
    assert r.rc == 0, f"visudo -c fails: {r.stderr.strip()}"


@USR_06
def test_sudo_defaults(host: Host) -> None:
    # `sudo -l` lists the Defaults that apply to the caller without needing any other right.
    # Judged entry by entry, last one winning: `Defaults !use_pty` after `use_pty` is off, and
    # a substring match would have passed it (issue #13).
    # Live, as the verifier itself: the one non-container command outside the snapshot.
    r = host.run("sudo -n -l")
    if r.rc != 0:
        raise FactsError(f"sudo -n -l exited {r.rc}: {r.stderr.strip()[-300:]}")
    defaults = sudo_defaults(str(r.stdout))
    if defaults is None:
        raise FactsError("sudo -n -l listed no Defaults paragraph: no evidence either way")
    assert defaults.get("use_pty") is True, f"Defaults use_pty is {defaults.get('use_pty')!r}"
    logfile = defaults.get("logfile")
    assert logfile == "/var/log/sudo.log", f"Defaults logfile is {logfile!r}"
    # `!authenticate` makes every sudo rule NOPASSWD, whoever it names.
    assert defaults.get("authenticate") is not False, "Defaults !authenticate: sudo asks no one"


@USR_06
def test_nopasswd_only_for_named_accounts(facts: Facts, node: Profile) -> None:
    allowed = {node.admin, hardening.VERIFIER_USER}
    grants = []
    for line in facts("sudoers-nopasswd").splitlines():
        _file, _, rule = line.partition(":")
        if rule.lstrip().startswith("#"):
            continue
        grants.append(rule.split()[0])
    unexpected = sorted(set(grants) - allowed)
    assert not unexpected, f"NOPASSWD granted to {unexpected}"


@check(
    "HN-USR-08",
    "Ensure the rootless user is a normal account with its own 65536 subordinate IDs and linger",
    level="L1",
    severity="high",
    roles="rootless",
    remediation="Create the workload user as a normal account (not system: true); useradd gives "
    "it a subuid/subgid range; loginctl enable-linger.",
)
def test_rootless_user(snap: Snapshot, node: Profile) -> None:
    entry = [r for r in _passwd(snap) if r[0] == node.workload_user]
    assert entry, f"{node.workload_user} does not exist"
    uid = int(entry[0][2])
    assert uid >= 1000, f"{node.workload_user} is a system account (uid {uid})"
    for path in ("/etc/subuid", "/etc/subgid"):
        ranges = [
            line.split(":") for line in str(snap.file(path).content_string).splitlines() if line
        ]
        mine = [(int(r[1]), int(r[2])) for r in ranges if r[0] == node.workload_user]
        assert mine, f"{node.workload_user} has no range in {path}"
        start, count = mine[0]
        assert count >= 65536, f"{path}: only {count} ids for {node.workload_user}"
        assert start >= 65536, f"{path}: range starts at {start}, below real UIDs"
        for other in ranges:
            if other[0] == node.workload_user:
                continue
            o_start, o_count = int(other[1]), int(other[2])
            overlap = start < o_start + o_count and o_start < start + count
            assert not overlap, f"{path}: {node.workload_user}'s range overlaps {other[0]}'s"
    linger = snap.output("linger")  # `loginctl show-user USER -p Linger`
    assert linger == "Linger=yes", f"{node.workload_user}: {linger}"


@check(
    "HN-USR-09",
    "Ensure no hosts.equiv, .rhosts or .netrc trust files",
    level="L1",
    severity="med",
    remediation="Delete the files listed.",
)
def test_no_trust_files(snap: Snapshot, node: Profile) -> None:
    assert not snap.file("/etc/hosts.equiv").exists, "/etc/hosts.equiv exists"
    homes = ["/root"] + [r[5] for r in _passwd(snap) if r[5].startswith("/home/")]
    candidates = [f"{h}/{name}" for h in homes for name in (".rhosts", ".netrc", ".shosts")]
    present = [c for c in candidates if snap.file(c).present]  # root's lstat, as `exists`
    assert not present, f"trust files present: {present}"


# --- HN-USR-10 PAM password quality and private temporary directories ------------------------

# Written out from the catalogue, not imported from hardening.PWQUALITY: a value dropped from
# the renderer's table must fail here, not silently shrink the check.
PWQUALITY = {
    "minlen": "14",
    "minclass": "4",
    "maxrepeat": "3",
    "maxsequence": "3",
    "dictcheck": "1",
    "enforce_for_root": "",
}
PAM_FIX = (
    "libpam-pwquality and libpam-tmpdir are in the golden image (pam-auth-update adds them); "
    "the policy is /etc/security/pwquality.conf.d/60-provision.conf from the seed."
)
USR_10 = check(
    "HN-USR-10",
    "Ensure PAM checks password quality and gives each login a private temporary directory",
    level="L2",
    severity="low",
    remediation=PAM_FIX,
)


def pam_modules(text: str, kind: str) -> list[str]:
    """The modules of `kind` (password, session...) a pam.d file uses, in order: comments and
    other kinds left out, `-` (optional) prefixes dropped."""
    found = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 3 and words[0].lstrip("-") == kind:
            module = words[2] if not words[1].startswith("[") else _after_bracket(words)
            found.append(module.rsplit("/", 1)[-1])
    return found


def _after_bracket(words: list[str]) -> str:
    """The module after a `[value=action ...]` control, which may span several words."""
    for i, word in enumerate(words[1:], 1):
        if word.endswith("]"):
            return words[i + 1] if i + 1 < len(words) else ""
    return ""


def pwquality_settings(text: str) -> dict[str, str]:
    """pwquality.conf lines, later ones winning: `key = value`, or a bare `key` (a flag)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@USR_10
def test_pwquality_in_the_password_stack(snap: Snapshot) -> None:
    modules = pam_modules(snap.file("/etc/pam.d/common-password").content_string, "password")
    assert "pam_pwquality.so" in modules, f"common-password runs {modules}, no pam_pwquality"
    assert modules.index("pam_pwquality.so") < modules.index("pam_unix.so"), (
        "pam_pwquality runs after pam_unix: the password is stored before it is judged"
    )


@USR_10
@pytest.mark.parametrize("key,value", sorted(PWQUALITY.items()))
def test_pwquality_policy(snap: Snapshot, key: str, value: str) -> None:
    found = pwquality_settings(snap.output("pwquality-config")).get(key)
    assert found == value, f"pwquality {key} is {found!r}, expected {value!r}"


@USR_10
def test_private_tmpdir_per_session(snap: Snapshot) -> None:
    modules = pam_modules(snap.file("/etc/pam.d/common-session").content_string, "session")
    assert "pam_tmpdir.so" in modules, f"common-session runs {modules}, no pam_tmpdir"


# --- HN-USR-11 core dumps --------------------------------------------------------------------

USR_11 = check(
    "HN-USR-11",
    "Ensure no process can write a core dump",
    level="L1",
    severity="med",
    remediation="/etc/security/limits.d/60-provision-core.conf (`* hard core 0`), "
    "/etc/systemd/coredump.conf.d/60-provision.conf and /etc/profile.d/provision-core.sh "
    "come from the seed.",
)


@USR_11
def test_session_core_limit(snap: Snapshot) -> None:
    # A sudo session runs pam_limits like a login: what limits.d gives every session.
    hard, soft = [*snap.output("ulimit-core").split(), "?", "?"][:2]
    assert (hard, soft) == ("0", "0"), f"a session's core limit is hard {hard}, soft {soft}"


@USR_11
def test_coredump_stores_nothing(snap: Snapshot) -> None:
    settings: dict[str, str] = {}
    for line in snap.output("coredump-config").splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith(("#", ";")):
            settings[key.strip()] = value.strip()  # later files win, as systemd reads them
    assert settings.get("Storage") == "none", f"coredump Storage={settings.get('Storage')}"
    assert settings.get("ProcessSizeMax") == "0", (
        f"coredump ProcessSizeMax={settings.get('ProcessSizeMax')}"
    )


# --- HN-USR-12 home directories --------------------------------------------------------------


@check(
    "HN-USR-12",
    "Ensure home directories are 0750 or stricter and owned by their users",
    level="L1",
    severity="low",
    remediation="chmod 0750 the homes listed and chown them to their users "
    "(provision-harden does it at first boot; login.defs HOME_MODE 0750 covers new ones).",
)
def test_home_directories(snap: Snapshot) -> None:
    homes = {r[5]: r[0] for r in _passwd(snap) if len(r) > 5 and r[5].startswith("/home/")}
    assert homes, "no account has a home under /home"
    problems = []
    for home, user in sorted(homes.items()):
        f = snap.file(home)
        if not f.exists:
            continue  # an account without a home has nothing to expose
        if f.mode & 0o027:
            problems.append(f"{home} is {f.mode:o}")
        if f.user != user:
            problems.append(f"{home} is owned by {f.user}, not {user}")
    assert not problems, "; ".join(problems)


# --- HN-USR-13 legal banners -----------------------------------------------------------------

# agetty escapes and words that name the system; an attacker learns nothing before logging in.
REVEALING = ("\\s", "\\r", "\\v", "\\m", "\\n", "\\l", "Debian", "Linux", "GNU")


@check(
    "HN-USR-13",
    "Ensure a legal banner before login that names no OS, version or host",
    level="L1",
    severity="low",
    remediation="/etc/issue and /etc/issue.net come from the seed (hardening.LOGIN_BANNER).",
)
@pytest.mark.parametrize("path", ["/etc/issue", "/etc/issue.net"])
def test_login_banner(snap: Snapshot, path: str) -> None:
    text = snap.file(path).content_string
    assert "authorized" in text.lower(), f"{path} has no legal banner: {text.strip()[:80]!r}"
    shown = [w for w in REVEALING if w in text]
    assert not shown, f"{path} tells who the system is: {shown}"


# --- HN-USR-14 idle shells -------------------------------------------------------------------


@check(
    "HN-USR-14",
    "Ensure idle interactive shells end (readonly TMOUT=900 in /etc/profile)",
    level="L2",
    severity="low",
    remediation="provision-harden appends the block to /etc/profile; re-run it or re-provision.",
)
def test_shell_timeout(snap: Snapshot) -> None:
    text = snap.file("/etc/profile").content_string
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    values = [line.split("=", 1)[1] for line in lines if line.startswith("TMOUT=")]
    assert values[-1:] == ["900"], f"TMOUT is {values or 'unset'} in /etc/profile"
    assert "readonly TMOUT" in lines, "TMOUT is not readonly: a user's shell can unset it"
    assert "export TMOUT" in lines, "TMOUT is not exported"
