"""CycloneDX SBOM of a golden image's installed Debian packages, built and validated by the library.

The SBOM is generated with cyclonedx-python-lib rather than by hand, so its structure follows the
schema by construction, and it is validated against the CycloneDX JSON schema before it is kept.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from cyclonedx.exception import MissingOptionalDependencyException
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from provision.core.errors import ImageError

SCHEMA_VERSION = SchemaVersion.V1_6

# (name, version, architecture) exactly as dpkg-query reports them.
Package = tuple[str, str, str]


def package_purl(package: Package, distro: str = "debian-12") -> PackageURL:
    """The package URL of one installed Debian package (purl spec, type `deb`)."""
    name, version, arch = package
    return PackageURL(
        type="deb",
        namespace="debian",
        name=name,
        version=version,
        qualifiers={"arch": arch, "distro": distro},
    )


def sbom_json(
    packages: Iterable[Package],
    image_id: str,
    name: str,
    *,
    distro: str = "debian-12",
    timestamp: datetime | None = None,
) -> str:
    """The CycloneDX 1.6 JSON SBOM of `packages` installed in image `name` (id `image_id`).

    Deterministic for a given timestamp: the serial number is derived from the content, so the
    same packages in the same image give the same document.
    """
    packages = sorted(set(packages))
    components = []
    for package in packages:
        purl = package_purl(package, distro)
        # Debian packages are mostly libraries or applications; CycloneDX tools (syft, trivy)
        # report OS packages as `library`, and consumers match on the purl, not the type.
        components.append(
            Component(
                name=package[0],
                version=package[1],
                type=ComponentType.LIBRARY,
                purl=purl,
                bom_ref=str(purl.to_string()),
            )
        )
    image = Component(
        name=name,
        version=image_id,
        type=ComponentType.OPERATING_SYSTEM,
        bom_ref=f"image:{image_id}",
    )
    content = json.dumps([image_id, name, distro, packages], separators=(",", ":"))
    serial = uuid.UUID(hex=hashlib.sha256(content.encode()).hexdigest()[:32], version=4)
    bom = Bom(
        components=components,
        serial_number=serial,
        metadata=BomMetaData(component=image, timestamp=timestamp or datetime.now(UTC)),
    )
    bom.register_dependency(image, components)
    return str(JsonV1Dot6(bom).output_as_string(indent=2)) + "\n"


def validate_sbom(text: str) -> None:
    """Raise ImageError unless `text` is a CycloneDX 1.6 JSON document that passes the schema."""
    try:
        json.loads(text)
    except ValueError as exc:
        raise ImageError(f"SBOM is not JSON: {exc}") from exc
    try:
        error = JsonStrictValidator(SCHEMA_VERSION).validate_str(text)
    except MissingOptionalDependencyException as exc:
        raise ImageError(
            "cannot validate the SBOM: the JSON schema validator is not installed",
            hint="pip install 'cyclonedx-python-lib[json-validation]'",
        ) from exc
    if error is not None:
        raise ImageError(
            f"SBOM fails the CycloneDX {SCHEMA_VERSION.to_version()} schema: {error}",
            hint="this is a bug in provision/sbom.py; please report it with the SBOM",
        )
