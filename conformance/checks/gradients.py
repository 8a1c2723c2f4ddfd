"""The ``gradients`` check: an implementation's gradients against float64 central finite
differences of the reference, and implementations against each other.

Contract (optional; see ``conformance.contract``): the built layer's
``gradients(inputs, cotangent) -> (input_grads, weight_grads)`` returns the gradients of the
scalar ``sum(forward(*inputs) * cotangent)`` (inference semantics, ``training=False``: dropout is
the identity, BatchNorm uses its moving statistics) with respect to every input, in its own
layout, and every trainable weight, as ``{canonical name: array}`` in canonical layouts.
Trainable means: every weight but the fixed ones (the anti-alias kernel, ``Weight.fixed``) and
BatchNorm's moving statistics (``*moving_mean``, ``*moving_variance``), which no optimiser
updates; an implementation may return those too, and they are then ignored. A weight the
output does not depend on has a zero gradient (not a missing one).

What is compared
----------------
The check runs in float64 only: a float32 implementation's gradient carries rounding of about
``sqrt(n) * eps32`` relative, a few 1e-6, while the finite differences below are good to about
1e-9; float32 is checked through the forward numerics and the float32 cross comparison would
need its own model (not done). Cases: the layer's edge cases "every size 2" and "smallest"
(:data:`CASE_LABELS`), the smallest sizes the samplers allow; of their input and weight
elements, at most :data:`MAX_ELEMENTS` per case, chosen by the case's seed, are differentiated
numerically (2 reference forwards each), and the implementation's full gradient arrays are
checked for shape and finiteness and compared at those elements. The cotangent is standard
normal on the float16 grid, drawn from the case's seed.

Tolerance model
---------------
The central difference ``D = (f(x + h) - f(x - h)) / 2h`` of a function evaluated with absolute
rounding error ``delta`` has error

    |D - f'(x)| <= h^2 |f'''| / 6  +  delta / h.

``f`` is the sum over ``n`` output elements of ``output * cotangent``; the reference evaluates it
in float64 with ``delta <= eps * F`` up to a small factor, ``F = sum |output * cotangent|``.
With ``h = eps^(1/3) * max(1, |x|)`` (6.1e-6 for order-one values) both terms are of order
``eps^(2/3) = 3.7e-11`` times ``|f'''|`` and ``F``. Inputs and weights are drawn so that every
activation and its derivatives are of order one (see ``checks/tolerances.py``), and the cases
here have at most a few hundred output elements, so ``F`` and ``|f'''|`` stay below about 1e3
and the error below about 4e-8. The tolerance is, per compared element,

    |got - fd| <= ATOL * scale + RTOL * |fd|,   ATOL = RTOL = 1e-6,

with ``scale`` the RMS of the compared finite differences (as the numerics check scales
``atol`` by the RMS of the expected output), floored at ``FD_ERROR_MULTIPLE`` times the error
model's bound ``eps^(2/3) * (1 + F)`` / ATOL so that a gradient that is nearly zero everywhere
is not held to less than the differences can tell. A semantic slip (a missing scale, a wrong
epsilon, a transposed kernel, a gradient stopped where it should flow) moves gradients by far
more than 1e-6 relative.

Kinks: relu, max pooling and the like are not differentiable at ties; with values drawn at
random from a continuous distribution (then rounded to the float16 grid) a tie within ``h`` of
an element is practically never met. A kink met would show as a failure at that element.

Implementations against each other: both in float64, every returned gradient element,
``atol = rtol = 256 * eps(float64)`` twice (as the forward cross check), ``atol`` scaled by the
largest RMS among the case's gradients and the cotangent (a gradient is a sum of cotangent times
Jacobian terms that may cancel, as LayerNorm's input gradient does: its own RMS can be far below
the rounding of the terms it sums).
"""

from __future__ import annotations

import traceback
import zlib
from typing import Mapping

import numpy as np

import reference
from conformance.checks.compare import Comparison, compare, output_scale
from conformance.checks.engine import (
    ERROR, FAIL, NOT_IMPLEMENTED, PASS, UNSUPPORTED, Candidate, Outcome, _exception, from_layout, reproduce_command, to_layout,
)
from conformance.checks.tolerances import Tolerance
from conformance.sampling.cases import Case, edge_cases

