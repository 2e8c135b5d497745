"""The command line: parse arguments, call the use cases, print, exit. The only module that does."""

from __future__ import annotations

import argparse
import errno
import json
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from provision.cli import app
from provision.cli.arguments import Verb, parser
from provision.config import inventory, settings
from provision.converge import planning
from provision.core import events
from provision.core.errors import ConfigError, ProvisionError, UsageError
from provision.core.model import Inventory, Node
from provision.desired import render
from provision.desired.plan import Action
from provision.image import store
from provision.state import keys, workspace

if TYPE_CHECKING:  # imported where used: most commands never need them
    from provision.core.events import Emit
    from provision.verify.runner import NodeReport


def _warn(lines: Sequence[str]) -> None:
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)


def cmd_render(args: argparse.Namespace) -> int:
    inv = inventory.load(args.inventory)
    rendered, warnings = workspace.render_inventory(inv, workspace.select(inv, args.nodes))
    _warn(warnings)
    written = render.write(rendered, args.output)
    for r in rendered.nodes:
        key = r.meta.host_key_fingerprint
        if keys.is_placeholder(r.host_key_public):
            key = "placeholder (`provision up` creates it)"
        print(f"{r.node.name}: {args.output / r.node.name}/ (accel {r.accel}, host key {key})")
    print(f"{len(written)} files written to {args.output}/")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    inv = inventory.load(args.inventory)
    rendered, warnings = workspace.render_inventory(inv, workspace.select(inv, args.nodes))
    plans = planning.plan(rendered)
    steps = planning.plan_playbooks(inv, rendered, plans)
    if args.json:
        doc = {
            "inventory": inv.name,
            "nodes": [asdict(p) for p in plans],
            "playbooks": [asdict(s) for s in steps],
        }
        print(json.dumps(doc, indent=2))
    else:
        _warn(warnings)
        width = max(len(p.node) for p in plans)
        for p in plans:
            print(f"{p.node:<{width}}  {p.action.value:<8} on {p.hypervisor}: {p.reason}")
            for change in p.changes:
                print(f"{'':<{width}}    ~ {change}")
        counts = {
            a: sum(1 for p in plans if p.action == a)
            for a in dict.fromkeys(p.action for p in plans)
        }
        print("plan: " + ", ".join(f"{n} {a.value}" for a, n in counts.items()))
        if steps:
            print("playbook steps (ok: done; apply: would run; pending: after the node is up):")
            for s in steps:
                detail = f"  {s.detail}" if s.detail else ""
                print(f"  {s.node:<{width}}  {s.playbook}/{s.step:<24} {s.status}{detail}")
    return 1 if any(p.action is Action.REFUSE for p in plans) else 0


def cmd_up(args: argparse.Namespace) -> int:
    from provision.cli.progress import Progress
    from provision.converge import fleet, steps
    from provision.verify import report

    inv = inventory.load(args.inventory)
    nodes = workspace.select(inv, args.nodes)
    if args.parallel < 1:
        raise UsageError("--parallel must be at least 1")
    inv = inventory.load(args.inventory)
    nodes = workspace.select(inv, args.nodes)
    opts = steps.Options(replace=args.replace, start=not args.no_start)
    with Progress(args.json) as progress:
        result = fleet.up(
            inv,
            nodes,
            progress,
            opts=opts,
            parallel=args.parallel,
            wait_lock=args.wait_lock,
            command=shlex.join(["provision", *sys.argv[1:]]),
        )
        failed = {name for name, _ in result.failed}
        ready = tuple(n for n in nodes if n.name not in failed)
        verify = ready and not args.no_verify and not args.no_start
        reports = _verify(inv, ready, progress) if verify else None
    summary = f"{len(result.changed)} changed, {len(result.unchanged)} unchanged"
    if result.failed:
        summary += f", {len(result.failed)} failed"
    if args.json:
        verified = report.as_dict(reports) if reports is not None else None
        print(json.dumps({"summary": summary, **asdict(result), "verify": verified}))
    else:
        print(f"up: {summary}" + (f" ({', '.join(result.changed)})" if result.changed else ""))
        for name, error in result.failed:
            print(f"error: {name}: {error}", file=sys.stderr)
        if reports is not None:
            print(report.text(reports))
    bad_verify = reports is not None and any(r.failed for r in reports)
    return 1 if result.failed or bad_verify else 0


