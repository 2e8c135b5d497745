"""Desired state, pure: domain/pool/volume XML, the cloud-init seed, host-key material, the update
policy and the plan (rendered state compared with libvirt's facts). Nothing here talks to
libvirt, SSH or local processes."""
