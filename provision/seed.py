"""cloud-init NoCloud seed documents rendered from the `cloudinit/` templates: pure functions.

Templates render with StrictUndefined, and every YAML document is parsed back before it is used,
so a template mistake fails here rather than on a booting node.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

from provision import hardening
from provision.hostkeys import KeyPair
from provision.model import DockerMode, Network, Node
from provision.secret import Secret

TEMPLATES = Path(__file__).resolve().parent.parent / "cloudinit"


@dataclass(frozen=True)
class Seed:
    """The three NoCloud documents. user-data holds the node's private host key."""

    user_data: Secret
    meta_data: str
    network_config: str

    def files(self) -> dict[str, Secret | str]:
        return {
            "user-data": self.user_data,
            "meta-data": self.meta_data,
            "network-config": self.network_config,
        }


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML, JSON and shell, not HTML: values are quoted with tojson
    )


def render_template(name: str, **values: object) -> str:
    return _env().get_template(name).render(**values)


def sysctl_conf(node: Node) -> str:
    return render_template("sysctl.conf.j2", sysctls=hardening.sysctls(node))


def render_seed(
    inventory: str,
    node: Node,
    network: Network,
    host_key: KeyPair,
    admin_keys: tuple[str, ...],
    instance_id: str,
) -> Seed:
    rootless = node.docker is not DockerMode.NONE
    user_data = render_template(
        "user-data.yaml.j2",
        inventory=inventory,
        node=node,
        host_key_private=host_key.private.reveal().rstrip("\n"),
        host_key_public=host_key.public,
        admin_keys=list(admin_keys),
        sysctl_conf=sysctl_conf(node).rstrip("\n"),
        docker_daemon_json=(
            render_template("daemon.json.j2").rstrip("\n")
            if node.docker is DockerMode.ROOTFUL
            else ""
        ),
        docker_rootless_script=_rootless("docker-rootless.sh.j2", node) if rootless else "",
        docker_rootless_unit=_rootless("docker-rootless.service.j2", node) if rootless else "",
        docker_rootless_env=_rootless("docker-rootless-env.sh.j2", node) if rootless else "",
    )
    meta_data = render_template("meta-data.yaml.j2", node=node, instance_id=instance_id)
    network_config = render_template("network-config.yaml.j2", node=node, network=network)
    for name, text in (
        ("user-data", user_data),
        ("meta-data", meta_data),
        ("network-config", network_config),
    ):
        _parse_back(name, text)
    if node.docker is DockerMode.ROOTFUL:
        json.loads(render_template("daemon.json.j2"))
    return Seed(Secret(user_data), meta_data, network_config)


def _rootless(template: str, node: Node) -> str:
    return render_template(template, user=node.workload_user).rstrip("\n")


def _parse_back(name: str, text: str) -> None:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # a template bug, not a user error
        raise RuntimeError(f"rendered {name} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise RuntimeError(f"rendered {name} is not a mapping")
