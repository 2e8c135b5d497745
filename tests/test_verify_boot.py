"""HN-BOOT-02 on the recorded node when the domain itself overrides a KSPP parameter (an
inventory's cmdline_extra): the command line matches the domain's, and the kernel keeps the last
value of a parameter, so the KSPP value is not in effect."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

from provision.verify import suite
from provision.verify.checks import Status
from tests.recording import Recording, recorded_profile, verdicts

for _mod in pkgutil.iter_modules(suite.__path__):
    importlib.import_module(f"{suite.__name__}.{_mod.name}")


def test_a_kspp_parameter_overridden_by_the_domain_is_not_in_effect() -> None:
    rec = Recording()
    rec.content(
        "/proc/cmdline", "audit_backlog_limit=8192\n", "audit_backlog_limit=8192 iommu.strict=0\n"
    )
    profile = recorded_profile()
    profile = dataclasses.replace(profile, cmdline=(*profile.cmdline, "iommu.strict=0"))
    result = verdicts(rec, profile)["HN-BOOT-02"]
    assert result.status is Status.FAIL
    assert result.detail == "test_kspp_parameters: not in effect on /proc/cmdline: iommu.strict=1"
