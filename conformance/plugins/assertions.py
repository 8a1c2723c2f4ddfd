"""Assertions for pytest: the same verdicts as ``attnconf check``, with the engine's full
description of what went wrong."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import pytest

from conformance.checks import expectations
from conformance.checks.engine import FAILING, NOT_IMPLEMENTED, UNSUPPORTED, Outcome

UNCHECKED = (UNSUPPORTED, NOT_IMPLEMENTED)
"""Statuses of cases that were not checked, in the order (and words) ``attnconf check`` counts them."""

PROPERTY = {UNSUPPORTED: "attnconf_unsupported", NOT_IMPLEMENTED: "attnconf_not_implemented"}
REASON_PROPERTY = "attnconf_unchecked_reason"
"""Names of the test's ``user_properties`` (shown by ``--junitxml``, carried to the pytest-xdist
controller with the report) that count the cases a test did not check, and the first reason."""

_RUNNING: dict = {"item": None}
"""The test item running now, set by the attnconf plugin around each test's call."""


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
    """The end of every conformance test, given all its outcomes: skip (never pass) when nothing
    was checked, or no case ran at all. Cases not checked (unsupported, not implemented) are
    counted in the test's ``user_properties`` for the plugin's summary, "attnconf: cases not
    checked", and fail the test under ``--attnconf-strict`` (as ``attnconf check --strict``)."""
    if not outcomes:
        pytest.skip(reason="nothing checked: no case ran")
    unchecked = [o for o in outcomes if o.status in UNCHECKED]
    if unchecked:
        counts = Counter(o.status for o in unchecked)
        reason = unchecked[0].detail.splitlines()[0] if unchecked[0].detail else unchecked[0].status
        _record(counts, reason)
        if _strict():
            text = ", ".join(f"{counts[status]} {status}" for status in UNCHECKED if counts[status])
            pytest.fail(f"--attnconf-strict: not everything was checked: {text} of {len(outcomes)} outcomes; "
                        f"first: {unchecked[0].layer} on {unchecked[0].impl}: {reason}", pytrace=False)
        if len(unchecked) == len(outcomes):
            o = unchecked[0]
            pytest.skip(reason=f"{o.status}: {o.layer} on {o.impl}: {reason}")


def skip_not_implemented(reason: str) -> None:
    """Skip a test whose whole subject (a layer, a dtype) the implementation does not implement;
    fail it under ``--attnconf-strict``, as ``attnconf check --strict`` fails on "not implemented"."""
    if _strict():
        pytest.fail(f"--attnconf-strict: not everything was checked: not implemented: {reason}", pytrace=False)
    pytest.skip(reason=f"not implemented: {reason}")


def _record(counts: Counter, reason: str) -> None:
    item = _RUNNING["item"]
    if item is None:  # called outside a test the plugin runs (or without the plugin)
        return
    properties = [(name, value) for name, value in item.user_properties if name not in (*PROPERTY.values(), REASON_PROPERTY)]
    previous = {name: value for name, value in item.user_properties if name in PROPERTY.values()}
    for status in UNCHECKED:  # a test calling this twice counts both calls' cases
        n = counts[status] + previous.get(PROPERTY[status], 0)
        if n:
            properties.append((PROPERTY[status], n))
    first = next((value for name, value in item.user_properties if name == REASON_PROPERTY), reason)
    item.user_properties[:] = properties + [(REASON_PROPERTY, first)]


def _strict() -> bool:
    from conformance.plugins.pytest_plugin import strict_mode

    item = _RUNNING["item"]
    return item is not None and strict_mode(item.config)
