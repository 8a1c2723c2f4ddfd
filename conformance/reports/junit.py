"""The check run as JUnit XML, for CI systems (written with the ``junitparser`` package).

One test suite per layer, one test case per (implementation or pair, check, dtype) cell of the
matrix, as the text report counts them: a cell where the implementation raised is an error, a cell
with failed checks a failure (every distinct failure reported for it in the body), a cell where
nothing was checked (unsupported, not implemented) is skipped with the reason. A cell that passed
with some cases unchecked passes, its unchecked counts and reasons in the system-out and in the
suite's ``attnconf_unsupported`` and ``attnconf_not_implemented`` properties; known deviations pass
with their reasons in the system-out.
"""

from __future__ import annotations

import platform
import re
from datetime import datetime, timezone
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

from conformance.checks.engine import ERROR, FAIL, KNOWN, NOT_IMPLEMENTED, PASS, UNSUPPORTED
from conformance.runners.runner import RunResult

_RAISED_TYPE = re.compile(r"raised ([A-Za-z_][\w.]*):")


def write(result: RunResult, path: Path) -> None:
    xml = JUnitXml("attnconf check")
    suites: dict[str, TestSuite] = {}
    unchecked: dict[str, dict[str, int]] = {}
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for (layer, subject, check, dtype), tally in sorted(result.tallies.items()):
        suite = suites.get(layer)
        if suite is None:
            suite = suites[layer] = TestSuite(layer)
            suite.timestamp, suite.hostname = stamp, platform.node()
        case = TestCase(f"{subject} {check} {dtype}", classname=f"attnconf.{layer}")
        counts = ", ".join(f"{n} {status}" for status, n in sorted(tally.counts.items()))
        reported = [o for o in result.failures if (o.layer, o.impl, o.check) == (layer, subject, check) and (o.dtype == dtype or dtype == "-")]
        body = "\n\n".join(o.detail for o in reported)
        judged = tally.count(PASS, FAIL, KNOWN)
        if tally.count(FAIL):
            failure = Failure(f"{tally.count(FAIL)} of {judged} cases failed ({counts})", check)
            failure.text = body
            case.result = [failure]
        elif tally.count(ERROR):
            raised = next((m.group(1) for o in reported if (m := _RAISED_TYPE.search(o.detail))), "error")
            error = Error(f"{tally.count(ERROR)} cases raised ({counts})", raised)
            error.text = body
            case.result = [error]
        elif not tally.count(PASS, KNOWN) and tally.count(UNSUPPORTED, NOT_IMPLEMENTED):
            case.result = [Skipped("; ".join(sorted(tally.reasons)) or counts)]
        else:
            notes = sorted(r for r in tally.reasons if r.startswith(("known", "unsupported")) or " not declared by " in r)
            case.system_out = "\n".join([counts, *notes])
            totals = unchecked.setdefault(layer, {})
            for status in (UNSUPPORTED, NOT_IMPLEMENTED):
                totals[status] = totals.get(status, 0) + tally.count(status)
        suite.add_testcase(case)
    for layer, suite in suites.items():
        for status, n in unchecked.get(layer, {}).items():
            if n:
                suite.add_property(f"attnconf_{status.replace(' ', '_')}", str(n))
        xml.add_testsuite(suite)
    xml.update_statistics()
    xml.write(str(path), pretty=True)
