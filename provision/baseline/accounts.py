"""Login, PAM, shell and banner decisions (HN-USR-05, HN-USR-10..14): pure data.

The seed renders them (login.defs by provision-harden, pwquality.conf.d, /etc/issue*,
/etc/profile's TMOUT); the checks in provision/verify/suite/check_users.py write the same
values out on their own, so a value dropped here fails there.
"""

from __future__ import annotations

# /etc/login.defs, set key by key by provision-harden (HN-USR-05). SHA_CRYPT rounds: what
# chpasswd and newusers hash with (ENCRYPT_METHOD SHA512 is Debian's; pam_unix itself uses
# yescrypt); Lynis AUTH-9230 asks for at least 5000. HOME_MODE: homes made later are 0750.
LOGIN_DEFS: tuple[tuple[str, str], ...] = (
    ("UMASK", "027"),
    ("PASS_MAX_DAYS", "60"),
    ("PASS_MIN_DAYS", "7"),
    ("PASS_WARN_AGE", "7"),
    ("LOGIN_RETRIES", "5"),
    ("LOGIN_TIMEOUT", "60"),
    ("SHA_CRYPT_MIN_ROUNDS", "100000"),
    ("SHA_CRYPT_MAX_ROUNDS", "100000"),
    ("HOME_MODE", "0750"),
)
HOME_MODE = "0750"  # existing homes too (Lynis HOME-9304): no other user reads into them

# pam_pwquality's policy for any password ever set (HN-USR-10): CIS Debian 12 5.3.3.2. No
# account has a usable password today (all locked, SSH keys only); this guards the day an
# operator sets one for console access.
PWQUALITY: tuple[tuple[str, str], ...] = (
    ("minlen", "14"),
    ("minclass", "4"),
    ("maxrepeat", "3"),
    ("maxsequence", "3"),
    ("dictcheck", "1"),
    ("enforce_for_root", ""),
)

# Idle interactive shells end after 15 minutes (CIS Debian 12 5.4.3.2, Lynis SHLL-6220): set
# readonly in /etc/profile, where both look. Commands over SSH never read it.
SHELL_TIMEOUT_S = 900

# Legal banner before login (Lynis BANN-7126/7130, CIS 1.7): /etc/issue (console) and
# /etc/issue.net (network logins). No OS name or version: that only helps an attacker.
LOGIN_BANNER = (
    "Authorized access only. This system is monitored and all activity is logged;\n"
    "unauthorized use is prohibited and may be prosecuted.\n"
)
