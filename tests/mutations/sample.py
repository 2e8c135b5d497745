"""The first mutations, moved from tests/test_verify_snapshot.py."""

from tests.mutations import mutation, replace, sysctl

MUTATIONS = [
    mutation("HN-SYS-01", "kptr_restrict 1", sysctl("kernel.kptr_restrict", "1")),
    mutation(
        "HN-FW-05",
        "docker API on 0.0.0.0:2375",
        replace("commands", "ss-listening", "0.0.0.0:22 ", "0.0.0.0:2375 "),
    ),
]
