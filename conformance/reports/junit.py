"""The check run as JUnit XML, for CI systems (written with the ``junitparser`` package).

One test suite per layer, one test case per (implementation or pair, check, dtype) cell of the
matrix: a cell with failures or errors is a failure (its first reported failure's detail as the
message body), a cell where nothing was checked (unsupported, not implemented) is skipped with the
reason, known deviations pass with their reasons in the system-out.
"""

from __future__ import annotations

from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

from conformance.checks.engine import ERROR, FAIL, KNOWN, NOT_IMPLEMENTED, PASS, UNSUPPORTED
from conformance.runners.runner import RunResult


def write(result: RunResult, path: Path) -> None:
    xml = JUnitXml("attnconf check")
    suites: dict[str, TestSuite] = {}
    for (layer, subject, check, dtype), tally in sorted(result.tallies.items()):
        suite = suites.setdefault(layer, TestSuite(layer))
        case = TestCase(f"{subject} {check} {dtype}", classname=f"attnconf.{layer}")
        counts = ", ".join(f"{n} {status}" for status, n in sorted(tally.counts.items()))
        reported = [o for o in result.failures if (o.layer, o.impl, o.check) == (layer, subject, check) and (o.dtype == dtype or dtype == "-")]
        if tally.count(ERROR) and check == "error":
            error = Error(f"{tally.count(ERROR)} cases raised ({counts})", "error")
            error.text = reported[0].detail if reported else ""
            case.result = [error]
        elif tally.count(FAIL, ERROR):
            failure = Failure(f"{tally.count(FAIL, ERROR)} of {tally.count(PASS, FAIL, ERROR, KNOWN)} cases failed ({counts})", check)
            failure.text = reported[0].detail if reported else ""
            case.result = [failure]
        elif not tally.count(PASS, KNOWN) and tally.count(UNSUPPORTED, NOT_IMPLEMENTED):
            case.result = [Skipped("; ".join(sorted(tally.reasons)) or counts)]
        else:
            case.system_out = counts + ("\n" + "\n".join(sorted(r for r in tally.reasons if r.startswith("known"))) if tally.count(KNOWN) else "")
        suite.add_testcase(case)
    for suite in suites.values():
        xml.add_testsuite(suite)
    xml.update_statistics()
    xml.write(str(path), pretty=True)
