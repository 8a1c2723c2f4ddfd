"""Runs the checks of one case on one implementation, and the cross-implementation check.

Every check yields an :class:`Outcome` whose ``detail`` names the check, layer,
implementation, config, input shapes and dtype, says what was expected and what came, and
ends with one command that reproduces it.
"""

from __future__ import annotations

import json
import shlex
import traceback
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

import reference
from conformance.sampling.cases import Case
from conformance.checks.compare import Comparison, compare, output_scale
from conformance.contract import Implementation
from conformance.checks.half import to_dtype
from conformance.checks.tolerances import Tolerance, tolerance
from reference._spec import REQUIRED, is_feature_map

PASS, FAIL, ERROR = "pass", "fail", "error"
NOT_IMPLEMENTED, UNSUPPORTED, NOT_RUN, KNOWN = "not implemented", "unsupported", "not run", "known deviation"
FAILING = (FAIL, ERROR)
"""Statuses that fail a run. ``error``: the implementation raised (never filed as a check's
failure); ``unsupported``: its ``build`` raised NotImplementedError for this config (partial
support, counted and shown, never a pass); ``not implemented``: it lists the whole layer as not
implemented; ``not run``: an earlier step of the same case failed, so this check could not run;
``known deviation``: a failure the user declared with a reason (``--expect``)."""

RAISED_BY_IMPLEMENTATION = (Exception, SystemExit)
"""What an implementation's call may raise and have reported as its error. SystemExit too: an
adapter that calls ``sys.exit`` would otherwise end the run with exit status 0 and no verdict.
KeyboardInterrupt still stops the run."""

CASE_CHECKS = ("weights", "init", "output shape", "numerics")
"""The checks of one case, in order; ``error`` stands beside them when the implementation raised."""


@dataclass(frozen=True)
class Candidate:
    """An implementation and the string that loads it (for reproduce commands)."""

    ref: str
    impl: Implementation

    @property
    def name(self) -> str:
        return self.impl.name


@dataclass
class Outcome:
    check: str
    layer: str
    impl: str
    dtype: str
    status: str
    detail: str = ""
    case: Case | None = None
    comparison: Comparison | None = None
    traceback: str = ""
    """The full traceback, for ``error`` outcomes (printed with ``--traceback``)."""

    def to_dict(self) -> dict[str, Any]:
        data = {
            "check": self.check,
            "layer": self.layer,
            "impl": self.impl,
            "dtype": self.dtype,
            "status": self.status,
            "detail": self.detail,
            "case": None if self.case is None else json.loads(self.case.to_json()),
            "reproduce": next((line.split("reproduce: ", 1)[1] for line in self.detail.splitlines() if line.lstrip().startswith("reproduce: ")), None),
        }
        if self.comparison is not None:
            c = self.comparison
            data["numerics"] = {
                "max_abs": c.max_abs,
                "max_rel": c.max_rel,
                "tolerance_used": c.tolerance_used,
                "mismatches": c.mismatches,
                "total": c.total,
                "atol": c.tolerance.atol,
                "rtol": c.tolerance.rtol,
            }
        return data


def reproduce_command(impl_refs: Sequence[str], case: Case) -> str:
    impls = " ".join(f"--impl {shlex.quote(r)}" for r in impl_refs)
    return f"attnconf check {impls} --case {shlex.quote(case.to_json())}"


# --------------------------------------------------------------------------------------------
# Layout


def to_layout(array: np.ndarray, kind: str, layout: str) -> np.ndarray:
    """Canonical channels-last array -> the implementation's layout."""
    if layout == "channels_first" and is_feature_map(kind, array.ndim):
        return np.moveaxis(array, -1, 1)
    return array


def from_layout(array: np.ndarray, kind: str, layout: str, canonical_rank: int) -> np.ndarray:
    if layout == "channels_first" and array.ndim == canonical_rank and is_feature_map(kind, array.ndim):
        return np.moveaxis(array, 1, -1)
    return array


