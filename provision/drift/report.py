"""A drift report as a table for people, JSON for programs, JUnit XML for CI: pure functions."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict
from typing import Any

from provision.drift.model import Item
from provision.drift.run import Report

WIDTH = 48  # expected/actual columns are cut here in the table; --json has them whole


def _cut(text: str, width: int = WIDTH) -> str:
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def text(report: Report) -> str:
    lines = []
    if report.items:
        rows = [("NODE", "LAYER", "KEY", "EXPECTED", "ACTUAL", "FIX")]
        rows += [
            (i.node, i.layer.value, i.key, _cut(i.expected), _cut(i.actual), i.fix.value)
            for i in report.items
        ]
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        for r in rows:
            cells = [v.ljust(w) for v, w in zip(r, widths, strict=False)]
            lines.append("  ".join([*cells, r[5]]))
        details = [i for i in report.items if i.detail]
        if details:
            lines.append("")
            for i in details:
                lines.append(f"{i.node} {i.key}:")
                lines += [f"    {d}" for d in i.detail.splitlines()]
    for u in report.unreachable:
        lines.append(f"UNREACHABLE {u.name} ({u.layer.value}): {u.error}")
    for item, ig in report.ignored:
        until = f" until {ig.expires.isoformat()}" if ig.expires else ""
        lines.append(f"ignored {item.node} {item.key} ({ig.pattern}{until}: {ig.reason})")
    lines.append(summary(report))
    return "\n".join(lines)


def summary(report: Report) -> str:
    drifted = {i.node for i in report.items}
    parts = [f"drift: {len(report.items)} items on {len(drifted)} of {len(report.nodes)} nodes"]
    if report.unreachable:
        parts.append(f"{len(report.unreachable)} unreachable")
    if report.ignored:
        parts.append(f"{len(report.ignored)} ignored")
    unsure = {i for ids in report.inconclusive.values() for i in ids}
    if unsure:
        parts.append(f"{len(unsure)} ids inconclusive ({', '.join(sorted(unsure))})")
    skipped = {i for ids in report.not_evaluated.values() for i in ids}
    if skipped:
        parts.append(
            f"{len(skipped)} catalogue ids need `provision verify` (container probes, live reads)"
        )
    return ", ".join(parts)


def _item(i: Item) -> dict[str, Any]:
    d = asdict(i)
    d["layer"], d["fix"] = i.layer.value, i.fix.value
    return d


def as_dict(report: Report) -> dict[str, Any]:
    return {
        "inventory": report.inventory,
        "exit_code": report.exit_code,
        "nodes": list(report.nodes),
        "items": [_item(i) for i in report.items],
        "unreachable": [
            {"name": u.name, "layer": u.layer.value, "error": u.error} for u in report.unreachable
        ],
        "ignored": [
            {
                **_item(i),
                "ignore": {
                    "pattern": g.pattern,
                    "reason": g.reason,
                    "expires": g.expires.isoformat() if g.expires else None,
                },
            }
            for i, g in report.ignored
        ],
        "not_evaluated": {n: list(ids) for n, ids in sorted(report.not_evaluated.items())},
        "inconclusive": {n: list(ids) for n, ids in sorted(report.inconclusive.items())},
        "seconds": {n: round(s, 3) for n, s in sorted(report.seconds.items())},
    }


def to_json(report: Report) -> str:
    return json.dumps(as_dict(report), indent=2)


def to_junit(report: Report) -> str:
    """One testsuite per node (and unreachable name): a testcase per drift item, failed; a node
    with no item gets one passing case, so "clean" is a result and not an absence."""
    root = ET.Element("testsuites", name=f"provision drift {report.inventory}")
    down = {u.name for u in report.unreachable}
    names = sorted({*(n for n in report.nodes if n not in down), *(i.node for i in report.items)})
    for name in names:
        mine = [i for i in report.items if i.node == name]
        suite = ET.SubElement(
            root, "testsuite", name=name, tests=str(max(1, len(mine))), failures=str(len(mine))
        )
        if not mine:
            ET.SubElement(suite, "testcase", classname=name, name="no drift")
        for i in mine:
            case = ET.SubElement(suite, "testcase", classname=f"{name}.{i.layer.value}", name=i.key)
            fail = ET.SubElement(
                case, "failure", message=f"expected {i.expected}, found {i.actual}"
            )
            fail.text = f"fix: {i.fix.value}\n{i.detail}".strip()
    for u in report.unreachable:
        suite = ET.SubElement(root, "testsuite", name=u.name, tests="1", errors="1")
        case = ET.SubElement(suite, "testcase", classname=u.name, name=f"{u.layer.value} reachable")
        ET.SubElement(case, "error", message=u.error)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
