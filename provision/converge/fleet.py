"""`up` over a fleet: many nodes on many hypervisors, concurrently and safely.

- One run per inventory and hypervisor (run locks), taken before anything is read or changed.
- The plan for every node first; a refused node or a recreate without --replace stops the run
  before it changes anything.
- Nodes converge in parallel (bounded); the first node of a hypervisor prepares its pool and
  golden artifacts while that hypervisor's other nodes wait; pool operations are serialised
  (converge.pool.pool_op).
- A node that fails does not stop the others; the result names it.
- SIGINT: running nodes stop at their next phase, the run exits 130, and a re-run converges
  (every phase is safe to interrupt, even by SIGKILL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provision.boundary import hypervisor
from provision.config import playbook
from provision.converge import node, planning, postboot, prepare
from provision.converge.steps import Options
from provision.core.errors import HypervisorError, Interrupted, ProvisionError, UsageError
from provision.core.events import Emit, Event, phase
from provision.core.model import Inventory, Node
from provision.desired import render
from provision.desired.plan import Action, NodePlan
from provision.image.image import Manifest
from provision.kubernetes import k8s_bootstrap
from provision.state import lock, paths, workspace

DEFAULT_PARALLEL = 4
DEFAULTS = Options()
INTERRUPT_GRACE_S = 20.0  # how long running nodes get to reach a phase boundary


@dataclass(frozen=True)
class UpResult:
    changed: tuple[str, ...]  # nodes that were created, started, updated or repaired
    unchanged: tuple[str, ...]
    failed: tuple[tuple[str, str], ...] = ()  # node, error


class Guard:
    """The run's event sink, shared by its threads: serialises output, and once cancelled, turns
    the next event of any worker into Interrupted, which is how workers stop at a phase."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._lock = threading.Lock()
        self.cancelled = threading.Event()

    def __call__(self, event: Event) -> None:
        if self.cancelled.is_set() and event.status != "fail":
            raise Interrupted("interrupted", hint="re-run `provision up` to converge")
        self.say(event)

    def say(self, event: Event) -> None:
        with self._lock:
            self._emit(event)