def _layout_shape(shape: tuple[int, ...], kind: str, layout: str) -> tuple[int, ...]:
    return to_layout(np.empty(shape, dtype=np.uint8), kind, layout).shape


# --------------------------------------------------------------------------------------------
# One case on one implementation


@dataclass
class CaseRun:
    outcomes: list[Outcome]
    output: np.ndarray | None  # canonical layout, float64; None if the run stopped early


def expected_output(case: Case, arrays=None) -> np.ndarray:
    inputs, weights = arrays if arrays is not None else case.arrays()
    return reference.forward(case.layer, *inputs, weights=weights, **case.config)


def run_case(
    candidate: Candidate,
    case: Case,
    arrays=None,
    expected: np.ndarray | None = None,
    expected_weights: Mapping[str, tuple[int, ...]] | None = None,
    repro: str | None = None,
) -> CaseRun:
    """Build, list weights, check initial values, load, run and compare one case.

    Every check of the case gets an outcome: after a failing or raising step, the later checks
    read ``not run``; when ``build`` raises NotImplementedError, every check reads
    ``unsupported``. ``build`` receives the case's config as the user wrote it: parameters left
    unset take the implementation's own defaults, which are semantics too.

    By default the expectations come from the reference. A golden fixture passes its stored
    ``arrays``, ``expected`` output and ``expected_weights`` instead (then ``case.config`` is
    complete), so no reference computation runs.
    """
    impl, spec = candidate.impl, reference.spec(case.layer)
    from_fixture = expected_weights is not None
    inputs, weights = arrays if arrays is not None else case.arrays()
    where = f"{case.layer} on {impl.name} ({case.dtype})"
    repro = repro or reproduce_command([candidate.ref], case)
    declared = {} if from_fixture else declared_initial_values(case.layer, case.input_shapes, case.config)
    checks = [c for c in CASE_CHECKS if c != "init" or declared]
    outcomes: list[Outcome] = []

    def outcome(check, status, detail="", **kw):
        text = f"{check}: {where}: {detail}\n  case: {case.describe()}\n  reproduce: {repro}" if status in FAILING else detail
        return Outcome(check, case.layer, impl.name, case.dtype, status, text, case, **kw)

    def stop(status, detail, after=None):
        """Every check not yet run gets ``status``; returns the finished run."""
        done = {o.check for o in outcomes}
        outcomes.extend(outcome(c, status, detail) for c in checks if c not in done and c != after)
        return CaseRun(outcomes, None)

    def raised(step, exc):
        outcomes.append(outcome("error", ERROR, f"{step} raised {_exception(exc)}", traceback="".join(traceback.format_exception(exc))))
        return stop(NOT_RUN, f"not run: {step} raised {type(exc).__name__}")

    reason = dict(impl.not_implemented()).get(case.layer)
    if reason is not None:
        return stop(NOT_IMPLEMENTED, reason)
    if from_fixture:
        want_weights, want = dict(expected_weights), tuple(expected.shape)
    else:
        want_weights = reference.weight_shapes(case.layer, *case.input_shapes, **case.config)
        want = reference.output_shape(case.layer, *case.input_shapes, **case.config)

    try:
        built = impl.build(case.layer, dict(case.config), tuple(case.input_shapes), case.dtype)
    except NotImplementedError as exc:
        return stop(UNSUPPORTED, f"unsupported: {exc}" if str(exc) else "unsupported: build raised NotImplementedError")
    except RAISED_BY_IMPLEMENTATION as exc:  # noqa: BLE001 - any exception is the implementation's, reported as such
        return raised("build", exc)

    # Weights: exact name-set equality and shapes.
    want_weights = {k: tuple(v) for k, v in want_weights.items()}
    try:
        got_shapes = {str(k): tuple(int(d) for d in v) for k, v in built.weight_shapes().items()}
    except RAISED_BY_IMPLEMENTATION as exc:  # noqa: BLE001
        return raised("weight_shapes()", exc)
    diff = weight_diff(want_weights, got_shapes)
    if diff:
        outcomes.append(outcome("weights", FAIL, diff))
        return stop(NOT_RUN, "not run: the weights check failed")
    outcomes.append(outcome("weights", PASS, f"{len(want_weights)} weights match"))
    if declared:
        outcomes.append(outcome("init", *check_initial_values(built, declared, case.dtype)))

    try:
        built.load_weights({k: to_dtype(v, case.dtype) for k, v in weights.items()})
        raw = built.forward(*(to_layout(to_dtype(x, case.dtype), i.kind, impl.layout) for x, i in zip(inputs, spec.inputs)))
        raw = np.asarray(raw)
    except RAISED_BY_IMPLEMENTATION as exc:  # noqa: BLE001
        return raised("load_weights/forward", exc)

    want_in_layout = _layout_shape(want, spec.output_kind, impl.layout)
    if tuple(raw.shape) != want_in_layout:
        layout_note = f" in {impl.layout} layout" if want_in_layout != want else ""
        outcomes.append(outcome("output shape", FAIL, f"expected {list(want_in_layout)}{layout_note}, got {list(raw.shape)}"))
        return stop(NOT_RUN, "not run: the output shape check failed")
    outcomes.append(outcome("output shape", PASS, str(list(want))))

    got = from_layout(raw.astype(np.float64), spec.output_kind, impl.layout, len(want))
    if expected is None:
        expected = expected_output(case, (inputs, weights))
    result = compare(got, expected, tolerance(case.layer, case.dtype, case), scale=output_scale(expected))
    outcomes.append(outcome("numerics", PASS if result.ok else FAIL, result.summary(), comparison=result))
    return CaseRun(outcomes, got)


