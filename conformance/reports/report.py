"""The layer x implementation matrix of a check run, as text, Markdown and JSON."""

from __future__ import annotations

import json
import math
from typing import Any

import reference
from conformance.checks.engine import FAIL, NOT_IMPLEMENTED, PASS
from conformance.runners.runner import RunResult, Tally
from conformance.checks.tolerances import tolerance

SHAPE_CHECKS = ("weights", "init", "output shape")


def _headroom(t: Tally) -> str:
    c = t.worst.comparison
    factor = "exact" if c.tolerance_used == 0 else f"{1 / c.tolerance_used:.0f}x" if c.tolerance_used < 1 else f"{c.tolerance_used:.1f}x over"
    return f"{c.max_abs:.1e} ({factor})"


def _cell(t: Tally | None, numeric: bool = False) -> str:
    if t is None:
        return "-"
    if t.status == FAIL:
        base = f"FAIL {t.failed}/{t.passed + t.failed}"
        return f"{base} {_headroom(t)}" if numeric and t.worst is not None else base
    if t.status == NOT_IMPLEMENTED:
        return "n/i"
    if numeric and t.worst is not None:
        return f"ok {_headroom(t)}"
    return f"ok {t.passed}" if t.status == PASS else t.status


def _merge(tallies: list[Tally]) -> Tally | None:
    if not tallies:
        return None
    merged = Tally()
    for t in tallies:
        merged.passed += t.passed
        merged.failed += t.failed
        merged.not_implemented += t.not_implemented
        merged.reasons |= t.reasons
        if t.worst is not None and (merged.worst is None or t.worst.comparison.tolerance_used > merged.worst.comparison.tolerance_used):
            merged.worst = t.worst
    return merged


def rows(result: RunResult, dtypes: tuple[str, ...]) -> list[dict[str, str]]:
    subjects: dict[str, list[str]] = {}
    for layer, subject, _, _ in result.tallies:
        subjects.setdefault(layer, [])
        if subject not in subjects[layer]:
            subjects[layer].append(subject)
    table = []
    for layer in [name for name in reference.names() if name in subjects]:
        for subject in sorted(subjects[layer], key=lambda s: (" vs " in s, s)):
            def tallies(check, dtype=None):
                return [t for (l, s, c, d), t in result.tallies.items() if l == layer and s == subject and c == check and (dtype is None or d == dtype)]

            cross = " vs " in subject
            row = {"layer": layer, "implementation": subject}
            for check in SHAPE_CHECKS:
                row[check] = "-" if cross else _cell(_merge(tallies(check)))
            if not cross and row["init"] == "-" and not _declares_initial_values(layer):
                row["init"] = "n/a"
            for dtype in dtypes:
                row[dtype] = _cell(_merge(tallies("cross" if cross else "numerics", dtype)), numeric=True)
            row["rejects"] = "-" if cross else _cell(_merge(tallies("rejects")))
            table.append(row)
    return table


def _declares_initial_values(layer: str) -> bool:
    spec = reference.spec(layer)
    return any(example_declares(spec, ex) for ex in spec.examples)


def example_declares(spec, example) -> bool:
    return any(w.initial is not None for w in reference.weight_specs(spec.name, *example.input_shapes, **example.config))


def _columns(dtypes):
    return ["layer", "implementation", *SHAPE_CHECKS, *dtypes, "rejects"]


def text(result: RunResult, dtypes: tuple[str, ...]) -> str:
    table = rows(result, dtypes)
    columns = _columns(dtypes)
    widths = {c: max(len(c), *(len(r[c]) for r in table)) if table else len(c) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    previous = None
    for r in table:
        shown = dict(r, layer=r["layer"] if r["layer"] != previous else "")
        previous = r["layer"]
        lines.append("  ".join(shown[c].ljust(widths[c]) for c in columns).rstrip())
    return "\n".join(lines) + "\n\n" + legend(dtypes) + "\n" + summary(result)


def legend(dtypes) -> str:
    tols = ", ".join(f"{d}: {tolerance('', d).describe()}" for d in dtypes)
    return (
        "ok N: N cases passed. Numerics cells: the largest abs error of the case that came closest to\n"
        "its tolerance, and how many times below the tolerance it stayed.\n"
        "n/i: not implemented (never a pass). Cross rows compare two implementations on the same weights.\n"
        "init: freshly built weights equal the spec's declared initial and fixed values; n/a: the layer declares none.\n"
        f"Tolerances: {tols}."
    )


def summary(result: RunResult) -> str:
    drawn = sum(result.examples_run.values())
    fixed = sum(result.fixed_cases_run.values())
    per = ", ".join(f"{l} {d}: {n}" for (l, d), n in sorted(result.examples_run.items()))
    status = f"{len(result.failures)} failure(s)" if result.failures else "all checks passed"
    lines = [f"{status}; {drawn} drawn cases and {fixed} documented examples and edge cases in {result.seconds:.1f}s"]
    if per:
        lines.append(f"drawn cases per layer and dtype: {per}")
    for o in result.failures:
        lines.append("")
        lines.append(o.detail)
    return "\n".join(lines)


def markdown(result: RunResult, dtypes: tuple[str, ...], impls: list[str]) -> str:
    table = rows(result, dtypes)
    columns = _columns(dtypes)
    out = [
        "# attnconf check",
        "",
        f"Spec version {reference.SPEC_VERSION}; implementations: {', '.join(impls)}.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    out += ["| " + " | ".join(r[c] for c in columns) + " |" for r in table]
    out += ["", legend(dtypes).replace("\n", "  \n"), ""]
    if result.failures:
        out += ["## Failures", ""]
        for o in result.failures:
            out += ["```", o.detail, "```", ""]
    else:
        out += ["All checks passed.", ""]
    return "\n".join(out)


def as_json(result: RunResult, dtypes: tuple[str, ...], impls: list[str], settings: dict[str, Any]) -> str:
    cells = []
    for (layer, subject, check, dtype), t in sorted(result.tallies.items()):
        cell = {"layer": layer, "subject": subject, "check": check, "dtype": dtype, "status": t.status, "passed": t.passed, "failed": t.failed, "not_implemented": t.not_implemented}
        if t.reasons:
            cell["not_implemented_reasons"] = sorted(t.reasons)
        if t.worst is not None:
            c = t.worst.comparison
            cell["max_abs_error"] = c.max_abs
            cell["max_rel_error"] = c.max_rel if math.isfinite(c.max_rel) else None
            cell["tolerance_used"] = c.tolerance_used
            cell["headroom"] = c.headroom if math.isfinite(c.headroom) else None
            cell["atol"], cell["rtol"] = c.tolerance.atol, c.tolerance.rtol
            cell["worst_case"] = t.worst.to_dict()["case"]
        cells.append(cell)
    payload = {
        "spec_version": reference.SPEC_VERSION,
        "implementations": impls,
        "settings": settings,
        "passed": not result.failures,
        "seconds": result.seconds,
        "drawn_cases": {f"{l}/{d}": n for (l, d), n in sorted(result.examples_run.items())},
        "documented_and_edge_cases": {f"{l}/{d}": n for (l, d), n in sorted(result.fixed_cases_run.items())},
        "matrix": rows(result, dtypes),
        "cells": cells,
        "failures": [o.to_dict() for o in result.failures],
    }
    return json.dumps(payload, indent=1, sort_keys=True) + "\n"
