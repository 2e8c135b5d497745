"""One module per outside system: libvirt (hypervisor), SSH (ssh), local processes (process),
the transports to remote hypervisors, this machine's devices (localhost). Facts, no decisions."""