def _verify(
    inv: Inventory, nodes: tuple[Node, ...], emit: Emit, select: str | None = None
) -> list[NodeReport]:
    """Verify the nodes; expired waivers are named (they no longer apply)."""
    from datetime import date

    from provision.verify import runner

    today = date.today()
    for n in nodes:
        for w in runner.expired(n.waivers, today):
            print(
                f"warning: {n.name}: waiver for {w.check_id} expired {w.expires}",
                file=sys.stderr,
            )
    return runner.verify(inv, nodes, emit, today, select)


def cmd_down(args: argparse.Namespace) -> int:
    from provision.cli.progress import Progress
    from provision.converge import down, fleet
    from provision.state import lock

    inv = inventory.load(args.inventory)
    nodes = workspace.select(inv, args.nodes)
    hvs = sorted({n.hypervisor for n in nodes})
    command = shlex.join(["provision", *sys.argv[1:]])
    with Progress(args.json) as progress:

        def waiting(message: str) -> None:
            progress(events.Event("*", "lock", "info", detail=message))

        with lock.hold(fleet.run_locks(inv, hvs), command, args.wait_lock, waiting):
            result = down.down(inv, nodes, args.purge, progress)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        print(
            f"down: {len(result.stopped)} stopped, {len(result.absent)} already absent, "
            f"{len(result.purged_volumes)} volumes deleted"
            + ("" if args.purge else " (volumes kept: --purge deletes them)")
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from provision.converge import status

    inv = inventory.load(args.inventory)
    rows = status.status(inv, workspace.select(inv, args.nodes))
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    print(f"{'NODE':<12} {'HYPERVISOR':<12} {'STATE':<9} {'ADDRESS':<22} {'IMAGE':<17} UPTIME")
    for r in rows:
        up = f"{r.uptime_s:.0f}s" if r.uptime_s is not None else "-"
        print(
            f"{r.node:<12} {r.hypervisor:<12} {r.state:<9} {r.address:<22} "
            f"{r.image_id or '-':<17} {up}"
        )
    return 0


def cmd_ssh_config(args: argparse.Namespace) -> int:
    inv = inventory.load(args.inventory)
    print(app.ssh_config(inv, workspace.select(inv, args.nodes)), end="")
    return 0


def cmd_ssh(args: argparse.Namespace) -> int:
    inv = inventory.load(args.inventory)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return app.ssh_exec(inv, args.node, command)


def cmd_console(args: argparse.Namespace) -> int:
    inv = inventory.load(args.inventory)
    return app.console_exec(inv, args.node)


def cmd_verify(args: argparse.Namespace) -> int:
    from provision.cli.progress import Progress
    from provision.verify import report

    inv = inventory.load(args.inventory)
    nodes = workspace.select(inv, [*args.node, *(args.nodes or [])] or None)
    with Progress(False, stream=sys.stderr) as progress:
        reports = _verify(inv, nodes, progress, args.select)
    if args.junit:
        args.junit.write_text(report.to_junit(reports))
    print(report.to_json(reports) if args.json else report.text(reports))
    return 1 if any(r.failed for r in reports) else 0


def cmd_drift(args: argparse.Namespace) -> int:
    from datetime import date

    from provision.cli.progress import Progress
    from provision.drift import report, run
    from provision.drift.model import Layer

    inv = inventory.load(args.inventory)
    nodes = workspace.select(inv, [*args.node, *(args.nodes or [])] or None)
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    layers = frozenset(Layer) if args.layer == "all" else frozenset({Layer(args.layer)})
    today = date.today()
    for n in nodes:
        for ig in n.drift_ignores:
            if ig.expires is not None and ig.expires < today:
                print(
                    f"warning: {n.name}: drift ignore {ig.pattern} expired {ig.expires}",
                    file=sys.stderr,
                )
    # Progress on a terminal only: from cron the report alone is printed.
    quiet = not sys.stderr.isatty()
    with Progress(False, stream=sys.stderr) as progress:
        emit: Emit = (lambda _e: None) if quiet else progress
        result = run.drift(inv, nodes, emit, today, layers=layers, concurrency=args.concurrency)
    if args.junit:
        args.junit.write_text(report.to_junit(result))
    print(report.to_json(result) if args.json else report.text(result))
    return result.exit_code


def cmd_settings(_args: argparse.Namespace) -> int:
    from provision.desired import policy

    print(settings.reference())
    print("\nUPDATE POLICY (what `up` does when a field changes; `provision plan` shows it)")
    for f in policy.POLICY:
        print(f"  {f.name:<12} {f.action.value:<9} {f.what}")
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from provision.image import image

    inv = inventory.load(args.inventory)
    images = store.images_dir(inv.state_dir)
    if args.image_verb == "build":
        manifest, built = image.build_image(
            inv.image,
            images,
            progress=lambda s: print(f"image: {s}", file=sys.stderr),
            force=args.force,
        )
        state = "built" if built else "cached, nothing rebuilt"
        print(
            f"{manifest.name} {manifest.image_id[:16]} ({state}): kernel {manifest.kernel_version}"
        )
        print(f"  {image.image_dir(images, inv.image)}")
        return 0
    if args.image_verb == "list":
        manifests = image.list_images(images)
        if not manifests:
            print(f"no images in {images}")
        for m in manifests:
            print(
                f"{m.image_id[:16]}  {m.name:<16} kernel {m.kernel_version:<20} {m.created}  "
                f"rootfs sha256:{m.digest('rootfs.qcow2')[:16]}"
            )
        return 0
    directory = image.image_dir(images, inv.image)
    problems = image.verify_image(directory)
    for line in problems:
        print(f"MISMATCH {line}")
    if not problems:
        print(f"ok: every artifact in {directory} matches its manifest")
    return 1 if problems else 0


def cmd_policy_coverage(args: argparse.Namespace) -> int:
    import yaml

    from provision.kubernetes import netpol

    inv = inventory.load(args.inventory)
    if inv.kubernetes is None:
        raise UsageError(f"inventory {inv.name} has no kubernetes section")
    text = args.file.read_text() if args.file else sys.stdin.read()
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]  # JSON is YAML
    except yaml.YAMLError as exc:
        raise UsageError(f"cannot parse the policies: {exc}") from exc
    report = netpol.coverage(docs, [ns.name for ns in inv.kubernetes.namespaces])
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.text())
    return 0 if report.ok else 1


