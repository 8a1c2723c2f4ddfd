"""The layer x implementation matrix of a check run, as text, Markdown and JSON.

Every cell says what it counts: cases that ran the check (failures out of them), plus the cases
that could not run it and why. The legend explains every mark.
"""

from __future__ import annotations

import json
import math
from typing import Any

import reference
from conformance.checks.engine import ERROR, FAIL, KNOWN, NOT_IMPLEMENTED, NOT_RUN, PASS, UNSUPPORTED
from conformance.checks.tolerances import describe as describe_tolerance
from conformance.checks.training import applies as training_applies
from conformance.runners.runner import RunResult, Tally

SHAPE_CHECKS = ("weights", "init", "output shape")


def _headroom(t: Tally) -> str:
    c = t.worst.comparison
    factor = "exact" if c.tolerance_used == 0 else f"{1 / c.tolerance_used:.0f}x" if c.tolerance_used < 1 else f"{c.tolerance_used:.1f}x over"
    return f"{c.max_abs:.1e} ({factor})"


def _cell(t: Tally | None, numeric: bool = False) -> str:
    """``ok N`` / ``FAIL F/N`` over the N cases the check judged, then what raised and what did
    not run (a raise is the implementation's error, never counted as a judged case)."""
    if t is None:
        return "-"
    ran = t.count(PASS, FAIL, KNOWN)
    failed = t.count(FAIL)
    if ran:
        head = f"FAIL {failed}/{ran}" if failed else f"ok {ran}"
        if numeric and t.worst is not None:
            head += f" {_headroom(t)}"
    elif t.count(NOT_IMPLEMENTED) and not t.count(UNSUPPORTED, NOT_RUN):
        return "n/i"
    else:
        head = ""
    extras = [(ERROR, "raised"), (KNOWN, "known"), (UNSUPPORTED, "unsupported"), (NOT_RUN, "not run")]
    tail = [f"{t.count(status)} {word}" for status, word in extras if t.count(status)]
    return ", ".join(part for part in [head, *tail] if part) or "-"


def _merge(tallies: list[Tally]) -> Tally | None:
    if not tallies:
        return None
    merged = Tally()
    for t in tallies:
        for status, n in t.counts.items():
            merged.counts[status] = merged.counts.get(status, 0) + n
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
            if not cross and row["init"] == "-" and not declares_initial_values(layer):
                row["init"] = "n/a"
            for dtype in dtypes:
                row[dtype] = _cell(_merge(tallies("cross" if cross else "numerics", dtype)), numeric=True)
            row["rejects"] = "-" if cross else _cell(_merge(tallies("rejects")))
            row["gradients"] = _cell(_merge(tallies("gradients")), numeric=True)
            checked_in = [d for d in ("float64", "float32") if any(t.count(PASS, FAIL, ERROR, KNOWN) for t in tallies("gradients", d))]
            if checked_in:  # the dtype the gradients were checked in (float32 where float64 is not declared)
                row["gradients"] += f" [{', '.join(checked_in)}]"
            row["training"] = "-" if cross else _cell(_merge(tallies("training")), numeric=True)
            if not cross and row["training"] == "-" and not training_applies(layer):
                row["training"] = "n/a"
            errors = _merge(tallies("error"))
            row["errors"] = "-" if cross else "none" if errors is None else f"{errors.count(ERROR)} raised" + (f", {errors.count(KNOWN)} known" if errors.count(KNOWN) else "")
            table.append(row)
    return table


def declares_initial_values(layer: str) -> bool:
    spec = reference.spec(layer)
    return any(w.initial is not None for ex in spec.examples for w in reference.weight_specs(spec.name, *ex.input_shapes, **ex.config))


def _columns(dtypes):
    return ["layer", "implementation", *SHAPE_CHECKS, *dtypes, "rejects", "gradients", "training", "errors"]