def declared_initial_values(layer: str, input_shapes, config) -> dict[str, np.ndarray]:
    """The weights whose freshly built value the spec declares (fixed kernels, zero_gamma,
    BatchNorm's moving statistics, ...), in canonical layout."""
    return {w.name: w.initial_value() for w in reference.weight_specs(layer, *input_shapes, **config) if w.initial is not None}


def check_initial_values(built, declared: Mapping[str, np.ndarray], dtype: str | np.dtype) -> tuple[str, str]:
    """``(status, detail)``: the built layer's ``initial_weights()`` must equal every declared
    value rounded to its dtype, exactly; "not implemented" when it has no such method. bfloat16
    values are compared in their float32 carrier (``conformance.checks.half``)."""
    if not hasattr(built, "initial_weights"):
        return NOT_IMPLEMENTED, "initial_weights() is not provided, so initial and fixed values were not checked"
    try:
        got = {str(k): np.asarray(v) for k, v in built.initial_weights().items()}
    except RAISED_BY_IMPLEMENTATION as exc:  # noqa: BLE001
        return FAIL, f"initial_weights() raised {_exception(exc)}"
    wrong = []
    for name, value in declared.items():
        want = to_dtype(value, dtype)
        if name not in got:
            wrong.append(f"{name}: missing from initial_weights()")
        elif got[name].shape != want.shape or not np.array_equal(to_dtype(got[name], dtype), want):
            where = np.argwhere(to_dtype(got[name], dtype) != want)[0] if got[name].shape == want.shape else None
            at = f" first differing at {list(where)}: got {got[name][tuple(where)]!r}, expected {want[tuple(where)]!r}" if where is not None else f" shape {got[name].shape}, expected {want.shape}"
            wrong.append(f"{name}:{at}")
    if wrong:
        return FAIL, "freshly built values differ from the spec's declared initial values: " + "; ".join(wrong)
    return PASS, f"{len(declared)} declared initial values match"


def weight_diff(expected: Mapping[str, tuple], got: Mapping[str, tuple]) -> str:
    """Empty when equal; otherwise the missing, extra and wrong-shape names."""
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]
    wrong = [f"{k}: expected {list(expected[k])}, got {list(got[k])}" for k in expected if k in got and tuple(got[k]) != tuple(expected[k])]
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing))
    if extra:
        parts.append("extra " + ", ".join(extra))
    if wrong:
        parts.append("wrong shape " + "; ".join(wrong))
    return "; ".join(parts)


