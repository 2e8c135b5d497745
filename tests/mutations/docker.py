"""Rootful Docker (check_docker.py, check_docker_access.py): /etc/docker/daemon.json, what the
running daemon reports (`docker info`, the `docker-info` verb), the rootful container probe, and
the node facts around the daemon (unit state, listeners, audit rules, packages, the docker group).

Each mutation is what an edit of daemon.json, a docker.service drop-in, an upgrade or a stopped
daemon would leave behind. DAEMON_DOWN is `systemctl stop docker.service` as the facts helper then
answers: every verb that needs the daemon exits 3 (no evidence), and the facts that depend on it
are WARN; HN-DKR-01 is the one that FAILs, since the rootful role needs the daemon running.
"""

from tests.mutations import Edit, answer, both, content, mutation, probe, probe_exit, replace, stat
from tests.recording import Recording

DAEMON_JSON = "/etc/docker/daemon.json"
INFO = ("verbs", "docker-info")
DOWN = "verify-facts: docker.service is not active\n"  # require_rootful's answer, exit 3


def daemon_json(old: str, new: str) -> Edit:
    return content(DAEMON_JSON, old, new)


def info(old: str, new: str) -> Edit:
    return replace(*INFO, old, new)


def listen_tcp(port: int) -> Edit:
    """A TCP listener on every address, as `ss -Hltn` and `ss --numeric --listening` show it."""
    tln = "LISTEN 0      4096   127.0.0.1:34933"
    listening = "tcp   LISTEN 0      4096" + " " * 38 + "127.0.0.1:34933"
    added = f"LISTEN 0      4096   *:{port}   *:*\n"
    return both(
        replace("commands", "ss-tln", tln, added + tln),
        replace("commands", "ss-listening", listening, "tcp   " + added + listening),
    )


def drop_lines(part: tuple[str, str], *words: str) -> Edit:
    """Remove from stdout the one line that has each word as a whole (whitespace-split) field."""

    def edit(rec: Recording) -> None:
        lines = rec.part(*part)["stdout"].splitlines(True)
        for word in words:
            hits = [i for i, line in enumerate(lines) if word in line.split()]
            assert len(hits) == 1, f"{part}: {len(hits)} lines with {word!r}"
            del lines[hits[0]]
        rec.part(*part)["stdout"] = "".join(lines)

    return edit


# `systemctl stop docker.service`: docker.socket stays active (it would start the daemon again on
# the next connection, which the helper never makes), containerd keeps running, dockerd's own
# sockets go, and its iptables-nft rules stay (dockerd leaves them behind).
DAEMON_DOWN = both(
    answer("commands", "is-active docker.service", 3, "inactive\n"),
    answer("commands", "is-active docker", 3, "inactive\n"),
    answer(*INFO, 3, stderr=DOWN),
    answer("verbs", "docker-inspect rootful", 3, stderr=DOWN),
    probe_exit("rootful", 3, DOWN),
    answer("commands", "pgrep-root-dockerd", 1),
    answer("commands", "dockerd-age", 0),  # `pgrep ... || exit 0`: no root dockerd, no line
    replace("commands", "ps-comm", "systemd-journal\ndockerd\n", "systemd-journal\n"),
    drop_lines(
        ("commands", "ss-listening"),
        "/var/run/docker/metrics.sock",
        "/var/run/docker/libnetwork/abab58ef357e.sock",
    ),
)
# Every id whose evidence is the running daemon: its info, its containers, its probe, its tables.
DAEMON_DOWN_WARNS = (
    "HN-DKR-02 HN-DKR-03 HN-DKR-05 HN-DKR-07 HN-DKR-08 HN-DKR-10 HN-DKR-11 HN-DKR-13 HN-DKR-14 "
    "HN-CRT-01 HN-CRT-02 HN-CRT-03 HN-CRT-04 HN-CRT-05 HN-CRT-06 HN-CRT-07 HN-CRT-08 HN-CRT-09 "
    "HN-CRT-10 HN-CRT-11 HN-CRT-12 HN-FW-03"
)

