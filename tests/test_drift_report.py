"""The drift report's three forms, and the exit code they go with."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import date

from provision.core.model import DriftIgnore
from provision.drift import report
from provision.drift.model import Fix, Item, Layer
from provision.drift.run import Report, Unreachable

MEMORY = Item("n1", Layer.HYPERVISOR, "memory", "1536 MiB", "1792 MiB", Fix.UP, "policy")
FILE = Item("n1", Layer.GUEST, "file:/etc/sudoers.d/x", "absent", "unaccounted file", Fix.MANUAL)
MOTD = Item("n2", Layer.GUEST, "file:/etc/motd", "sha256 1", "sha256 2", Fix.UP)
IGNORE = DriftIgnore("file:/etc/motd", "the banner is the site's own", date(2027, 1, 31))


def _report(*items: Item, down: tuple[Unreachable, ...] = ()) -> Report:
    return Report(
        "inv",
        ("n1", "n2", "n3"),
        items,
        ((MOTD, IGNORE),),
        down,
        {"n1": ("HN-CRT-02",), "n2": ("HN-CRT-02",)},
        {"n1": ("HN-BOOT-08",)},
    )


def test_exit_codes() -> None:
    assert _report().exit_code == 0
    assert _report(MEMORY).exit_code == 2
    down = (Unreachable("n3", Layer.GUEST, "cannot reach SSH"),)
    assert _report(MEMORY, down=down).exit_code == 3  # a partial report outranks drift


def test_text_has_a_row_per_item_and_says_what_was_not_judged() -> None:
    down = (Unreachable("n3", Layer.GUEST, "cannot reach SSH at 127.0.0.1:10260"),)
    text = report.text(_report(MEMORY, FILE, down=down))
    lines = text.splitlines()
    assert lines[0].split() == ["NODE", "LAYER", "KEY", "EXPECTED", "ACTUAL", "FIX"]
    assert lines[1].split()[:3] == ["n1", "hypervisor", "memory"]
    assert lines[1].endswith("provision up")
    assert "UNREACHABLE n3 (guest): cannot reach SSH at 127.0.0.1:10260" in lines
    assert any(
        x.startswith("ignored n2 file:/etc/motd (file:/etc/motd until 2027-01-31") for x in lines
    )
    assert lines[-1] == (
        "drift: 2 items on 1 of 3 nodes, 1 unreachable, 1 ignored, "
        "1 ids inconclusive (HN-BOOT-08), "
        "1 catalogue ids need `provision verify` (container probes, live reads)"
    )


def test_json_holds_every_field() -> None:
    doc = json.loads(report.to_json(_report(MEMORY)))
    assert doc["exit_code"] == 2 and doc["nodes"] == ["n1", "n2", "n3"]
    assert doc["items"] == [
        {
            "node": "n1",
            "layer": "hypervisor",
            "key": "memory",
            "expected": "1536 MiB",
            "actual": "1792 MiB",
            "fix": "provision up",
            "detail": "policy",
        }
    ]
    assert doc["ignored"][0]["ignore"] == {
        "pattern": "file:/etc/motd",
        "reason": "the banner is the site's own",
        "expires": "2027-01-31",
    }


def test_junit_fails_a_case_per_item_and_passes_a_clean_node() -> None:
    down = (Unreachable("n3", Layer.GUEST, "cannot reach SSH"),)
    root = ET.fromstring(report.to_junit(_report(MEMORY, FILE, down=down)))
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"n1", "n2", "n3"}
    assert [c.get("name") for c in suites["n1"].iter("testcase")] == [
        "memory",
        "file:/etc/sudoers.d/x",
    ]
    assert len(list(suites["n1"].iter("failure"))) == 2
    assert [c.get("name") for c in suites["n2"].iter("testcase")] == ["no drift"]
    assert list(suites["n2"].iter("failure")) == []
    assert len(list(suites["n3"].iter("error"))) == 1
