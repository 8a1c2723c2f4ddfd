"""The ``attnconf check`` run: documented examples, Hypothesis-drawn cases, rejections and
cross-implementation agreement for every layer, summarised per layer and implementation.

Each layer and dtype gets one Hypothesis search that runs every implementation still passing
on each drawn case. When one fails, Hypothesis shrinks the case to a minimal one, that
failure is recorded, the implementation (or pair, for cross checks) leaves the search, and
the search resumes for the others.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed

from conformance.sampling import strategies
from conformance.sampling.cases import Case, edge_cases, example_cases
from conformance.checks.engine import FAIL, NOT_IMPLEMENTED, PASS, Candidate, Outcome, expected_output, run_case, run_cross, run_rejections
from conformance.checks.tolerances import DTYPES


@dataclass
class CheckSettings:
    examples: int = 25
    derandomize: bool = True
    seed: int | None = None
    """Hypothesis' seed for a random (not derandomized) search: the same seed draws the same cases."""
    dtypes: tuple[str, ...] = DTYPES
    cross: bool = True


@dataclass
class Tally:
    """Outcomes of one check for one (layer, subject, dtype): counts and the worst numerics."""

    passed: int = 0
    failed: int = 0
    not_implemented: int = 0
    worst: Outcome | None = None
    first_failure: Outcome | None = None
    reasons: set[str] = field(default_factory=set)

    def add(self, o: Outcome) -> None:
        if o.status == PASS:
            self.passed += 1
        elif o.status == FAIL:
            self.failed += 1
            self.first_failure = self.first_failure or o
        else:
            self.not_implemented += 1
            self.reasons.add(o.detail)
        if o.comparison is not None and (self.worst is None or o.comparison.tolerance_used > self.worst.comparison.tolerance_used):
            self.worst = o

    @property
    def status(self) -> str:
        if self.failed:
            return FAIL
        if self.passed:
            return PASS
        return NOT_IMPLEMENTED if self.not_implemented else "not run"


@dataclass
class RunResult:
    tallies: dict[tuple[str, str, str, str], Tally] = field(default_factory=dict)  # (layer, subject, check, dtype)
    failures: list[Outcome] = field(default_factory=list)
    examples_run: dict[tuple[str, str], int] = field(default_factory=dict)  # (layer, dtype) -> drawn cases
    fixed_cases_run: dict[tuple[str, str], int] = field(default_factory=dict)  # (layer, dtype) -> documented examples + edge cases
    seconds: float = 0.0

    def record(self, o: Outcome) -> None:
        key = (o.layer, o.impl, o.check, o.dtype if o.check != "rejects" else "-")
        self.tallies.setdefault(key, Tally()).add(o)
        if o.status == FAIL and all(f.detail != o.detail for f in self.failures):
            self.failures.append(o)

    @property
    def failed(self) -> bool:
        return bool(self.failures)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Stop(Exception):
    """A check failed on this case; carries the failing outcomes to Hypothesis' shrinker."""

    def __init__(self, outcomes: list[Outcome]):
        super().__init__("\n".join(o.detail for o in outcomes))
        self.outcomes = outcomes


def run_one_case(candidates: list[Candidate], case: Case, cross: bool) -> list[Outcome]:
    """All candidates on one case (shared inputs, weights and reference output), then every pair."""
    arrays = case.arrays()
    expected = expected_output(case, arrays)
    runs = {c.ref: run_case(c, case, arrays, expected) for c in candidates if case.dtype in c.impl.dtypes}
    outcomes = [o for r in runs.values() for o in r.outcomes]
    if cross:
        done = [c for c in candidates if c.ref in runs and runs[c.ref].output is not None]
        for i, a in enumerate(done):
            for b in done[i + 1 :]:
                outcomes.append(run_cross(a, runs[a.ref].output, b, runs[b.ref].output, case))
    return outcomes


def check(candidates: list[Candidate], layers: list[str], opts: CheckSettings, progress: Callable[[str], None] = _progress, only_case: Case | None = None) -> RunResult:
    result = RunResult()
    started = time.perf_counter()
    if only_case is not None:
        for o in run_one_case(candidates, only_case, opts.cross):
            result.record(o)
        result.seconds = time.perf_counter() - started
        return result

    steps = len(layers) * (1 + len(opts.dtypes))
    step = 0
    for layer in layers:
        step += 1
        progress(f"[{step}/{steps}] {layer}: documented examples, edge cases and rejections")
        for c in candidates:
            for o in run_rejections(c, layer):
                result.record(o)
        for dtype in opts.dtypes:
            fixed_cases = example_cases(layer, dtype) + edge_cases(layer, dtype)
            for case in fixed_cases:
                for o in run_one_case(candidates, case, opts.cross):
                    result.record(o)
            result.fixed_cases_run[(layer, dtype)] = len(fixed_cases)
        for dtype in opts.dtypes:
            step += 1
            t0 = time.perf_counter()
            count = _search(candidates, layer, dtype, opts, result)
            result.examples_run[(layer, dtype)] = count
            progress(f"[{step}/{steps}] {layer} {dtype}: {count} drawn cases in {time.perf_counter() - t0:.1f}s")
    result.seconds = time.perf_counter() - started
    return result


def _search(candidates: list[Candidate], layer: str, dtype: str, opts: CheckSettings, result: RunResult) -> int:
    active = [c for c in candidates if dtype in c.impl.dtypes and layer not in dict(c.impl.not_implemented())]
    for c in candidates:
        if c not in active:
            reason = dict(c.impl.not_implemented()).get(layer) or f"dtype {dtype} not declared"
            result.record(Outcome("numerics", layer, c.name, dtype, NOT_IMPLEMENTED, reason))
    dropped_pairs: set[str] = set()
    count = 0
    while active:
        seen: list[Outcome] = []

        @settings(
            max_examples=opts.examples,
            derandomize=opts.derandomize,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategies.cases(layer, dtype))
        def search(case):
            nonlocal count
            count += 1
            outcomes = [o for o in run_one_case(active, case, opts.cross) if o.impl not in dropped_pairs]
            seen.extend(outcomes)
            failed = [o for o in outcomes if o.status == FAIL]
            if failed:
                raise _Stop(failed)

        if opts.seed is not None and not opts.derandomize:
            search = hypothesis_seed(opts.seed)(search)
        try:
            search()
        except _Stop as stop:
            # Hypothesis re-raises the failure of the shrunk, minimal case.
            for o in stop.outcomes:
                result.record(o)
            failed = {o.impl for o in stop.outcomes}
            dropped_pairs |= {name for name in failed if " vs " in name}
            active = [c for c in active if c.name not in failed]
            _record_passes(result, seen, exclude=failed)
            continue  # every round drops at least one implementation or pair, so this ends
        _record_passes(result, seen, exclude=set())
        break
    return count


def _record_passes(result: RunResult, seen: list[Outcome], exclude: set[str]) -> None:
    for o in seen:
        if o.status != FAIL and o.impl not in exclude:
            result.record(o)