def text(result: RunResult, dtypes: tuple[str, ...], strict: bool = False) -> str:
    table = rows(result, dtypes)
    columns = _columns(dtypes)
    widths = {c: max(len(c), *(len(r[c]) for r in table)) if table else len(c) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    previous = None
    for r in table:
        shown = dict(r, layer=r["layer"] if r["layer"] != previous else "")
        previous = r["layer"]
        lines.append("  ".join(shown[c].ljust(widths[c]) for c in columns).rstrip())
    return "\n".join(lines) + "\n\n" + legend(dtypes) + "\n" + details(result) + verdict(result, strict)


LEGEND = (
    "ok N: the check ran on N cases and passed on all. FAIL F/N: it failed on F of the N cases that ran it.",
    "Counts in weights, init, output shape and errors are summed over the dtypes; each dtype column counts",
    "that dtype's cases; rejects counts the documented out-of-domain inputs, once.",
    "Numerics cells add the largest abs error of the case that came closest to its tolerance, and how many",
    "times below the tolerance it stayed (\"over\" when above).",
    "K known: failures declared as known deviations (--expect), with their reasons below; not failures.",
    "U unsupported: cases whose build raised NotImplementedError (partial support): not checked, never a pass.",
    "R not run: cases where an earlier step failed or raised, so this check could not run.",
    "E raised (gradients, training): cases whose call raised, the implementation's error (in the failures below).",
    "n/i: the implementation does not implement the layer (or that dtype) at all. n/a: the layer declares no",
    "initial values. -: does not apply (cross rows compare two implementations' outputs only).",
    "errors: cases where the implementation raised (its type, message and frame are in the failure).",
    "gradients: the layer's gradients(inputs, cotangent) against float64 central differences of the reference on",
    "its small edge cases, [in the dtype checked]: float64 where declared, else float32 with a float32 tolerance",
    "(n/i without the method; cross rows compare two implementations' gradients, with the lower dtype's tolerance).",
    "training: training-mode output (batch statistics, dropout rate 0), moving statistics after one step and",
    "dropout as identity at inference (n/i without forward_training; n/a where training equals inference).",
)


def legend(dtypes) -> str:
    tols = ", ".join(f"{d}: {describe_tolerance(d)}" for d in dtypes)
    return "\n".join(LEGEND) + f"\nTolerances: {tols}, atol times the RMS of the expected output."


def details(result: RunResult) -> str:
    drawn = sum(result.examples_run.values())
    fixed = sum(result.fixed_cases_run.values())
    per = ", ".join(f"{l} {d}: {n}" for (l, d), n in sorted(result.examples_run.items()))
    lines = [f"{drawn} drawn cases and {fixed} documented examples and edge cases in {result.seconds:.1f}s"]
    if per:
        lines.append(f"drawn cases per layer and dtype: {per}")
    for (layer, dtype), n in sorted(result.more_failures.items()):
        lines.append(f"{layer} {dtype}: {n} more failing drawn cases of further kinds, counted above, not shrunk")
    reasons = sorted({r for t in result.tallies.values() for r in t.reasons})
    for kind, heading in (("known deviation", "known deviations"), ("unsupported", "unsupported cases")):
        listed = [r for r in reasons if r.startswith(kind)]
        if listed:
            lines += ["", f"{heading} ({len(listed)} distinct reasons):"] + [f"  {r}" for r in listed[:20]]
    not_declared = [r for r in reasons if r.startswith("dtype ") and " not declared by " in r]
    if not_declared:  # the n/i dtype cells, with the implementation's reason (its dtype_notes)
        lines += ["", "dtypes not declared:"] + [f"  {r}" for r in not_declared]
    for d in result.stale:
        lines += ["", f"stale deviation (matched no failure in this run): {d.describe()}"]
    for o in result.failures:
        lines += ["", o.detail]
    return "\n".join(lines) + "\n"


def verdict(result: RunResult, strict: bool = False) -> str:
    """The last line: what failed, or that everything checked passed (and what was not checked)."""
    failed = result.count(FAIL)
    raised = result.count(ERROR)
    unchecked = {"unsupported": result.count(UNSUPPORTED), "not implemented": result.count(NOT_IMPLEMENTED)}
    unchecked_text = ", ".join(f"{n} {word}" for word, n in unchecked.items() if n)
    known = result.count(KNOWN)
    notes = "; ".join(part for part in [f"{known} known deviations" if known else "", f"{len(result.stale)} stale deviations" if result.stale else "", unchecked_text] if part)
    if failed or raised:
        head = f"FAILED: {failed} failed checks and {raised} raised errors ({len(result.failures)} distinct failures reported)"
    elif not result.count(PASS, KNOWN):
        head = "NOTHING CHECKED: no check ran on any case, so there is nothing to pass"
    elif strict and (unchecked_text or result.stale):
        head = f"FAILED (--strict): not everything was checked: {unchecked_text or ''}{'; ' if unchecked_text and result.stale else ''}{f'{len(result.stale)} stale deviations' if result.stale else ''}"
        notes = ""
    else:
        head = "all checks passed"
    return head + (f" ({notes})" if notes else "")


def passed(result: RunResult, strict: bool = False) -> bool:
    """The run's verdict as the exit status gives it: everything that ran passed, something ran,
    and under ``strict`` everything was checked."""
    return verdict(result, strict).startswith("all checks passed")


def markdown(result: RunResult, dtypes: tuple[str, ...], impls: list[str], strict: bool = False) -> str:
    table = rows(result, dtypes)
    columns = _columns(dtypes)
    out = [
        "# attnconf check",
        "",
        f"Spec version {reference.SPEC_VERSION}; implementations: {', '.join(impls)}.",
        "",
        f"**{verdict(result, strict)}**",
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
    return "\n".join(out)


def as_json(result: RunResult, dtypes: tuple[str, ...], impls: list[str], settings: dict[str, Any], strict: bool = False) -> str:
    cells = []
    for (layer, subject, check, dtype), t in sorted(result.tallies.items()):
        cell = {"layer": layer, "subject": subject, "check": check, "dtype": dtype, "status": t.status, "counts": dict(sorted(t.counts.items()))}
        if t.reasons:
            cell["reasons"] = sorted(t.reasons)
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
        "passed": passed(result, strict),
        "counts": {word: result.count(status) for word, status in (("passed", PASS), ("failed", FAIL), ("raised", ERROR), ("known", KNOWN),
                                                                  ("unsupported", UNSUPPORTED), ("not implemented", NOT_IMPLEMENTED), ("not run", NOT_RUN))},
        "unchecked_reasons": sorted({r for t in result.tallies.values() for r in t.reasons if r.startswith("unsupported") or " not declared by " in r}),
        "verdict": verdict(result, strict),
        "seconds": result.seconds,
        "drawn_cases": {f"{l}/{d}": n for (l, d), n in sorted(result.examples_run.items())},
        "documented_and_edge_cases": {f"{l}/{d}": n for (l, d), n in sorted(result.fixed_cases_run.items())},
        "matrix": rows(result, dtypes),
        "cells": cells,
        "failures": [o.to_dict() for o in result.failures],
        "stale_deviations": [d.describe() for d in result.stale],
    }
    return json.dumps(payload, indent=1, sort_keys=True) + "\n"
