"""The ``attnconf check`` run: documented examples, edge cases, Hypothesis-drawn cases,
rejections and cross-implementation agreement for every layer, summarised per layer and
implementation.

Every case runs on every implementation, whatever failed before: the counts in the report are
the cases that ran. Each layer and dtype gets one Hypothesis search over drawn cases. When a
failure of a new kind appears (a check failing, or an implementation raising, on an
implementation or pair that had not failed that way yet), Hypothesis shrinks its case to a
minimal one, which is reported; the search then starts again with that kind known, until a
complete search meets no new kind (or ``max_failures`` kinds are known). Only the complete
search is counted, so no case is counted twice.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import Flaky

from conformance.checks import expectations as expectations_module
from conformance.checks import gradients as gradients_module
from conformance.checks import training as training_module
from conformance.checks.engine import (
    ERROR, FAIL, FAILING, KNOWN, NOT_IMPLEMENTED, NOT_RUN, PASS, UNSUPPORTED,
    Candidate, Outcome, expected_output, run_case, run_cross, run_rejections,
)
from conformance.checks.expectations import Deviation
from conformance.contract import ContractError, dtype_not_declared
from conformance.checks.tolerances import DTYPES
from conformance.sampling import strategies
from conformance.sampling.cases import Case, edge_cases, example_cases


@dataclass
class CheckSettings:
    examples: int = 25
    deterministic: bool = True
    """Draw the same cases on every run (the ci profile); the pytest route draws the same ones."""
    seed: int | None = None
    """Hypothesis' seed for a random (thorough) search: the same seed draws the same cases."""
    dtypes: tuple[str, ...] = DTYPES
    cross: bool = True
    gradients: bool = True
    """Run the gradients check (checks/gradients.py): each implementation in float64 when it
    declares it and float64 is among ``dtypes``, else in float32 when that is."""
    training: bool = True
    """Run the training-mode check where training differs (checks/training.py)."""
    max_failures: int = 5
    """Distinct kinds of failure shrunk and reported per layer and dtype; more are counted."""
    expected: list[Deviation] = field(default_factory=list)


@dataclass
class Tally:
    """Outcomes of one check for one (layer, subject, dtype): counts by status and the worst numerics."""

    counts: dict[str, int] = field(default_factory=dict)
    worst: Outcome | None = None
    reasons: set[str] = field(default_factory=set)
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, o: Outcome) -> None:
        self.outcomes.append(o)
        self.counts[o.status] = self.counts.get(o.status, 0) + 1
        if o.status in (NOT_IMPLEMENTED, UNSUPPORTED, KNOWN):
            self.reasons.add(o.detail.splitlines()[0])
        if o.comparison is not None and o.status != KNOWN and (self.worst is None or o.comparison.tolerance_used > self.worst.comparison.tolerance_used):
            self.worst = o

    def count(self, *statuses: str) -> int:
        return sum(self.counts.get(s, 0) for s in statuses)

    @property
    def status(self) -> str:
        for status in (ERROR, FAIL, PASS, KNOWN, UNSUPPORTED, NOT_IMPLEMENTED, NOT_RUN):
            if self.counts.get(status):
                return status
        return NOT_RUN


@dataclass
class RunResult:
    tallies: dict[tuple[str, str, str, str], Tally] = field(default_factory=dict)  # (layer, subject, check, dtype)
    failures: list[Outcome] = field(default_factory=list)
    """One outcome per distinct failure: the shrunk case for drawn ones."""
    more_failures: dict[tuple[str, str], int] = field(default_factory=dict)
    """(layer, dtype) -> failing drawn cases of kinds beyond ``max_failures``, counted but not shrunk."""
    examples_run: dict[tuple[str, str], int] = field(default_factory=dict)  # (layer, dtype) -> drawn cases
    fixed_cases_run: dict[tuple[str, str], int] = field(default_factory=dict)  # (layer, dtype) -> documented examples + edge cases
    stale: list[Deviation] = field(default_factory=list)
    seconds: float = 0.0

    def record(self, o: Outcome, report: bool = True) -> None:
        key = (o.layer, o.impl, o.check, o.dtype if o.check != "rejects" else "-")
        self.tallies.setdefault(key, Tally()).add(o)
        if report and o.status in FAILING:
            self.report(o)

    def report(self, o: Outcome) -> None:
        if all(f.detail != o.detail for f in self.failures):
            self.failures.append(o)

    @property
    def failed(self) -> bool:
        return any(t.count(FAIL, ERROR) for t in self.tallies.values())

    def count(self, *statuses: str) -> int:
        return sum(t.count(*statuses) for t in self.tallies.values())


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _NewFailure(Exception):
    """A failure of a kind not seen yet in this search; carries it to Hypothesis' shrinker."""

    def __init__(self, outcomes: list[Outcome]):
        super().__init__("\n".join(o.detail for o in outcomes))
        self.outcomes = outcomes

    def __reduce__(self):
        return (_NewFailure, (self.outcomes,))


NOT_REPRODUCIBLE = (
    "not reproducible: Hypothesis ran this case again and it passed, so the implementation's result "
    "depends on more than its inputs and weights (state kept between calls?); shown as first found, not shrunk"
)


def signature(o: Outcome) -> tuple[str, str]:
    return (o.impl, o.check)


def run_one_case(candidates: list[Candidate], case: Case, cross: bool, expected: list[Deviation] = ()) -> list[Outcome]:
    """All candidates on one case (shared inputs, weights and reference output), then every
    pair whose outputs both exist; declared deviations applied."""
    arrays = case.arrays()
    expected_out = expected_output(case, arrays)
    runs = {c.ref: run_case(c, case, arrays, expected_out) for c in candidates if case.dtype in c.impl.dtypes}
    outcomes = [o for r in runs.values() for o in r.outcomes]
    if cross:
        done = [c for c in candidates if c.ref in runs and runs[c.ref].output is not None]
        for i, a in enumerate(done):
            for b in done[i + 1 :]:
                outcomes.append(run_cross(a, runs[a.ref].output, b, runs[b.ref].output, case))
    return expectations_module.apply(outcomes, list(expected))


