"""The verification suite: one small pytest-testinfra test per catalogue check.

Fixtures (from `provision.verify.plugin`): `host` (testinfra over our pinned SSH, logged in as
the verifier account), `node` (the node's profile from the inventory), `facts` (root-only facts
through the node's facts helper, the verifier's only sudo right).
"""