CHECK = "gradients"
DTYPE = "float64"
CASE_LABELS = ("edge: every size 2", "edge: smallest")
MAX_ELEMENTS = 256
EPS = float(np.finfo(np.float64).eps)
STEP = EPS ** (1.0 / 3.0)
ATOL = RTOL = 1e-6
FD_ERROR_MULTIPLE = 25.0
CROSS_TOLERANCE = Tolerance(rtol=2 * 256 * EPS, atol=2 * 256 * EPS, reason="each float64 implementation within 256 eps of the exact gradient")
GRADIENT_TOLERANCE = Tolerance(rtol=RTOL, atol=ATOL, reason="float64 central differences; see conformance.checks.gradients")
NOT_TRAINABLE_SUFFIXES = ("moving_mean", "moving_variance")


def gradient_cases(layer: str) -> list[Case]:
    """The small float64 cases the gradients are checked on."""
    return [c for c in edge_cases(layer, DTYPE) if c.label in CASE_LABELS]


def trainable_weights(layer: str, input_shapes, config) -> list[str]:
    """Canonical names of the weights whose gradients are checked."""
    return [w.name for w in reference.weight_specs(layer, *input_shapes, **config) if not w.fixed and not w.name.endswith(NOT_TRAINABLE_SUFFIXES)]


def cotangent(case: Case) -> np.ndarray:
    """The output cotangent: standard normal on the float16 grid, from the case's seed."""
    shape = reference.output_shape(case.layer, *case.input_shapes, **case.config)
    rng = np.random.default_rng(zlib.crc32(f"cotangent/{case.seed}".encode()))
    return rng.standard_normal(shape).astype(np.float16).astype(np.float64)


def _targets(case: Case, inputs, weights) -> list[tuple[str, tuple[int, ...]]]:
    """``(target, flat index)`` pairs to differentiate: inputs are ``input 0``, ``input 1``, ...;
    weights their canonical names. At most MAX_ELEMENTS, a seeded sample when there are more."""
    names = [f"input {i}" for i in range(len(inputs))] + trainable_weights(case.layer, case.input_shapes, case.config)
    sizes = [np.asarray(x).size for x in inputs] + [weights[n].size for n in names[len(inputs):]]
    all_pairs = [(name, i) for name, size in zip(names, sizes) for i in range(size)]
    if len(all_pairs) <= MAX_ELEMENTS:
        return all_pairs
    rng = np.random.default_rng(zlib.crc32(f"gradient elements/{case.seed}".encode()))
    chosen = sorted(rng.choice(len(all_pairs), MAX_ELEMENTS, replace=False))
    return [all_pairs[i] for i in chosen]


def finite_differences(case: Case, inputs, weights, cot) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float]:
    """``{target: (flat indices, central differences)}`` of ``sum(reference * cot)``, and the
    rounding scale ``F = sum |reference * cot|`` of the tolerance model."""
    inputs = [np.array(x, dtype=np.float64) for x in inputs]
    weights = {k: np.array(v, dtype=np.float64) for k, v in weights.items()}

    def f() -> float:
        return float(np.sum(reference.forward(case.layer, *inputs, weights=weights, **case.config) * cot))

    rounding = float(np.sum(np.abs(reference.forward(case.layer, *inputs, weights=weights, **case.config) * cot)))
    found: dict[str, tuple[list[int], list[float]]] = {}
    for name, i in _targets(case, inputs, weights):
        array = inputs[int(name.split()[1])] if name.startswith("input ") else weights[name]
        flat = array.reshape(-1)  # a view: the arrays are contiguous copies
        x = flat[i]
        h = STEP * max(1.0, abs(x))
        h = (x + h) - x  # a step exactly representable at x
        flat[i] = x + h
        up = f()
        flat[i] = x - h
        down = f()
        flat[i] = x
        idx, val = found.setdefault(name, ([], []))
        idx.append(i)
        val.append((up - down) / (2 * h))
    return {k: (np.asarray(i, dtype=np.int64), np.asarray(v)) for k, (i, v) in found.items()}, rounding


def model_error(rounding: float) -> float:
    """The error model's bound on one central difference of order-one values:
    ``h^2 |f'''| / 6 + eps F / h`` with ``h = eps^(1/3)``, ``|f'''|`` taken as ``1 + F``."""
    return EPS ** (2.0 / 3.0) * (1.0 + rounding) * (1.0 / 6.0 + 1.0)