class _Once:
    """Run a hypervisor's preparation once; every node of it waits for, and shares, the outcome."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._error: BaseException | None = None

    def run(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if not self._done:
                self._done = True
                try:
                    fn()
                except BaseException as exc:
                    self._error = exc
            if self._error is not None:
                raise ProvisionError(f"hypervisor not ready: {self._error}") from self._error


def _by_hypervisor(rendered: render.Rendered) -> dict[str, list[render.NodeRender]]:
    out: dict[str, list[render.NodeRender]] = {}
    for r in rendered.nodes:
        out.setdefault(r.hypervisor.name, []).append(r)
    return out


def run_locks(inv: Inventory, hypervisors: list[str]) -> list[tuple[str, Path]]:
    return [
        (f"inventory {inv.name} on hypervisor {h}", paths.run_lock(inv, h)) for h in hypervisors
    ]


def up(
    inv: Inventory,
    nodes: tuple[Node, ...],
    emit: Emit,
    *,
    opts: Options = DEFAULTS,
    parallel: int = DEFAULT_PARALLEL,
    wait_lock: float = 0.0,
    command: str = "provision up",
) -> UpResult:
    guard = Guard(emit)
    playbooks = load_playbooks(inv)  # a broken playbook stops the run before it changes anything
    k8s_bootstrap.preflight(inv)  # so does a Kubernetes role without pinned checksums or bundle
    manifest = prepare.ensure_image(inv, guard, nodes)
    rendered, warnings = workspace.render_inventory(inv, nodes, create_keys=True)
    for w in warnings:
        guard(Event("*", "render", "warn", detail=w))
    workspace.write_known_hosts(inv, rendered)
    groups = _by_hypervisor(rendered)

    def waiting(message: str) -> None:
        guard(Event("*", "lock", "info", detail=message))

    with lock.hold(run_locks(inv, sorted(groups)), command, wait_lock, waiting):
        with phase(guard, "*", "plan"):
            plans = {p.node: p for p in planning.plan(rendered)}
        _refuse_early(plans, opts)
        for p in plans.values():
            detail = p.action.value + "".join(f"; {c}" for c in p.changes)
            guard(Event(p.node, "plan", "info", detail=detail))
        result = _converge_all(inv, groups, plans, manifest, rendered, guard, opts, parallel)
        post_boot = playbooks or k8s_bootstrap.playbook(inv) is not None
        if post_boot and opts.start and not result.failed:
            # Steps order work across nodes (a step finishes everywhere before the next), so
            # they run once every node is up.
            postboot.run_playbooks(inv, rendered, playbooks, guard)
        return result


def load_playbooks(inv: Inventory) -> tuple[playbook.Playbook, ...]:
    playbooks = playbook.load_all(inv.playbooks)
    problems = playbook.check_against(playbooks, [n.name for n in inv.nodes])
    if problems:
        raise UsageError("\n".join(problems), hint="fix the playbooks")
    return playbooks


def _refuse_early(plans: dict[str, NodePlan], opts: Options) -> None:
    refused = [p for p in plans.values() if p.action is Action.REFUSE]
    if refused:
        raise HypervisorError(
            "; ".join(f"{p.node}: {p.reason}" for p in refused),
            hint="rename the node or remove that domain; nothing was changed",
        )
    replace = [p for p in plans.values() if p.action is Action.RECREATE]
    if replace and not opts.replace:
        raise ProvisionError(
            "these nodes need a new root disk and first boot: "
            + "; ".join(f"{p.node} ({', '.join(c.field for c in p.changes)})" for p in replace),
            hint="review `provision plan`, then `provision up --replace` (data disks are kept); "
            "nothing was changed",
        )


def _converge_all(
    inv: Inventory,
    groups: dict[str, list[render.NodeRender]],
    plans: dict[str, NodePlan],
    manifest: Manifest,
    rendered: render.Rendered,
    guard: Guard,
    opts: Options,
    parallel: int,
) -> UpResult:
    once = {name: _Once() for name in groups}
    slots = threading.BoundedSemaphore(max(1, parallel))
    outcome: dict[str, bool | BaseException] = {}
    # Completion is signalled by events, not Thread.join: in Python 3.11 a KeyboardInterrupt
    # that lands in join() can mark a running thread as stopped (CPython gh-90882), and the
    # grace period below would then not wait for it.
    finished = {r.node.name: threading.Event() for r in rendered.nodes}

    def work(r: render.NodeRender) -> None:
        try:
            with slots:
                hv = r.hypervisor
                with hypervisor.connect(workspace.hypervisor_uri(inv, hv)) as conn:
                    once[hv.name].run(
                        lambda: prepare.prepare_hypervisor(
                            conn, inv, groups[hv.name], manifest, rendered.golden, guard
                        )
                    )
                    outcome[r.node.name] = node.converge_node(
                        conn, inv, r, plans[r.node.name], guard, opts
                    )
        except BaseException as exc:  # reported per node; the others carry on
            outcome[r.node.name] = exc
        finally:
            finished[r.node.name].set()

    for r in rendered.nodes:
        # Daemon threads: after an interrupt's grace period the process exits without them; an
        # unfinished phase is what the next run converges.
        threading.Thread(target=work, args=(r,), name=r.node.name, daemon=True).start()
    try:
        for done in finished.values():
            while not done.wait(0.2):  # short waits keep the main thread responsive to SIGINT
                pass
    except KeyboardInterrupt:
        guard.cancelled.set()
        guard.say(Event("*", "interrupt", "warn", detail="stopping nodes at their next phase"))
        deadline = time.monotonic() + INTERRUPT_GRACE_S
        for done in finished.values():
            done.wait(max(0.0, deadline - time.monotonic()))
        raise Interrupted("interrupted", hint="re-run `provision up` to converge") from None

    changed, unchanged, failed = [], [], []
    for r in rendered.nodes:
        result = outcome.get(r.node.name)
        if isinstance(result, BaseException):
            failed.append((r.node.name, str(result) or type(result).__name__))
        elif result:
            changed.append(r.node.name)
        else:
            unchanged.append(r.node.name)
    return UpResult(tuple(changed), tuple(unchanged), tuple(failed))
