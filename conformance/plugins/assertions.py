"""Assertions for pytest: the same verdicts as ``attnconf check``, with the engine's full
description of what went wrong."""

from __future__ import annotations

from typing import Iterable

import pytest

from conformance.checks import expectations
from conformance.checks.engine import FAILING, NOT_IMPLEMENTED, UNSUPPORTED, Outcome


def conforms(outcomes: Iterable[Outcome], deviations=()) -> list[Outcome]:
    """Fail with every failing check's detail (declared deviations applied first); return the
    outcomes, so a caller can count unsupported cases without skipping the others."""
    outcomes = expectations.apply(list(outcomes), list(deviations))
    failed = [o for o in outcomes if o.status in FAILING]
    if failed:
        # The detail already names the check, case and reproduce command; a Python traceback
        # through the harness would only bury it.
        pytest.fail("\n".join(o.detail for o in failed), pytrace=False)
    return outcomes


def assert_conforms(outcomes: Iterable[Outcome], deviations=()) -> None:
    """Fail on any failure; skip (never pass) when nothing was checked because the layer is not
    implemented or every case was unsupported."""
    outcomes = conforms(outcomes, deviations)
    skip_if_nothing_checked(outcomes)


def skip_if_nothing_checked(outcomes: list[Outcome]) -> None:
    unchecked = [o for o in outcomes if o.status in (NOT_IMPLEMENTED, UNSUPPORTED)]
    if outcomes and len(unchecked) == len(outcomes):
        o = unchecked[0]
        pytest.skip(reason=f"{o.status}: {o.layer} on {o.impl}: {o.detail.splitlines()[0]}")
