"""Every check proven able to fail: one mutation of a clean node's recording per catalogue id.

For each mutation (tests/mutations/), the whole suite runs twice on the recording: with the
mutation's setup alone, where its id must PASS and nothing may FAIL, ERROR or WARN; and with
the mutation applied, where exactly its id and the ids it names as dependent must FAIL, exactly
the ids it names as left without evidence must WARN (none, unless it stops a daemon), and
nothing may ERROR. The coverage test fails when an id the suite registers has no mutation.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

import pytest

from provision.verify import suite
from provision.verify.checks import REGISTRY, Status
from tests.mutations import ALL, Edit, Mutation
from tests.recording import Recording, by_status, recorded_profile, verdicts

for _mod in pkgutil.iter_modules(suite.__path__):
    importlib.import_module(f"{suite.__name__}.{_mod.name}")

BAD = (Status.FAIL, Status.ERROR, Status.WARN)


def _prepared(setup: Edit | None) -> Recording:
    rec = Recording()
    if setup is not None:
        setup(rec)
    return rec


@functools.cache
def _baseline(setup: Edit | None, roles: str) -> dict[str, Status]:
    results = verdicts(_prepared(setup), recorded_profile(roles))
    return {i: r.status for i, r in results.items()}


def test_the_clean_recording_passes_every_check_that_applies() -> None:
    results = verdicts(Recording())
    assert not by_status(results, *BAD), {
        i: r.detail for i, r in results.items() if r.status in BAD
    }


@pytest.mark.parametrize("m", ALL, ids=lambda m: m.name)
def test_the_mutation_fails_its_check_and_only_its_dependents(m: Mutation) -> None:
    before = _baseline(m.setup, m.roles)
    assert before.get(m.check_id) is Status.PASS, f"{m.check_id} does not PASS before: {before}"
    assert not {i for i, s in before.items() if s in BAD}, "the setup leaves the node unclean"
    rec = _prepared(m.setup)
    m.change(rec)
    after = verdicts(rec, recorded_profile(m.roles))
    failed = by_status(after, Status.FAIL)
    assert failed == {m.check_id} | m.also, {i: after[i].detail for i in failed}
    errors = by_status(after, Status.ERROR)
    assert not errors, {i: after[i].detail for i in errors}
    warned = by_status(after, Status.WARN)  # only where the mutation takes the evidence away
    assert warned == m.warns, {i: after[i].detail for i in warned ^ m.warns}


def test_every_registered_check_has_a_mutation() -> None:
    covered = {m.check_id for m in ALL}
    missing = sorted(set(REGISTRY) - covered)
    assert not missing, f"ids no mutation proves able to fail: {missing}"


def test_mutation_names_are_unique() -> None:
    names = [m.name for m in ALL]
    assert len(names) == len(set(names))