MUTATIONS = [
    # --- HN-DKR-01 daemon.json valid, known, no flag clash, what runs; the daemon runs
    mutation(
        "HN-DKR-01",
        "hosts in daemon.json while docker.service passes -H fd://",
        daemon_json("{\n", '{\n  "hosts": ["unix:///var/run/docker.sock"],\n'),
    ),
    mutation(
        "HN-DKR-01",
        "live_restore, a key dockerd does not know",
        daemon_json('"live-restore": true', '"live_restore": true'),
    ),
    mutation(
        "HN-DKR-01",
        "daemon.json changed after dockerd started (no restart)",
        both(
            stat(DAEMON_JSON, mtime=1796168000),
            replace("commands", "dockerd-age", " 1796167693 ", " 1796168000 "),
        ),
    ),
    mutation(
        "HN-DKR-01",
        "docker.service stopped",
        DAEMON_DOWN,
        warns=DAEMON_DOWN_WARNS,
    ),
    mutation(
        "HN-DKR-01",
        "docker.service disabled (gone after a reboot)",
        answer("commands", "is-enabled docker.service", 1, "disabled\n"),
    ),
    # --- HN-DKR-02 userns-remap
    mutation(
        "HN-DKR-02",
        "container root is host root (probe)",
        probe("rootful", "host_uid", "0"),
    ),
    mutation(
        "HN-DKR-02",
        "SecurityOptions without name=userns",
        info('"name=userns",', ""),
    ),
    mutation(
        "HN-DKR-02",
        "no dockremap range in /etc/subuid",
        content("/etc/subuid", "dockremap:296608:65536\n", ""),
    ),
    mutation(
        "HN-DKR-02",
        "remapped root dir 0711 (others may enter)",
        stat("/var/lib/docker/296608.296608", mode=0o711),
    ),
    # --- HN-DKR-03 icc
    mutation("HN-DKR-03", "icc true", daemon_json('"icc": false', '"icc": true')),
    mutation(
        "HN-DKR-03",
        "no docker0-to-docker0 drop in the ruleset",
        replace(
            "verbs",
            "nft",
            '\t\tiifname "docker0" oifname "docker0" counter packets 0 bytes 0 drop\n',
            "",
        ),
    ),
    # --- HN-DKR-04..08 daemon defaults
    mutation(
        "HN-DKR-04",
        "no-new-privileges false",
        daemon_json('"no-new-privileges": true', '"no-new-privileges": false'),
    ),
    mutation(
        "HN-DKR-05",
        "LiveRestoreEnabled false",
        info('"LiveRestoreEnabled":true', '"LiveRestoreEnabled":false'),
    ),
    mutation(
        "HN-DKR-06",
        "userland-proxy true",
        daemon_json('"userland-proxy": false', '"userland-proxy": true'),
    ),
    mutation(
        "HN-DKR-07",
        "log-level debug",
        daemon_json('"log-level": "info"', '"log-level": "debug"'),
    ),
    mutation(
        "HN-DKR-07", "the daemon in debug mode", info('"Debug":false,"NFd"', '"Debug":true,"NFd"')
    ),
    mutation(
        "HN-DKR-07",
        "log driver none",
        info('"LoggingDriver":"local"', '"LoggingDriver":"none"'),
    ),
    mutation(
        "HN-DKR-08",
        "insecure-registries in daemon.json",
        daemon_json("{\n", '{\n  "insecure-registries": ["registry.lan:5000"],\n'),
    ),
    mutation(
        "HN-DKR-08",
        "an insecure registry the daemon uses",
        info('"InsecureRegistryCIDRs":["127.0.0.0/8"]', '"InsecureRegistryCIDRs":["10.0.0.0/8"]'),
    ),
    # --- HN-DKR-09 no plain TCP API
    mutation(
        "HN-DKR-09",
        "something listens on TCP 2375",
        both(
            listen_tcp(2375),
        ),
        also="HN-FW-05",
    ),
    mutation(
        "HN-DKR-09",
        "a drop-in adds -H tcp://0.0.0.0:2376 without tlsverify",
        both(
            replace("commands", "docker-execstart", "-H fd://", "-H fd:// -H tcp://0.0.0.0:2376"),
            listen_tcp(2376),
        ),
        also="HN-FW-05",
    ),
    # --- HN-DKR-10 seccomp
    mutation(
        "HN-DKR-10",
        "the daemon's seccomp profile unconfined",
        info("name=seccomp,profile=default", "name=seccomp,profile=unconfined"),
    ),
    mutation(
        "HN-DKR-10",
        "the probe container without seccomp",
        probe("rootful", "seccomp", "0"),
    ),
    # --- HN-DKR-11 cgroup parent, ulimits, API access
    mutation(
        "HN-DKR-11",
        "cgroup-parent in daemon.json",
        daemon_json("{\n", '{\n  "cgroup-parent": "/docker-parent",\n'),
    ),
    mutation(
        "HN-DKR-11",
        "unlimited nofile in default-ulimits",
        daemon_json(
            "{\n",
            '{\n  "default-ulimits": {"nofile": {"Name": "nofile", "Hard": -1, "Soft": -1}},\n',
        ),
    ),
    # --- HN-DKR-12 audit watches
    mutation(
        "HN-DKR-12",
        "no audit watch on /usr/sbin/runc",
        replace("verbs", "audit-rules", "-w /usr/sbin/runc -p wa -k docker\n", ""),
    ),
    # --- HN-DKR-13..15
    mutation(
        "HN-DKR-13",
        "docker info warns: no swap limit support",
        both(
            info('"SwapLimit":true', '"SwapLimit":false'),
            info(
                '"Warnings":null,"ClientInfo"',
                '"Warnings":["WARNING: No swap limit support"],"ClientInfo"',
            ),
        ),
    ),
    mutation(
        "HN-DKR-14",
        "Swarm active",
        info('"LocalNodeState":"inactive"', '"LocalNodeState":"active"'),
    ),
    mutation(
        "HN-DKR-15",
        "docker.io before the deb12u1 security update",
        replace("commands", "dpkg", "20.10.24+dfsg1-1+deb12u1+b6", "20.10.24+dfsg1-1+b3"),
    ),
    # --- HN-USR-07 the docker group (its members have the whole API: no authorization plugin)
    mutation(
        "HN-USR-07",
        "the admin in the docker group",
        both(
            replace("commands", "getent-group-docker", "docker:x:102:", "docker:x:102:ops"),
            replace("commands", "getent-group", "\ndocker:x:102:\n", "\ndocker:x:102:ops\n"),
        ),
        also="HN-DKR-11",
    ),
]