COMMANDS = {
    Verb.UP: cmd_up,
    Verb.DOWN: cmd_down,
    Verb.STATUS: cmd_status,
    Verb.SSH: cmd_ssh,
    Verb.SSH_CONFIG: cmd_ssh_config,
    Verb.CONSOLE: cmd_console,
    Verb.RENDER: cmd_render,
    Verb.PLAN: cmd_plan,
    Verb.SETTINGS: cmd_settings,
    Verb.IMAGE: cmd_image,
    Verb.VERIFY: cmd_verify,
    Verb.DRIFT: cmd_drift,
    Verb.POLICY_COVERAGE: cmd_policy_coverage,
}


def take_sigint() -> None:
    """Make SIGINT raise KeyboardInterrupt, whatever disposition this process inherited.

    A shell starts the background jobs of a script with SIGINT ignored, and Python keeps an
    inherited SIG_IGN: `up` would then lose Ctrl-C and `kill -INT` and run on to the end. Every
    phase is safe to interrupt (the run exits 130, a re-run converges), so a SIGINT always stops it.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    take_sigint()
    args = parser().parse_args(argv)
    try:
        return COMMANDS[Verb(args.verb)](args)
    except ConfigError as exc:
        if args.debug:
            traceback.print_exc()
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"error: {len(exc.problems)} problem(s) in the inventory", file=sys.stderr)
        return exc.exit_code
    except ProvisionError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise  # a bug, not the machine: the traceback is what to report
        if args.debug:
            traceback.print_exc()
        # What the typed errors do not cover yet (e.g. a lock's record): still one line.
        print(
            f"error: cannot write {exc.filename or 'a file'}: {exc.strerror} "
            "(free space on that filesystem, then re-run)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
