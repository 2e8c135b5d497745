"""Users, authentication and sudo (check_users.py): the passwd and group databases, `passwd -S`,
login.defs, the sudoers verbs and what `sudo -n -l` lists to the verifier."""

from tests.mutations import Edit, both, content, mutation, replace, stat
from tests.mutations.filesystem import a_file, lists
from tests.recording import Recording


def sudo_l(old: str, new: str) -> Edit:
    """Edit what `sudo -n -l` lists to the verifier."""

    def edit(rec: Recording) -> None:
        assert old in rec.sudo_l, f"sudo -n -l has no {old!r}"
        rec.sudo_l = rec.sudo_l.replace(old, new)

    return edit


def visudo_fails(stderr: str) -> Edit:
    def edit(rec: Recording) -> None:
        part = rec.part("verbs", "sudoers-check")
        part["rc"], part["stderr"] = 1, stderr

    return edit


PASSWD_END = "dockremap:x:102:109::/nonexistent:/bin/false\n"
DEFAULTS_END = "logfile=/var/log/sudo.log, !requiretty\n"

MUTATIONS = [
    mutation(
        "HN-USR-01",
        "a second UID 0 account",
        replace(
            "commands", "getent-passwd", PASSWD_END, PASSWD_END + "toor:x:0:0::/root:/bin/sh\n"
        ),
    ),
    mutation(
        "HN-USR-01",
        "dockremap's group given docker's GID",
        replace("commands", "getent-group", "dockremap:x:109:", "dockremap:x:102:"),
    ),
    mutation(
        "HN-USR-02",
        "the root password set",
        replace("verbs", "password-status", "root L 2023-11-14", "root P 2023-11-14"),
    ),
    mutation(
        "HN-USR-03",
        "games has an empty password",
        both(
            lists("verbs", "empty-passwords", "games\n"),
            replace("verbs", "password-status", "games L ", "games NP "),
        ),
    ),
    mutation(
        "HN-USR-03",
        "a password hash in /etc/passwd",
        replace("commands", "getent-passwd", "games:x:5:", "games:$6$Vt9Kq$Zr8:5:"),
    ),
    mutation("HN-USR-04", "/etc/shadow world-readable", stat("/etc/shadow", mode=0o644)),
    mutation(
        "HN-USR-04",
        "/etc/gshadow owned by group root",
        stat("/etc/gshadow", group="root", gid=0),
    ),
    mutation(
        "HN-USR-05",
        "PASS_MAX_DAYS 99999 (Debian's default)",
        content("/etc/login.defs", "PASS_MAX_DAYS\t60", "PASS_MAX_DAYS\t99999"),
    ),
    mutation(
        "HN-USR-05",
        "the verifier's password expires after 60 days",
        replace(
            "verbs", "password-status", "verifier L 2026-12-01 0 -1", "verifier L 2026-12-01 0 60"
        ),
    ),
    mutation(
        "HN-USR-06",
        "Defaults !use_pty in a later drop-in",
        sudo_l(DEFAULTS_END, DEFAULTS_END.replace("\n", ", !use_pty\n")),
    ),
    mutation(
        "HN-USR-06",
        "Defaults !logfile in a later drop-in",
        sudo_l(DEFAULTS_END, DEFAULTS_END.replace("\n", ", !logfile\n")),
    ),
    mutation(
        "HN-USR-06",
        "Defaults !authenticate in a later drop-in",
        sudo_l(DEFAULTS_END, DEFAULTS_END.replace("\n", ", !authenticate\n")),
    ),
    mutation(
        "HN-USR-06",
        "a sudoers drop-in visudo rejects",
        visudo_fails("/etc/sudoers.d/99-local:1:12: syntax error\nALL ALL=(ALL NOPASSWD: ALL\n"),
    ),
    mutation(
        "HN-USR-06",
        "NOPASSWD for the workload user",
        replace(
            "verbs",
            "sudoers-nopasswd",
            "NOPASSWD:ALL\n",
            "NOPASSWD:ALL\n/etc/sudoers.d/91-app:app ALL=(ALL) NOPASSWD:ALL\n",
        ),
    ),
    mutation(
        "HN-USR-08",
        "the workload user's subuid range overlaps ops's",
        content("/etc/subuid", "app:165536:65536", "app:100000:65536"),
    ),
    mutation(
        "HN-USR-08",
        "no lingering for the workload user",
        replace("commands", "linger", "Linger=yes", "Linger=no"),
        also="HN-DKRL-03",  # the same `loginctl show-user` answer: the user service needs it
    ),
    mutation("HN-USR-09", "/root/.rhosts", a_file("/root/.rhosts", 0o600)),
    mutation(
        "HN-USR-09",
        "a .netrc in the admin's home",
        a_file("/home/ops/.netrc", 0o600, user="ops", group="ops", uid=1000, gid=1000),
    ),
    mutation("HN-USR-09", "/etc/hosts.equiv", a_file("/etc/hosts.equiv", 0o644)),
    mutation(
        "HN-USR-10",
        "pam_pwquality gone from common-password",
        content("/etc/pam.d/common-password", "pam_pwquality.so", "pam_permit.so"),
    ),
    mutation(
        "HN-USR-10",
        "a later pwquality file lowers minlen",
        replace("commands", "pwquality-config", "minlen = 14\n", "minlen = 14\nminlen = 8\n"),
    ),
    mutation(
        "HN-USR-10",
        "pam_tmpdir gone from common-session",
        content("/etc/pam.d/common-session", "pam_tmpdir.so", "pam_env.so"),
    ),
    mutation(
        "HN-USR-11",
        "a session may dump core",
        replace("commands", "ulimit-core", "0\n0\n", "unlimited\n0\n"),
    ),
    mutation(
        "HN-USR-11",
        "systemd-coredump would store dumps",
        replace("commands", "coredump-config", "Storage=none", "Storage=external"),
    ),
    mutation("HN-USR-12", "the workload user's home 0755", stat("/home/app", mode=0o755)),
    mutation(
        "HN-USR-12",
        "the admin's home owned by root",
        stat("/home/ops", user="root", group="root", uid=0, gid=0),
    ),
    mutation(
        "HN-USR-13",
        "/etc/issue.net names the OS",
        content("/etc/issue.net", "Authorized access only.", "Debian GNU/Linux 12. Authorized."),
    ),
    mutation(
        "HN-USR-13",
        "/etc/issue is Debian's",
        lambda rec: rec.file("/etc/issue").update(content="Debian GNU/Linux 12 \\n \\l\n\n"),
    ),
    mutation("HN-USR-14", "TMOUT not readonly", content("/etc/profile", "readonly TMOUT\n", "")),
]