def _exception(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


# --------------------------------------------------------------------------------------------
# Implementations against each other


def cross_tolerance(layer: str, dtype: str, case: Case | None = None) -> Tolerance:
    """Two implementations each within tolerance of the reference are within the sum of both
    of each other (``case``: needed for half precision, whose tolerance depends on it)."""
    t = tolerance(layer, dtype, case)
    return Tolerance(rtol=2 * t.rtol, atol=2 * t.atol, reason="each side within its own tolerance of the reference")


def run_cross(a: Candidate, a_out: np.ndarray, b: Candidate, b_out: np.ndarray, case: Case) -> Outcome:
    name = f"{a.name} vs {b.name}"
    result = compare(a_out, b_out, cross_tolerance(case.layer, case.dtype, case), scale=output_scale(b_out))
    detail = result.summary()
    if not result.ok:
        detail = f"cross: {case.layer} {name} ({case.dtype}): {detail} (got = {a.name}, expected = {b.name})\n  case: {case.describe()}\n  reproduce: {reproduce_command([a.ref, b.ref], case)}"
    return Outcome("cross", case.layer, name, case.dtype, PASS if result.ok else FAIL, detail, case, comparison=result)


# --------------------------------------------------------------------------------------------
# Rejections


def run_rejections(candidate: Candidate, layer: str, dtype: str = "float32") -> list[Outcome]:
    """Every documented out-of-domain config or shape must make build (or forward) raise
    ValueError (or TypeError, Python's convention for a value of the wrong type)."""
    if layer in dict(candidate.impl.not_implemented()):
        return []
    spec = reference.spec(layer)
    required = [p.name for p in spec.params if p.default is REQUIRED]
    return [
        run_rejection(candidate, Case(layer, dict(rejection.config), tuple(rejection.input_shapes), 0, dtype), rejection.message)
        for rejection in spec.rejections
        # a missing positional argument is the language's error, not the domain's
        if all(name in rejection.config for name in required)
    ]


def run_rejection(candidate: Candidate, case: Case, message: str | None = None) -> Outcome:
    """One out-of-domain case: ``build`` (or ``forward``) must raise ValueError or TypeError.
    ``message`` is the reference's own error, computed when not given."""
    impl = candidate.impl
    if message is None:
        try:
            reference.validate(case.layer, *case.input_shapes, **case.config)
            message = "(the reference accepts this case)"
        except ValueError as exc:
            message = str(exc)
    label = f"{dict(case.config)} with input shapes {[list(s) for s in case.input_shapes]}"
    raised = _raises_value_error(impl, case.layer, case)
    if raised is True:
        return Outcome("rejects", case.layer, impl.name, case.dtype, PASS, f"{label}: rejected", case)
    detail = (
        f"rejects: {case.layer} on {impl.name}: {label} is outside the domain "
        f"(the reference says: {message!r}); expected ValueError or TypeError, {raised}\n"
        f"  reproduce: {reproduce_command([candidate.ref], case)}"
    )
    return Outcome("rejects", case.layer, impl.name, case.dtype, FAIL, detail, case)


def _raises_value_error(impl: Implementation, layer: str, case: Case) -> bool | str:
    # The config goes in as the user wrote it, not normalised: normalising is what is tested.
    spec = reference.spec(layer)
    try:
        built = impl.build(layer, dict(case.config), tuple(case.input_shapes), case.dtype)
        zeros = [to_layout(np.zeros(s, case.dtype), i.kind, impl.layout) for s, i in zip(case.input_shapes, spec.inputs)]
        built.forward(*zeros)
    except (ValueError, TypeError):
        # Python's convention: TypeError for a wrong type, ValueError for a wrong value.
        return True
    except NotImplementedError as exc:
        return f"got NotImplementedError: {exc}"
    except RAISED_BY_IMPLEMENTATION as exc:  # noqa: BLE001
        return f"got {_exception(exc)}"
    return "nothing was raised"
