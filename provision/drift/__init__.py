"""`provision drift`: what libvirt and each node report, against what the inventory renders."""
