"""One node's convergence: read the facts, take the steps converge.steps decides, run them.

The loop below decides nothing: it maps each step to its boundary calls (libvirt, SSH) inside the
step's event envelope, so the events (and where an interrupted run stops: the fleet's Guard turns
the next event into Interrupted) follow the steps.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from provision.boundary import hypervisor, ssh
from provision.converge import steps
from provision.converge.pool import pool_op
from provision.converge.steps import Definition, Kind, Options, Step
from provision.core.errors import ProvisionError
from provision.core.events import Emit, Event, phase
from provision.core.model import Inventory
from provision.desired import domain, render, seed, seediso
from provision.desired.plan import NodePlan
from provision.state import workspace

SSH_DEADLINE_S = 600.0  # TCG boots take ~35 s here; a loaded CI machine can take several times that
CLOUD_INIT_TIMEOUT_S = 900.0
SHUTDOWN_TIMEOUT_S = 180.0  # an ACPI power-off under TCG takes 10-30 s here
SEED_TARGET = "vdb"


def converge_node(
    conn: hypervisor.Connection,
    inv: Inventory,
    r: render.NodeRender,
    p: NodePlan,
    emit: Emit,
    opts: Options,
) -> bool:
    """Apply the node's plan; True if anything changed."""
    refused = steps.refusal(p, opts)
    if refused is not None:
        run_step(conn, inv, r, refused, emit)  # raises; a refusal needs no facts from libvirt
    name, pool = r.node.name, r.hypervisor.pool_name
    # Read now, not taken from the plan: the plan was made before the hypervisor was prepared,
    # and the steps must follow the domain and the pool as they are when the node's turn comes.
    fact = conn.domain(name)
    with pool_op(inv, conn, pool, emit, name, "list volumes"):
        volumes = conn.volumes(pool)
    todo = steps.node_steps(p, fact, volumes.keys(), opts, steps.node_disks(r.node))
    for step in todo:
        run_step(conn, inv, r, step, emit)
    return steps.changed(todo)


def run_step(
    conn: hypervisor.Connection, inv: Inventory, r: render.NodeRender, step: Step, emit: Emit
) -> None:
    """The boundary calls of one step, inside its envelope (a phase or a pool operation)."""
    name, pool = r.node.name, r.hypervisor.pool_name
    with _envelope(conn, inv, r, step, emit):
        match step.kind:
            case Kind.REFUSE:
                raise step.error(step.detail, hint=step.hint)
            case Kind.NOTE:
                emit(Event(name, "converge", "info", detail=step.detail))
            case Kind.REMOVE_DOMAIN:
                conn.stop(name)
                conn.undefine(name)
            case Kind.DELETE_ROOT_AND_SEED:
                for volume in step.volumes:
                    conn.delete_volume(pool, volume)
            case Kind.CREATE_DATA_DISK:
                conn.create_volume(pool, domain.data_volume_xml(r.node))
            case Kind.CREATE_ROOT_OVERLAY:
                conn.create_volume(pool, r.overlay_xml)
            case Kind.REPLACE_SEED:
                for volume in step.volumes:  # maybe a partial upload; ours, and re-made here
                    conn.delete_volume(pool, volume)
                upload_seed(conn, r)
            case Kind.DEFINE:
                conn.define(_definition(r, step))
            case Kind.REDEFINE:
                conn.define(_definition(r, step))
                if step.live_metadata:
                    conn.set_metadata(name, domain.metadata_xml(r.meta))
            case Kind.SHUTDOWN:
                if not conn.shutdown(name, SHUTDOWN_TIMEOUT_S):
                    emit(Event(name, "shutdown", "warn", detail="no ACPI power-off: forced"))
            case Kind.START:
                conn.start(name)
            case Kind.WAIT_SSH:
                wait_ssh(inv, r, emit).close()
            case Kind.FINISH_FIRST_BOOT:
                finish_first_boot(conn, inv, r, emit)


def _envelope(
    conn: hypervisor.Connection, inv: Inventory, r: render.NodeRender, step: Step, emit: Emit
) -> AbstractContextManager[None]:
    envelope = step.envelope
    if envelope is None:
        return nullcontext()
    name, detail = envelope
    if name == "pool":
        return pool_op(inv, conn, r.hypervisor.pool_name, emit, r.node.name, detail)
    return phase(emit, r.node.name, name, detail)


def _definition(r: render.NodeRender, step: Step) -> str:
    return r.booted_xml if step.definition is Definition.BOOTED else r.domain_xml


