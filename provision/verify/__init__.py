"""`provision verify`: the hardening catalogue checked on running nodes over pinned SSH.

The checks are an ordinary pytest-testinfra suite (`suite/`), one small test per catalogue id,
run in-process against one node at a time through our own SSH boundary (never testinfra's
paramiko backend, which accepts unknown host keys).
"""
