"""Making nodes match the inventory: preparing hypervisors, the per-node step planner and its
executor, fleets in parallel, post-boot playbooks, down and status."""