def check(candidates: list[Candidate], layers: list[str], opts: CheckSettings, progress: Callable[[str], None] = _progress, only_case: Case | None = None) -> RunResult:
    _require_distinct_names(candidates)
    result = RunResult()
    started = time.perf_counter()
    if only_case is not None:
        for o in run_one_case(candidates, only_case, opts.cross, opts.expected):
            result.record(o)
        result.seconds = time.perf_counter() - started
        return result

    steps = len(layers) * (1 + len(opts.dtypes))
    step = 0
    for layer in layers:
        step += 1
        progress(f"[{step}/{steps}] {layer}: documented examples, edge cases and rejections")
        for c in candidates:
            for o in expectations_module.apply(run_rejections(c, layer), opts.expected):
                result.record(o)
        for dtype in opts.dtypes:
            _not_declared(candidates, layer, dtype, result)
            fixed_cases = example_cases(layer, dtype) + edge_cases(layer, dtype)
            for case in fixed_cases:
                for o in run_one_case(candidates, case, opts.cross, opts.expected):
                    result.record(o)
            result.fixed_cases_run[(layer, dtype)] = len(fixed_cases) if any(dtype in c.impl.dtypes for c in candidates) else 0
        _gradients_and_training(candidates, layer, opts, result)
        for dtype in opts.dtypes:
            step += 1
            t0 = time.perf_counter()
            count = _search(candidates, layer, dtype, opts, result)
            result.examples_run[(layer, dtype)] = count
            progress(f"[{step}/{steps}] {layer} {dtype}: {count} drawn cases in {time.perf_counter() - t0:.1f}s")
    result.stale = expectations_module.stale(opts.expected, layers, [c.name for c in candidates])
    result.seconds = time.perf_counter() - started
    return result


def _require_distinct_names(candidates: list[Candidate]) -> None:
    """Results are keyed by implementation name: two of one name would merge into one row."""
    refs: dict[str, list[str]] = {}
    for c in candidates:
        refs.setdefault(c.name, []).append(c.ref)
    for name, same in refs.items():
        if len(same) > 1:
            raise ContractError(f"implementations {', '.join(same)} are all named {name!r}; the report keys results by name, so give each its own `name`")


def _gradients_and_training(candidates: list[Candidate], layer: str, opts: CheckSettings, result: RunResult) -> None:
    """The gradients check on its small edge cases (in float64, or in float32 for an
    implementation that does not declare float64), and the training-mode check (float32 and
    float64) on layers with BatchNorm or dropout."""
    outcomes = []
    if opts.gradients and any(d in opts.dtypes for d in gradients_module.DTYPES):
        for case in gradients_module.gradient_cases(layer):
            outcomes += gradients_module.run_gradient_case(candidates, case, opts.cross, dtypes=opts.dtypes)
    if opts.training and training_module.applies(layer):
        for dtype in [d for d in opts.dtypes if d in ("float32", "float64")]:
            for case in training_module.training_cases(layer, dtype):
                outcomes += training_module.run_training_case(candidates, case)
    for o in expectations_module.apply(outcomes, opts.expected):
        result.record(o)


def _not_declared(candidates: list[Candidate], layer: str, dtype: str, result: RunResult) -> None:
    for c in candidates:
        if dtype not in c.impl.dtypes:
            result.record(Outcome("numerics", layer, c.name, dtype, NOT_IMPLEMENTED, dtype_not_declared(c.impl, dtype)))


def _search(candidates: list[Candidate], layer: str, dtype: str, opts: CheckSettings, result: RunResult) -> int:
    active = [c for c in candidates if dtype in c.impl.dtypes and layer not in dict(c.impl.not_implemented())]
    if not active:
        return 0
    known: set[tuple[str, str]] = set()
    while True:
        seen: list[Outcome] = []
        count = 0

        @settings(max_examples=opts.examples, database=None, deadline=None, derandomize=False, suppress_health_check=list(HealthCheck))
        @given(case=strategies.cases(layer, dtype))
        def search(case):
            nonlocal count
            count += 1
            outcomes = run_one_case(active, case, opts.cross, opts.expected)
            new = [o for o in outcomes if o.status in FAILING and signature(o) not in known]
            if new and len(known) < opts.max_failures:
                raise _NewFailure(new)
            seen.extend(outcomes)

        seed = opts.seed if opts.seed is not None else strategies.search_seed(layer, dtype) if opts.deterministic else None
        if seed is not None:
            search = hypothesis_seed(seed)(search)
        try:
            search()
        except _NewFailure as failure:
            # Hypothesis re-raises the failure of the shrunk, minimal case.
            for o in failure.outcomes:
                result.report(o)
            known |= {signature(o) for o in failure.outcomes}
            continue
        except Flaky as flaky:
            # The failing case passed when replayed: report what failed, marked as such.
            found = [o for e in getattr(flaky, "exceptions", ()) if isinstance(e, _NewFailure) for o in e.outcomes]
            if not found:
                raise
            for o in found:  # tallied too: the final search below may never fail again
                result.record(replace(o, detail=f"{o.detail}\n{NOT_REPRODUCIBLE}"))
            known |= {signature(o) for o in found}
            continue
        for o in seen:
            result.record(o, report=False)
        beyond = sum(1 for o in seen if o.status in FAILING and signature(o) not in known)
        if beyond:
            result.more_failures[(layer, dtype)] = beyond
        return count
