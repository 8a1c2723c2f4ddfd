"""Assertions for pytest: fail with the engine's full description of what went wrong."""

from __future__ import annotations

from typing import Iterable

import pytest

from conformance.checks.engine import FAIL, NOT_IMPLEMENTED, Outcome


def assert_conforms(outcomes: Iterable[Outcome]) -> None:
    """Skip (never pass) when not implemented; fail with every failed check's detail."""
    outcomes = list(outcomes)
    failed = [o for o in outcomes if o.status == FAIL]
    if failed:
        # The detail already names the check, case and reproduce command; a Python traceback
        # through the harness would only bury it.
        pytest.fail("\n".join(o.detail for o in failed), pytrace=False)
    not_implemented = [o for o in outcomes if o.status == NOT_IMPLEMENTED]
    if not_implemented:
        o = not_implemented[0]
        pytest.skip(reason=f"not implemented: {o.layer} on {o.impl}: {o.detail}")
