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
from conformance.checks.tolerances import Tolerance, tolerance
from reference._spec import REQUIRED, is_feature_map

PASS, FAIL, NOT_IMPLEMENTED = "pass", "fail", "not implemented"


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

    def to_dict(self) -> dict[str, Any]:
        data = {
            "check": self.check,
            "layer": self.layer,
            "impl": self.impl,
            "dtype": self.dtype,
            "status": self.status,
            "detail": self.detail,
            "case": None if self.case is None else json.loads(self.case.to_json()),
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
    """Build, list weights, load, run and compare one case; stops at the first failing step.

    By default the expectations come from the reference. A golden fixture passes its stored
    ``arrays``, ``expected`` output and ``expected_weights`` instead (then ``case.config`` must
    be complete), so no reference computation runs.
    """
    impl, spec = candidate.impl, reference.spec(case.layer)
    from_fixture = expected_weights is not None
    inputs, weights = arrays if arrays is not None else case.arrays()
    where = f"{case.layer} on {impl.name} ({case.dtype})"
    repro = repro or reproduce_command([candidate.ref], case)

    def outcome(check, status, detail="", **kw):
        text = f"{check}: {where}: {detail}\n  case: {case.describe()}\n  reproduce: {repro}" if status == FAIL else detail
        return Outcome(check, case.layer, impl.name, case.dtype, status, text, case, **kw)

    reason = dict(impl.not_implemented()).get(case.layer)
    if reason is not None:
        return CaseRun([outcome("weights", NOT_IMPLEMENTED, reason)], None)
    np_dtype = np.dtype(case.dtype)
    if from_fixture:
        full_config, want_weights, want = dict(case.config), dict(expected_weights), tuple(expected.shape)
    else:
        full_config = reference.validate(case.layer, *case.input_shapes, **case.config)
        want_weights = reference.weight_shapes(case.layer, *case.input_shapes, **case.config)
        want = reference.output_shape(case.layer, *case.input_shapes, **case.config)

    try:
        built = impl.build(case.layer, full_config, tuple(case.input_shapes), case.dtype)
    except NotImplementedError as exc:
        return CaseRun([outcome("weights", NOT_IMPLEMENTED, str(exc) or "build raised NotImplementedError")], None)
    except Exception as exc:  # noqa: BLE001 - any exception is the implementation's failure to report
        return CaseRun([outcome("weights", FAIL, f"build raised {_exception(exc)}")], None)

    # Weights: exact name-set equality and shapes.
    want_weights = {k: tuple(v) for k, v in want_weights.items()}
    try:
        got_shapes = {str(k): tuple(int(d) for d in v) for k, v in built.weight_shapes().items()}
    except Exception as exc:  # noqa: BLE001
        return CaseRun([outcome("weights", FAIL, f"weight_shapes() raised {_exception(exc)}")], None)
    diff = weight_diff(want_weights, got_shapes)
    if diff:
        return CaseRun([outcome("weights", FAIL, diff)], None)
    outcomes = [outcome("weights", PASS, f"{len(want_weights)} weights match")]
    declared = {} if from_fixture else declared_initial_values(case.layer, case.input_shapes, case.config)
    if declared:
        outcomes.append(outcome("init", *check_initial_values(built, declared, np_dtype)))

    try:
        built.load_weights({k: np.asarray(v).astype(np_dtype) for k, v in weights.items()})
        raw = built.forward(*(to_layout(np.asarray(x).astype(np_dtype), i.kind, impl.layout) for x, i in zip(inputs, spec.inputs)))
        raw = np.asarray(raw)
    except Exception as exc:  # noqa: BLE001
        outcomes.append(outcome("output shape", FAIL, f"load_weights/forward raised {_exception(exc)}"))
        return CaseRun(outcomes, None)

    want_in_layout = _layout_shape(want, spec.output_kind, impl.layout)
    if tuple(raw.shape) != want_in_layout:
        layout_note = f" in {impl.layout} layout" if want_in_layout != want else ""
        outcomes.append(outcome("output shape", FAIL, f"expected {list(want_in_layout)}{layout_note}, got {list(raw.shape)}"))
        return CaseRun(outcomes, None)
    outcomes.append(outcome("output shape", PASS, str(list(want))))

    got = from_layout(raw.astype(np.float64), spec.output_kind, impl.layout, len(want))
    if expected is None:
        expected = expected_output(case, (inputs, weights))
    result = compare(got, expected, tolerance(case.layer, case.dtype), scale=output_scale(expected))
    outcomes.append(outcome("numerics", PASS if result.ok else FAIL, result.summary(), comparison=result))
    return CaseRun(outcomes, got)


def declared_initial_values(layer: str, input_shapes, config) -> dict[str, np.ndarray]:
    """The weights whose freshly built value the spec declares (fixed kernels, zero_gamma,
    BatchNorm's moving statistics, ...), in canonical layout."""
    return {w.name: w.initial_value() for w in reference.weight_specs(layer, *input_shapes, **config) if w.initial is not None}


def check_initial_values(built, declared: Mapping[str, np.ndarray], dtype: np.dtype) -> tuple[str, str]:
    """``(status, detail)``: the built layer's ``initial_weights()`` must equal every declared
    value rounded to its dtype, exactly; "not implemented" when it has no such method."""
    if not hasattr(built, "initial_weights"):
        return NOT_IMPLEMENTED, "initial_weights() is not provided, so initial and fixed values were not checked"
    try:
        got = {str(k): np.asarray(v) for k, v in built.initial_weights().items()}
    except Exception as exc:  # noqa: BLE001
        return FAIL, f"initial_weights() raised {_exception(exc)}"
    wrong = []
    for name, value in declared.items():
        want = value.astype(dtype)
        if name not in got:
            wrong.append(f"{name}: missing from initial_weights()")
        elif got[name].shape != want.shape or not np.array_equal(got[name].astype(dtype), want):
            where = np.argwhere(got[name].astype(dtype) != want)[0] if got[name].shape == want.shape else None
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


def cross_tolerance(layer: str, dtype: str) -> Tolerance:
    """Two implementations each within tolerance of the reference are within the sum of both
    of each other."""
    t = tolerance(layer, dtype)
    return Tolerance(rtol=2 * t.rtol, atol=2 * t.atol, reason="each side within its own tolerance of the reference")


def run_cross(a: Candidate, a_out: np.ndarray, b: Candidate, b_out: np.ndarray, case: Case) -> Outcome:
    name = f"{a.name} vs {b.name}"
    result = compare(a_out, b_out, cross_tolerance(case.layer, case.dtype), scale=output_scale(b_out))
    detail = result.summary()
    if not result.ok:
        detail = f"cross: {case.layer} {name} ({case.dtype}): {detail} (got = {a.name}, expected = {b.name})\n  case: {case.describe()}\n  reproduce: {reproduce_command([a.ref, b.ref], case)}"
    return Outcome("cross", case.layer, name, case.dtype, PASS if result.ok else FAIL, detail, case, comparison=result)


# --------------------------------------------------------------------------------------------
# Rejections


def run_rejections(candidate: Candidate, layer: str, dtype: str = "float32") -> list[Outcome]:
    """Every documented out-of-domain config or shape must make build (or forward) raise
    ValueError (or TypeError, Python's convention for a value of the wrong type)."""
    impl = candidate.impl
    if layer in dict(impl.not_implemented()):
        return []
    outcomes = []
    spec = reference.spec(layer)
    required = [p.name for p in spec.params if p.default is REQUIRED]
    for rejection in spec.rejections:
        if any(name not in rejection.config for name in required):
            continue  # a missing positional argument is the language's error, not the domain's
        case = Case(layer, dict(rejection.config), tuple(rejection.input_shapes), 0, dtype)
        label = f"{dict(rejection.config)} with input shapes {[list(s) for s in rejection.input_shapes]}"
        raised = _raises_value_error(impl, layer, rejection)
        if raised is True:
            outcomes.append(Outcome("rejects", layer, impl.name, dtype, PASS, label, case))
        else:
            detail = (
                f"rejects: {layer} on {impl.name}: {label} is outside the domain "
                f"(the reference says: {rejection.message!r}); expected ValueError or TypeError, {raised}\n"
                f"  reproduce: {reproduce_command([candidate.ref], case)}"
            )
            outcomes.append(Outcome("rejects", layer, impl.name, dtype, FAIL, detail, case))
    return outcomes


def _raises_value_error(impl: Implementation, layer: str, rejection) -> bool | str:
    # Configs are passed as given, over the defaults, not normalised: normalising is what is tested.
    spec = reference.spec(layer)
    config = {**spec.defaults(), **rejection.config}
    try:
        built = impl.build(layer, config, tuple(rejection.input_shapes), "float32")
        zeros = [to_layout(np.zeros(s, np.float32), i.kind, impl.layout) for s, i in zip(rejection.input_shapes, spec.inputs)]
        built.forward(*zeros)
    except (ValueError, TypeError):
        # Python's convention: TypeError for a wrong type, ValueError for a wrong value.
        return True
    except NotImplementedError as exc:
        return f"got NotImplementedError: {exc}"
    except Exception as exc:  # noqa: BLE001
        return f"got {_exception(exc)}"
    return "nothing was raised"