def implementation_gradients(candidate: Candidate, case: Case, inputs, weights, cot):
    """``(status, detail, (input grads canonical, weight grads))``; the grads only when the
    implementation ran and returned well-shaped arrays."""
    impl, spec = candidate.impl, reference.spec(case.layer)
    reason = dict(impl.not_implemented()).get(case.layer)
    if reason is not None:
        return NOT_IMPLEMENTED, reason, None
    if DTYPE not in impl.dtypes:
        return NOT_IMPLEMENTED, f"dtype {DTYPE} not declared by {impl.name}", None
    try:
        built = impl.build(case.layer, dict(case.config), tuple(case.input_shapes), DTYPE)
    except NotImplementedError as exc:
        return UNSUPPORTED, f"unsupported: {exc}" if str(exc) else "unsupported: build raised NotImplementedError", None
    except Exception as exc:  # noqa: BLE001
        return ERROR, f"build raised {_exception(exc)}", traceback.format_exception(exc)
    if not hasattr(built, "gradients"):
        return NOT_IMPLEMENTED, "gradients() is not provided", None
    out_rank = cot.ndim
    try:
        built.load_weights({k: np.asarray(v, dtype=np.float64) for k, v in weights.items()})
        raw_inputs, raw_weights = built.gradients(
            [to_layout(np.asarray(x, dtype=np.float64), i.kind, impl.layout) for x, i in zip(inputs, spec.inputs)],
            to_layout(cot, spec.output_kind, impl.layout),
        )
    except Exception as exc:  # noqa: BLE001
        return ERROR, f"load_weights/gradients raised {_exception(exc)}", traceback.format_exception(exc)
    problems = []
    raw_inputs = list(raw_inputs)
    if len(raw_inputs) != len(inputs):
        return FAIL, f"expected {len(inputs)} input gradients, got {len(raw_inputs)}", None
    got_inputs = []
    for k, (g, x, i) in enumerate(zip(raw_inputs, inputs, spec.inputs)):
        g = from_layout(np.asarray(g, dtype=np.float64), i.kind, impl.layout, x.ndim)
        if g.shape != x.shape:
            problems.append(f"input {k} gradient has shape {list(g.shape)}, expected {list(x.shape)}")
        got_inputs.append(g)
    wanted = trainable_weights(case.layer, case.input_shapes, case.config)
    got_weights = {str(k): np.asarray(v, dtype=np.float64) for k, v in dict(raw_weights).items()}
    missing = [n for n in wanted if n not in got_weights]
    unknown = [n for n in got_weights if n not in weights]
    if missing:
        problems.append("no gradient for " + ", ".join(missing))
    if unknown:
        problems.append("gradients for unknown weights " + ", ".join(unknown))
    for n in wanted:
        if n in got_weights and got_weights[n].shape != weights[n].shape:
            problems.append(f"{n} gradient has shape {list(got_weights[n].shape)}, expected {list(weights[n].shape)}")
    if problems:
        return FAIL, "; ".join(problems), None
    return PASS, "", (got_inputs, {n: got_weights[n] for n in wanted})


def _worst(results: Mapping[str, Comparison]) -> tuple[str, Comparison]:
    return max(results.items(), key=lambda item: item[1].tolerance_used)


