"""Pinned upstream checksums: well-formed, cited, unique; unknown versions and the unpinned apt
key refused; and nothing is ever fetched."""

from __future__ import annotations

import re
import socket
from collections import Counter

import pytest

from provision.core.errors import ProvisionError
from provision.kubernetes import k8s_pins
from provision.kubernetes.k8s_pins import PinError

ALL = [p for pins in k8s_pins.PINS.values() for p in pins]


@pytest.mark.parametrize("pin", ALL, ids=lambda p: f"{p.artifact}-{p.version}")
def test_every_pin_is_64_lowercase_hex(pin: k8s_pins.Pin) -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", pin.sha256)


@pytest.mark.parametrize("pin", ALL, ids=lambda p: f"{p.artifact}-{p.version}")
def test_every_pin_cites_an_https_upstream_checksum_file_and_where_it_was_read(
    pin: k8s_pins.Pin,
) -> None:
    assert pin.source_url.startswith(("https://dl.k8s.io/release/", "https://github.com/"))
    assert pin.source_url.endswith(".sha256")
    assert f"v{pin.version}" in pin.source_url
    assert pin.arch == "amd64" and "amd64" in pin.source_url
    assert re.fullmatch(
        r"kubernetes-sigs/kubespray \S+checksums\.yml @ [0-9a-f]{40}", pin.recorded_in
    )


def test_no_checksum_or_artifact_is_pinned_twice() -> None:
    assert not [s for s, n in Counter(p.sha256 for p in ALL).items() if n > 1]
    assert not [u for u, n in Counter(p.source_url for p in ALL).items() if n > 1]
    for version, pins in k8s_pins.PINS.items():
        assert sorted(p.artifact for p in pins) == sorted(k8s_pins.ARTIFACTS), version


def test_the_pinned_kubernetes_binaries_carry_the_kubernetes_version() -> None:
    for version, pins in k8s_pins.PINS.items():
        for p in pins:
            if p.artifact in ("kubeadm", "kubelet", "kubectl"):
                assert p.version == version
                assert p.download_url == (
                    f"https://dl.k8s.io/release/v{version}/bin/linux/amd64/{p.artifact}"
                )


def test_crictl_matches_the_kubernetes_minor() -> None:
    for version in k8s_pins.PINS:
        crictl = k8s_pins.pin(version, "crictl")
        assert k8s_pins.minor(crictl.version) == k8s_pins.minor(version)
        assert crictl.filename == f"crictl-v{crictl.version}-linux-amd64.tar.gz"


def test_1_34_4_is_pinned_with_the_recorded_values() -> None:
    pins = {p.artifact: p.sha256 for p in k8s_pins.pins_for("1.34.4")}
    assert pins["kubeadm"] == "b967f1fa0e36621c402d38bb560eb4a943954d5cf5a00e5150842f6f5da73455"
    assert pins["kubelet"] == "03b8fea715a7ef82eeaf518dee34c72670c57cc7bc40dc1320c04fbf4f15172f"
    assert pins["kubectl"] == "d50c359d95e0841eaad08ddc27c7be37cba8fdccfba5c8e2ded65e121ff112db"


def test_a_leading_v_is_accepted() -> None:
    assert k8s_pins.pins_for("v1.34.4") == k8s_pins.pins_for("1.34.4")


@pytest.mark.parametrize("version", ["1.34.3", "1.35.0", "1.34", "latest", ""])
def test_an_unpinned_version_is_refused_naming_the_supported_ones(version: str) -> None:
    with pytest.raises(PinError) as excinfo:
        k8s_pins.pins_for(version)
    assert f"no pinned checksums for Kubernetes {version}: supported: 1.34.4" in str(excinfo.value)
    assert isinstance(excinfo.value, ProvisionError)


def test_an_unpinned_artifact_is_refused() -> None:
    with pytest.raises(PinError, match="no pinned checksum for etcd"):
        k8s_pins.pin("1.34.4", "etcd")


def test_the_apt_repository_is_per_minor() -> None:
    assert k8s_pins.apt_repository_url("1.34.4") == "https://pkgs.k8s.io/core:/stable:/v1.34/deb/"
    with pytest.raises(PinError, match="not a Kubernetes version"):
        k8s_pins.apt_repository_url("latest")


def test_the_apt_source_is_refused_while_its_signing_key_is_not_pinned() -> None:
    assert k8s_pins.APT_SIGNING_KEY_FINGERPRINT is None
    with pytest.raises(PinError, match=r"signing-key fingerprint of \S+ is not pinned"):
        k8s_pins.apt_source("1.34.4")


def test_the_apt_source_of_an_unpinned_version_is_refused_for_the_version() -> None:
    with pytest.raises(PinError, match=r"no pinned checksums for Kubernetes 1\.30\.0"):
        k8s_pins.apt_source("1.30.0")


def test_nothing_is_read_from_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("k8s_pins must never touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    for version in k8s_pins.supported_versions():
        for p in k8s_pins.pins_for(version):
            assert k8s_pins.is_sha256(p.sha256)
            assert p.filename
        k8s_pins.apt_repository_url(version)
        with pytest.raises(PinError):
            k8s_pins.apt_source(version)
