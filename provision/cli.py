"""The command line: parse arguments, call the use cases, print, exit. The only module that does."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path

from provision import __version__, app, render, settings
from provision.errors import ConfigError, ProvisionError

DEFAULT_INVENTORY = Path("inventories/local.yaml")


class Verb(StrEnum):
    RENDER = "render"
    PLAN = "plan"
    SETTINGS = "settings"
    IMAGE = "image"


def _inventory_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-i",
        "--inventory",
        type=Path,
        default=DEFAULT_INVENTORY,
        help=f"inventory YAML file (default: {DEFAULT_INVENTORY})",
    )
    p.add_argument("--nodes", nargs="+", metavar="NODE", help="limit the command to these nodes")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="provision",
        description="Hardened KVM nodes from a YAML inventory: golden images, libvirt guests with "
        "their own kernel, cloud-init hardening, and verification over pinned SSH.",
        epilog="Start with `provision render -i inventories/local.yaml -o out/` to see what a "
        "node is made of, then `provision plan` to compare it with the hypervisor.",
    )
    p.add_argument("--version", action="version", version=f"provision {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    r = sub.add_parser(
        Verb.RENDER,
        help="write every artifact per node for review (no hypervisor needed)",
        description="Render domain, volume, pool and network XML and the cloud-init seed of each "
        "node into a directory, one folder per node. Files with secrets are 0600.",
    )
    _inventory_arg(r)
    r.add_argument(
        "-o", "--output", type=Path, default=Path("out"), help="directory (default: out)"
    )

    pl = sub.add_parser(
        Verb.PLAN,
        help="show what `up` would create, change or leave, per node",
        description="Connect to each hypervisor and compare the rendered nodes with its "
        "domains: create (absent), nothing (identical), update (changed), refuse (a domain "
        "that is not ours).",
    )
    _inventory_arg(pl)
    pl.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser(
        Verb.SETTINGS,
        help="list every inventory setting with its type, default and meaning",
    )

    im = sub.add_parser(Verb.IMAGE, help="build, list and verify golden images")
    im_sub = im.add_subparsers(dest="image_verb", required=True, metavar="ACTION")
    b = im_sub.add_parser("build", help="build the inventory's golden image (cached by inputs)")
    _inventory_arg(b)
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    ls = im_sub.add_parser("list", help="list built images")
    _inventory_arg(ls)
    v = im_sub.add_parser("verify", help="re-hash an image's artifacts against its manifest")
    _inventory_arg(v)
    return p


def _warn(lines: Sequence[str]) -> None:
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)


def cmd_render(args: argparse.Namespace) -> int:
    inv = app.load(args.inventory)
    rendered, warnings = app.render_inventory(inv, app.select(inv, args.nodes))
    _warn(warnings)
    written = render.write(rendered, args.output)
    for r in rendered.nodes:
        print(
            f"{r.node.name}: {args.output / r.node.name}/ (accel {r.accel}, "
            f"host key {r.meta.host_key_fingerprint})"
        )
    print(f"{len(written)} files written to {args.output}/")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    inv = app.load(args.inventory)
    rendered, warnings = app.render_inventory(inv, app.select(inv, args.nodes))
    plans = app.plan(rendered)
    if args.json:
        print(json.dumps({"inventory": inv.name, "nodes": [asdict(p) for p in plans]}, indent=2))
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
    return 1 if any(p.action is app.Action.REFUSE for p in plans) else 0


def cmd_settings(_args: argparse.Namespace) -> int:
    print(settings.reference())
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from provision import golden, image

    inv = app.load(args.inventory)
    store = golden.images_dir(inv.state_dir)
    if args.image_verb == "build":
        manifest, built = image.build_image(
            inv.image,
            store,
            progress=lambda s: print(f"image: {s}", file=sys.stderr),
            force=args.force,
        )
        state = "built" if built else "cached, nothing rebuilt"
        print(
            f"{manifest.name} {manifest.image_id[:16]} ({state}): kernel {manifest.kernel_version}"
        )
        print(f"  {image.image_dir(store, inv.image)}")
        return 0
    if args.image_verb == "list":
        images = image.list_images(store)
        if not images:
            print(f"no images in {store}")
        for m in images:
            print(
                f"{m.image_id[:16]}  {m.name:<16} kernel {m.kernel_version:<20} {m.created}  "
                f"rootfs sha256:{m.digest('rootfs.qcow2')[:16]}"
            )
        return 0
    directory = image.image_dir(store, inv.image)
    problems = image.verify_image(directory)
    for line in problems:
        print(f"MISMATCH {line}")
    if not problems:
        print(f"ok: every artifact in {directory} matches its manifest")
    return 1 if problems else 0


COMMANDS = {
    Verb.RENDER: cmd_render,
    Verb.PLAN: cmd_plan,
    Verb.SETTINGS: cmd_settings,
    Verb.IMAGE: cmd_image,
}


def main(argv: Sequence[str] | None = None) -> int:
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