def finish_first_boot(
    conn: hypervisor.Connection, inv: Inventory, r: render.NodeRender, emit: Emit
) -> None:
    """Wait for SSH and cloud-init, then make sure first-boot work never runs again."""
    name = r.node.name
    session = wait_ssh(inv, r, emit)
    try:
        with phase(emit, name, "cloud-init"):
            wait_cloud_init(session, name)
        with phase(emit, name, "first-boot-done"):
            # A later boot must not regenerate keys or re-run first-boot work.
            session.run(["sudo", "touch", seed.FIRST_BOOT_DONE])
            conn.detach_disk(name, SEED_TARGET)
        with pool_op(inv, conn, r.hypervisor.pool_name, emit, name, "delete seed"):
            conn.delete_volume(r.hypervisor.pool_name, domain.seed_volume(r.node))  # host key
    finally:
        session.close()


def upload_seed(conn: hypervisor.Connection, r: render.NodeRender) -> None:
    with tempfile.TemporaryDirectory(prefix="provision-seed-") as tmp:
        os.chmod(tmp, 0o700)
        path = seediso.write_seed(Path(tmp) / "seed.img", r.seed)
        volume = domain.seed_volume(r.node)
        conn.upload(r.hypervisor.pool_name, volume, path, domain.raw_volume_xml(volume, 0, "0600"))


def wait_ssh(
    inv: Inventory, r: render.NodeRender, emit: Emit, deadline_s: float = SSH_DEADLINE_S
) -> ssh.Session:
    target = workspace.ssh_target(inv, r)
    name = r.node.name
    with phase(emit, name, "ssh", f"{target.host}:{target.port}"):
        try:
            return ssh.wait_for_ssh(
                target,
                deadline_s,
                progress=lambda s: emit(Event(name, "ssh", "info", detail=s)),
            )
        except ssh.UnreachableError as exc:
            # The node booted (or was started) but its sshd never answered: what it printed
            # while booting is on the hypervisor, in the serial console's log.
            log = console_log(r)
            where = (
                f"its boot messages are in {log} on hypervisor {r.hypervisor.name}; " if log else ""
            )
            raise ssh.UnreachableError(
                f"SSH never answered: {exc.message}",
                hint=f"{where}`provision console {name}` attaches to the console; the node is "
                "left as it is, and a re-run of `provision up` waits for it again",
            ) from exc


def console_log(r: render.NodeRender) -> str:
    """The file the node's serial console is logged to on its hypervisor ("" if none)."""
    devices = ET.fromstring(r.domain_xml).find("devices")
    log = devices.find("serial/log") if devices is not None else None
    return log.get("file", "") if log is not None else ""


def wait_cloud_init(session: ssh.Session, name: str) -> None:
    result = session.run(
        ["sudo", "cloud-init", "status", "--wait", "--long"],
        check=False,
        timeout=CLOUD_INIT_TIMEOUT_S,
    )
    if result.returncode == 0:
        return
    report = session.run(["sudo", "cat", RESULT_JSON], check=False)
    output = session.run(["sudo", "tail", "-n", "60", OUTPUT_LOG], check=False)
    raise ProvisionError(
        "cloud-init failed in the guest: "
        + cloud_init_failure(result.stdout, report.stdout, output.stdout),
        hint=f"the seed, which holds the node's private host key, stays attached until first "
        f"boot finishes; the guest's log: `provision ssh {name} -- sudo cat {OUTPUT_LOG}`; if "
        f"the inventory caused it, fix it and `provision up --replace --nodes {name}` boots the "
        f"node afresh, else `provision down --purge --nodes {name}` removes it",
    )


RESULT_JSON = "/run/cloud-init/result.json"
OUTPUT_LOG = "/var/log/cloud-init-output.log"
# cloud-init's own lines in its output log (its timestamped log records and the banner lines):
# what is left is what the failing commands printed.
_CLOUD_INIT_OWN = re.compile(r"^(\d{4}-\d\d-\d\d \S+ - \S+\[[A-Z]+\]|Cloud-init v\. )")


def cloud_init_failure(status: str, result_json: str, output_tail: str) -> str:
    """One line from what the guest reported (pure): the modules that failed and their errors
    (result.json, else `cloud-init status --long`), and the last line the failing commands
    printed (the output log without cloud-init's own records)."""
    errors: list[str] = []
    try:
        doc = json.loads(result_json)
        errors = [str(e) for e in doc["v1"]["errors"]]
    except (ValueError, KeyError, TypeError):
        pass
    if not errors:
        errors = [
            " ".join(line.split())
            for line in status.splitlines()
            if line.strip() and not line.startswith(("time:", "boot_status_code:", "detail:"))
        ]
    printed = [
        line.strip()
        for line in output_tail.splitlines()
        if line.strip() and not _CLOUD_INIT_OWN.match(line)
    ]
    text = "; ".join(errors) or "status error, no detail"
    if printed:
        text += f"; last output: {printed[-1]}"
    return text
