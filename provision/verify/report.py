"""Verification reports as text, JSON and JUnit: pure functions of the node reports.

JUnit follows kube-bench: one testsuite per node and group, a testcase per check id named
"<id> <title>", FAIL/ERROR as <failure>/<error> carrying the remediation, and every status
that is not a verdict (warn, skip, waived) as <skipped> with its reason. Every testcase and suite
carries its wall time, and the JSON its phases, so users see where verification spends it.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from typing import Any

from provision.verify.checks import Status
from provision.verify.runner import NodeReport, Result

COLUMNS = (Status.PASS, Status.FAIL, Status.ERROR, Status.WARN, Status.WAIVED, Status.SKIP)
SLOWEST = 3  # ids named in the text report's timing line


def timing(rep: NodeReport) -> str:
    """One line: the phases and the slowest ids, e.g. `time: connect 0.4s, checks 118.2s; ...`."""
    parts = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in rep.phases)
    slow = sorted((r for r in rep.results if r.seconds > 0), key=lambda r: -r.seconds)[:SLOWEST]
    if slow:
        parts += "; slowest: " + ", ".join(f"{r.id} {r.seconds:.1f}s" for r in slow)
    return f"  time: {parts}" if parts else ""


def totals(results: tuple[Result, ...]) -> dict[str, int]:
    counts = Counter(r.status for r in results)
    return {s.value: counts.get(s, 0) for s in COLUMNS}


def text(reports: list[NodeReport]) -> str:
    """A summary table per node and group, then every failure with its remediation."""
    lines: list[str] = []
    for rep in reports:
        lines.append(f"{rep.node} (roles: {', '.join(sorted(rep.roles))})")
        if rep.error:
            lines.append(f"  NOT VERIFIED: {rep.error}")
            lines.append("")
            continue
        if timing(rep):
            lines.append(timing(rep))
        header = f"  {'GROUP':<6}" + "".join(f"{s.value.upper():>8}" for s in COLUMNS)
        lines.append(header)
        groups = dict.fromkeys(r.group for r in rep.results)
        for group in groups:
            t = totals(tuple(r for r in rep.results if r.group == group))
            lines.append(f"  {group:<6}" + "".join(f"{t[s.value]:>8}" for s in COLUMNS))
        t = totals(rep.results)
        lines.append(f"  {'TOTAL':<6}" + "".join(f"{t[s.value]:>8}" for s in COLUMNS))
        for r in rep.results:
            if r.status in (Status.FAIL, Status.ERROR, Status.WARN):
                lines.append(f"  [{r.status.value.upper()}] {r.id} {r.title}")
                lines.extend(f"      {d}" for d in r.detail.splitlines())
                if r.status is not Status.WARN and r.remediation:
                    lines.append(f"      fix: {r.remediation}")
        lines.append("")
    failed = [rep.node for rep in reports if rep.failed]
    lines.append(
        f"verify: {len(reports) - len(failed)} of {len(reports)} node(s) passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return "\n".join(lines)


def to_json(reports: list[NodeReport]) -> str:
    return json.dumps(as_dict(reports), indent=2)


def as_dict(reports: list[NodeReport]) -> dict[str, Any]:
    return {
        "nodes": [
            {
                "node": rep.node,
                "roles": sorted(rep.roles),
                "error": rep.error,
                "phases": {name: round(seconds, 3) for name, seconds in rep.phases},
                "fetches": {name: round(seconds, 3) for name, seconds in rep.fetches},
                "round_trips": rep.round_trips,
                "totals": totals(rep.results),
                "results": [
                    {
                        "id": r.id,
                        "title": r.title,
                        "group": r.group,
                        "level": r.level,
                        "severity": r.severity,
                        "status": r.status.value,
                        "detail": r.detail,
                        "remediation": r.remediation,
                        "tests": r.tests,
                        "seconds": round(r.seconds, 3),
                    }
                    for r in rep.results
                ],
            }
            for rep in reports
        ],
        "failed": any(rep.failed for rep in reports),
    }


def to_junit(reports: list[NodeReport]) -> str:
    root = ET.Element("testsuites", name="provision verify")
    for rep in reports:
        if rep.error:
            seconds = _time(sum(t for _, t in rep.phases))
            suite = ET.SubElement(
                root, "testsuite", name=rep.node, tests="1", errors="1", time=seconds
            )
            case = ET.SubElement(
                suite, "testcase", name="connect", classname=rep.node, time=seconds
            )
            ET.SubElement(case, "error", message=rep.error)
            continue
        for group in dict.fromkeys(r.group for r in rep.results):
            results = [r for r in rep.results if r.group == group]
            t = totals(tuple(results))
            suite = ET.SubElement(
                root,
                "testsuite",
                name=f"{rep.node}/{group}",
                tests=str(len(results)),
                failures=str(t["fail"]),
                errors=str(t["error"]),
                skipped=str(t["warn"] + t["skip"] + t["waived"]),
                time=_time(sum(r.seconds for r in results)),
            )
            for r in results:
                case = ET.SubElement(
                    suite,
                    "testcase",
                    name=f"{r.id} {r.title}",
                    classname=f"{rep.node}.{group}",
                    time=_time(r.seconds),
                )
                if r.status is Status.FAIL:
                    el = ET.SubElement(case, "failure", message=r.remediation or r.title)
                    el.text = r.detail
                elif r.status is Status.ERROR:
                    el = ET.SubElement(
                        case, "error", message=(r.detail.splitlines() or [""])[0][:200]
                    )
                    el.text = r.detail
                elif r.status is not Status.PASS:
                    ET.SubElement(case, "skipped", message=f"{r.status.value}: {r.detail}")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _time(seconds: float) -> str:
    """JUnit's `time`: seconds as a decimal (what Jenkins, GitLab and junitparser read)."""
    return f"{seconds:.3f}"
