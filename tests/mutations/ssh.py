"""SSH (check_ssh.py): the effective configuration `sshd -T` reports, and the host key files.

Each mutation is what a drop-in read before provision's, a re-keyed node or a package default
would leave behind; `sshd -T` is the `sshd verifier` verb.
"""

from tests.mutations import Edit, answer, both, mutation, replace, stat
from tests.recording import Recording

SSHD = ("verbs", "sshd verifier")


def sshd(old: str, new: str) -> Edit:
    """One line of `sshd -T`, whole (so `maxsessions` never matches `maxstartups`)."""
    return replace(*SSHD, f"\n{old}\n", f"\n{new}\n")


def _banner(version: str) -> Edit:
    def edit(rec: Recording) -> None:
        rec.server_version = version

    return edit


MUTATIONS = [
    mutation(
        "HN-SSH-01",
        "PermitRootLogin prohibit-password (Debian's default)",
        sshd("permitrootlogin no", "permitrootlogin without-password"),
    ),
    mutation(
        "HN-SSH-02",
        "PasswordAuthentication yes (cloud-init ssh_pwauth drop-in)",
        sshd("passwordauthentication no", "passwordauthentication yes"),
    ),
    mutation(
        "HN-SSH-02",
        "KbdInteractiveAuthentication yes",
        sshd("kbdinteractiveauthentication no", "kbdinteractiveauthentication yes"),
    ),
    mutation(
        "HN-SSH-03",
        "HostbasedAuthentication yes",
        sshd("hostbasedauthentication no", "hostbasedauthentication yes"),
    ),
    mutation("HN-SSH-04", "MaxAuthTries 6 (the default)", sshd("maxauthtries 2", "maxauthtries 6")),
    mutation(
        "HN-SSH-05",
        "MaxStartups 10:30:100 (the default)",
        sshd("maxstartups 10:30:60", "maxstartups 10:30:100"),
    ),
    mutation(
        "HN-SSH-06",
        "AllowTcpForwarding yes",
        sshd("allowtcpforwarding no", "allowtcpforwarding yes"),
    ),
    mutation(
        "HN-SSH-07",
        "aes128-cbc among the ciphers",
        replace(*SSHD, ",aes128-ctr\n", ",aes128-ctr,aes128-cbc\n"),
    ),
    mutation(
        "HN-SSH-07",
        "1024-bit moduli left in /etc/ssh/moduli",
        replace("commands", "weak-moduli", "0\n", "12\n"),
    ),
    mutation(
        "HN-SSH-08",
        "the rsa host key pair left on disk",
        both(
            replace(
                "commands",
                "ls-etc-ssh",
                "ssh_host_ed25519_key.pub\n",
                "ssh_host_ed25519_key.pub\nssh_host_rsa_key\nssh_host_rsa_key.pub\n",
            ),
            replace(
                "verbs",
                "host-keys",
                "IYIVa\n",
                "IYIVa\n/etc/ssh/ssh_host_rsa_key.pub ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQC7\n",
            ),
        ),
        also="HN-VM-03",  # its host-keys part now lists the rsa key too: not fresh per node
    ),
    mutation(
        "HN-SSH-08",
        "HostKeyAlgorithms offers rsa too",
        sshd("hostkeyalgorithms ssh-ed25519", "hostkeyalgorithms ssh-ed25519,rsa-sha2-512"),
    ),
    mutation("HN-SSH-09", "LogLevel INFO", sshd("loglevel VERBOSE", "loglevel INFO")),
    mutation(
        "HN-SSH-09",
        "ClientAliveCountMax 3 (DEVSEC's)",
        sshd("clientalivecountmax 2", "clientalivecountmax 3"),
    ),
    mutation("HN-SSH-09", "PrintLastLog no", sshd("printlastlog yes", "printlastlog no")),
    mutation("HN-SSH-09", "Compression yes", sshd("compression no", "compression yes")),
    mutation("HN-SSH-05", "MaxSessions 10", sshd("maxsessions 4", "maxsessions 10")),
    mutation(
        "HN-SSH-10",
        "sshd_config 644 (the package's mode)",
        stat("/etc/ssh/sshd_config", mode=0o644),
    ),
    mutation(
        "HN-SSH-11",
        "AllowUsers lets the workload user in too",
        sshd("allowusers verifier", "allowusers verifier\nallowusers app"),
    ),
    mutation(
        "HN-SSH-12",
        "the host key on disk is not the pinned one",
        replace(
            "verbs",
            "host-keys",
            "AAAAC3NzaC1lZDI1NTE5AAAAIGXu3Da10Zra6sSNewTxFAljFeGpd+te2emC1lcIYIVa",
            "AAAAC3NzaC1lZDI1NTE5AAAAIE8Kq3wF2nX9b7yZcR1pLmT4vHs6dJ0uQaGkNfYxWo3B",
        ),
        also="HN-VM-03",  # the same fact: the key the provisioner generated and pinned
    ),
    mutation("HN-SSH-09", "DebianBanner yes", _banner("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3")),
    mutation(
        "HN-SSH-13",
        "fail2ban stopped",
        answer("commands", "is-active fail2ban", 3, "inactive\n"),
    ),
    mutation(
        "HN-SSH-13",
        "the sshd jail allows 10 failures",
        replace("commands", "fail2ban-sshd", "\n5\n", "\n10\n"),
    ),
]
