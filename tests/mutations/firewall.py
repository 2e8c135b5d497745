"""Firewall (check_firewall.py): the loaded ruleset (`nft` verb), /etc/provision/firewall.nft
(`firewall-config`), the unit's state and what listens (`ss-listening`)."""

from tests.mutations import both, mutation, replace

NFT = ("verbs", "nft")
REPLIES_IN = '\t\toifname "docker0" ct state established,related accept\n'

MUTATIONS = [
    mutation(
        "HN-FW-01",
        "input policy accept",
        replace(
            *NFT,
            "type filter hook input priority filter; policy drop;",
            "type filter hook input priority filter; policy accept;",
        ),
    ),
    mutation(
        "HN-FW-01",
        "provision-firewall disabled",
        both(
            replace("commands", "is-enabled provision-firewall", "enabled", "disabled"),
            lambda rec: rec.part("commands", "is-enabled provision-firewall").update(rc=1),
        ),
    ),
    mutation(
        "HN-FW-01",
        "replies no longer accepted",
        replace(*NFT, "\t\tct state established,related accept\n", ""),
    ),
    mutation(
        "HN-FW-01",
        "a catch-all accept appended to input",  # policy drop stays: the check once passed it
        replace(
            *NFT,
            "\t\ttcp dport 22 accept\n",
            "\t\ttcp dport 22 accept\n\t\tcounter packets 0 bytes 0 accept\n",
        ),
    ),
    mutation(
        "HN-FW-02",
        "tcp 8080 opened inbound",
        replace(*NFT, "tcp dport 22 accept", "tcp dport { 22, 8080 } accept"),
    ),
    mutation(
        "HN-FW-02",
        "tcp 8080 opened by a counted rule",  # the check once read only `dport N accept`
        replace(
            *NFT,
            "tcp dport 22 accept\n",
            "tcp dport 22 accept\n\t\ttcp dport 8080 counter packets 0 bytes 0 accept\n",
        ),
    ),
    mutation(
        "HN-FW-03",
        "firewall.nft flushes the whole ruleset",
        replace(
            "verbs",
            "firewall-config",
            "table inet provision {}\ndelete table inet provision\n",
            "flush ruleset\n",
        ),
    ),
    mutation(
        "HN-FW-03",
        "containers cannot reach out (no docker0 forward accept)",
        replace(*NFT, '\t\tiifname "docker0" accept\n', ""),
    ),
    mutation(
        "HN-FW-04",
        "a published port accepted into docker0",
        replace(*NFT, REPLIES_IN, REPLIES_IN + '\t\toifname "docker0" tcp dport 8080 accept\n'),
    ),
    mutation(
        "HN-FW-04",
        "a catch-all accept appended to forward",  # the check once read docker0's rules only
        replace(*NFT, REPLIES_IN, REPLIES_IN + "\t\taccept\n"),
    ),
    mutation(
        "HN-FW-05",
        "docker API on 0.0.0.0:2375",
        replace("commands", "ss-listening", "0.0.0.0:22 ", "0.0.0.0:2375 "),
    ),
]