def run_gradients(candidate: Candidate, case: Case, arrays=None, fd: dict | None = None):
    """One case's gradients on one implementation against the reference's finite differences.
    Returns the outcome and the implementation's canonical gradients (None if it gave none).
    ``fd`` is a cache shared between implementations of the same case."""
    inputs, weights = arrays if arrays is not None else case.arrays()
    cot = cotangent(case)
    repro = reproduce_command([candidate.ref], case)
    where = f"{case.layer} on {candidate.name} ({DTYPE})"

    def outcome(status, detail, comparison=None, tb=""):
        if status in (FAIL, ERROR):
            detail = f"{CHECK}: {where}: {detail}\n  case: {case.describe()}\n  reproduce: {repro}"
        return Outcome(CHECK, case.layer, candidate.name, DTYPE, status, detail, case, comparison=comparison, traceback="".join(tb) if isinstance(tb, list) else tb)

    status, detail, got = implementation_gradients(candidate, case, inputs, weights, cot)
    if status != PASS:
        return outcome(status, detail, tb=got if status == ERROR else ""), None
    got_inputs, got_weights = got
    if fd is None:
        fd = {}
    if "value" not in fd:  # computed once per case, and only when some implementation needs it
        fd["value"] = finite_differences(case, inputs, weights, cot)
    differences, rounding = fd["value"]
    sampled = differences
    all_fd = np.concatenate([v for _, v in sampled.values()]) if sampled else np.zeros(0)
    scale = max(output_scale(all_fd), FD_ERROR_MULTIPLE * model_error(rounding) / ATOL)
    results = {}
    nonfinite = []
    for name, (idx, values) in sampled.items():
        full = got_inputs[int(name.split()[1])] if name.startswith("input ") else got_weights[name]
        if not np.all(np.isfinite(full)):
            nonfinite.append(name)
        results[name] = compare(full.reshape(-1)[idx], values, GRADIENT_TOLERANCE, scale=scale)
    if nonfinite:
        return outcome(FAIL, "non-finite gradient values in " + ", ".join(nonfinite)), (got_inputs, got_weights)
    if not results:
        return outcome(PASS, "nothing to differentiate"), (got_inputs, got_weights)
    bad = [n for n, r in results.items() if not r.ok]
    name, worst = _worst(results)
    count = sum(r.total for r in results.values())
    if bad:
        text = "; ".join(f"d/d {n}: {results[n].summary()}" for n in bad)
        return outcome(FAIL, f"gradients differ from float64 central differences of the reference (flat indices): {text}", worst), (got_inputs, got_weights)
    return outcome(PASS, f"{count} sampled elements of {len(results)} gradients within {GRADIENT_TOLERANCE.describe()} (scale {scale:.3g}); worst d/d {name}: {worst.summary()}", worst), (got_inputs, got_weights)


def run_gradients_cross(a: Candidate, ga, b: Candidate, gb, case: Case) -> Outcome:
    """Two implementations' full gradients against each other (both float64)."""
    name = f"{a.name} vs {b.name}"
    tol = CROSS_TOLERANCE
    expected = [*gb[0], *gb[1].values()]
    # Gradients are sums of order-one terms (cotangent times Jacobian entries) that may cancel
    # (LayerNorm's input gradient sums to zero): atol scales with the case's largest gradient
    # RMS and the cotangent's, not with one tensor's, which cancellation can make tiny.
    scale = max([output_scale(cotangent(case))] + [output_scale(g) for g in expected])
    results = {}
    for k, (x, y) in enumerate(zip(ga[0], gb[0])):
        results[f"input {k}"] = compare(x, y, tol, scale=scale)
    for n in gb[1]:
        results[n] = compare(ga[1][n], gb[1][n], tol, scale=scale)
    if not results:
        return Outcome(CHECK, case.layer, name, DTYPE, PASS, "nothing to differentiate", case)
    bad = [n for n, r in results.items() if not r.ok]
    worst_name, worst = _worst(results)
    if bad:
        text = "; ".join(f"d/d {n}: {results[n].summary()}" for n in bad)
        detail = f"{CHECK} cross: {case.layer} {name} ({DTYPE}): {text} (got = {a.name}, expected = {b.name})\n  case: {case.describe()}\n  reproduce: {reproduce_command([a.ref, b.ref], case)}"
        return Outcome(CHECK, case.layer, name, DTYPE, FAIL, detail, case, comparison=worst)
    return Outcome(CHECK, case.layer, name, DTYPE, PASS, f"{len(results)} gradients agree; worst d/d {worst_name}: {worst.summary()}", case, comparison=worst)


def run_gradient_case(candidates: list[Candidate], case: Case, cross: bool = True) -> list[Outcome]:
    """Every candidate on one gradient case (the finite differences computed once), then every
    pair that returned gradients."""
    arrays = case.arrays()
    fd: dict = {}
    outcomes, grads = [], {}
    for c in candidates:
        o, g = run_gradients(c, case, arrays, fd)
        outcomes.append(o)
        if g is not None:
            grads[c.ref] = (c, g)
    if cross:
        done = list(grads.values())
        for i, (a, ga) in enumerate(done):
            for b, gb in done[i + 1 :]:
                outcomes.append(run_gradients_cross(a, ga, b, gb, case))
    return outcomes
