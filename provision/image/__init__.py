"""Golden images: build (mmdebstrap, mkfs, qemu-img through boundary.process), manifest and SBOM,
the local image store."""
