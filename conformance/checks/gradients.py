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
Each implementation's gradients are checked in float64 whenever it declares float64, and in
float32 only when it declares float32 but not float64 (``keras-jax`` and ``keras-torch``: Keras
3.15 computes float64 in float32 on those backends, see ``impls/keras_backends.py``); the dtype
is part of the outcome and the report shows it (``[float32]`` in the gradients cell). Both are
compared with the same float64 finite differences of the reference, on the same values (the
float16 grid is exact in both dtypes): in float32 the differences' own error (below, about 1e-8
at most) is negligible next to the float32 gradient's rounding (tolerance model, "float32").
Cases: the layer's edge cases "every size 2, last options" and "smallest" (:data:`CASE_LABELS`),
small sizes with every choice at its last and at its first option (so a weight that is trainable
under one option only, the anti-alias kernel, is differentiated); of their input and weight elements, at most :data:`MAX_ELEMENTS` per
case, chosen by the case's seed, are differentiated numerically (2 reference forwards each), and
the implementation's full gradient arrays are checked for shape and finiteness and compared at
those elements. The cotangent is standard normal on the float16 grid, drawn from the case's seed.

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

float32: an implementation that ran in float32 carries the rounding of its own float32
arithmetic, which the forward numerics check models as ``256 * eps(float32)`` for the chains of
reductions these layers are (``checks/tolerances.py``); a gradient is the same kind of chain run
backwards (cotangent times Jacobian terms, summed), so the same model is used:

    |got - fd| <= ATOL32 * scale + RTOL32 * |fd|,   ATOL32 = RTOL32 = 256 * eps32 = 3.05e-5,

with ``scale`` the larger of the RMS of the compared finite differences and the RMS of the
cotangent: the rounding is on the scale of the terms a gradient sums, which cancellation can make
larger than the gradient (LayerNorm's input gradient sums to zero over the channels), and the
cotangent's RMS is the scale of the order-one terms (floored as in float64, which never binds
here: the finite differences' error is below 1e-7 of ATOL32). Measured on both cases of all 21
layers, each implementation built in float32 (``tf`` and ``torch`` forced to float32 for the
measurement), the largest share of this tolerance used: ``keras-jax`` 2.9% (35x below),
``tf`` 8.1% (12x), ``keras-torch`` 13% (7.7x), ``torch`` 79% (1.27x); away from gradients
through a LayerNorm's input (``layer_norm``, ``mixer_block``, ``spatial_gating_block``) the
largest is 4.9% (20x, ``torch``, ``cot_attention``). Each of the four worst is LayerNorm's input
gradient on ``layer_norm`` "every size 2" (a row ``[-0.441, -0.487]``: mean 0.46, standard
deviation 0.023). ``torch`` is closest because PyTorch's CPU LayerNorm backward kernel computes
``dx = rstd * gamma * dy + b * x + c`` with ``b, c`` built from sums over the raw ``x`` and the
mean, not from ``x - mean``: the terms cancel at ``|mean| / std`` (20 here) times the rounding of
the formula the Keras implementations differentiate (``(x - mean) / sqrt(var + eps)``, about
11 eps32 here against torch's 490 eps32 on the same row). That is PyTorch's float32 accuracy, not
the suite's; the tolerance is not widened for it, and a row whose ``|mean| / std`` were 30 times
larger would fail ``torch`` in float32 and would be a true finding (torch in float64 is exact to
1e-15 there). The finite differences are the same arrays as in float64, so a float32 failure is
never the differences' error.

Kinks: relu, max pooling and the like are not differentiable at ties; with values drawn at
random from a continuous distribution (then rounded to the float16 grid) a tie within ``h`` of
an element is practically never met. A kink met would show as a failure at that element.

Implementations against each other: each in the dtype it was checked in, every returned gradient
element, ``atol = rtol`` the sum of the two shares ``256 * eps(dtype)`` (as the forward cross
check: ``2 * 256 * eps(float64)`` when both ran in float64; ``256 * (eps32 + eps64)``, the float32
tolerance, when one ran in float32; ``2 * 256 * eps32`` when both did), the outcome labelled with
the lower dtype, ``atol`` scaled by the largest RMS among the case's gradients and the cotangent (a gradient is a sum of cotangent times
Jacobian terms that may cancel, as LayerNorm's input gradient does: its own RMS can be far below
the rounding of the terms it sums).
"""

from __future__ import annotations

import dataclasses
import traceback
import zlib
from typing import Mapping

import numpy as np

import reference
from conformance.checks.compare import Comparison, compare, output_scale
from conformance.checks.engine import (
    ERROR, FAIL, NOT_IMPLEMENTED, PASS, RAISED_BY_IMPLEMENTATION, UNSUPPORTED, Candidate, Outcome, _exception, from_layout,
    reproduce_command, to_layout,
)
from conformance.checks.tolerances import Tolerance
from conformance.sampling.cases import Case, edge_cases

CHECK = "gradients"
DTYPE = "float64"
"""The dtype of the cases and of the finite differences, and the dtype an implementation's
gradients are checked in whenever it declares it."""
DTYPES = ("float64", "float32")
"""The dtypes gradients are checked in, preferred first: float32 only for an implementation that
does not declare float64."""
CASE_LABELS = ("edge: every size 2, last options", "edge: smallest")
MAX_ELEMENTS = 256
EPS = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)
STEP = EPS ** (1.0 / 3.0)
ATOL = RTOL = 1e-6
FD_ERROR_MULTIPLE = 25.0
GRADIENT_TOLERANCE = Tolerance(rtol=RTOL, atol=ATOL, reason="float64 central differences; see conformance.checks.gradients")
GRADIENT_TOLERANCES = {
    "float64": GRADIENT_TOLERANCE,
    "float32": Tolerance(rtol=256 * EPS32, atol=256 * EPS32, reason="float32 rounding, 256 eps(float32); see conformance.checks.gradients"),
}
"""Gradient against the float64 central differences, per dtype the implementation ran in."""
CROSS_EPS = {"float64": 256 * EPS, "float32": 256 * EPS32}
"""Each implementation's share of a cross tolerance: 256 eps of the dtype it ran in."""
CROSS_TOLERANCE = Tolerance(rtol=2 * 256 * EPS, atol=2 * 256 * EPS, reason="each float64 implementation within 256 eps of the exact gradient")
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


def gradient_dtype(impl, dtypes=DTYPES) -> str | None:
    """The dtype ``impl``'s gradients are checked in: float64 whenever it declares it (and it is
    among ``dtypes``, the run's), else float32; None when it declares neither."""
    return next((d for d in DTYPES if d in dtypes and d in impl.dtypes), None)


def _not_declared(impl, dtypes) -> str:
    from conformance.contract import dtype_not_declared

    wanted = [d for d in DTYPES if d in dtypes]
    return "\n".join(dtype_not_declared(impl, d) for d in wanted) if wanted else f"neither float64 nor float32 is among the checked dtypes {list(dtypes)}"


def implementation_gradients(candidate: Candidate, case: Case, inputs, weights, cot, dtype: str = DTYPE):
    """``(status, detail, (input grads canonical, weight grads))`` of the implementation built in
    ``dtype``; the grads (float64 arrays) only when it ran and returned well-shaped arrays."""
    impl, spec = candidate.impl, reference.spec(case.layer)
    reason = dict(impl.not_implemented()).get(case.layer)
    if reason is not None:
        return NOT_IMPLEMENTED, reason, None
    if dtype not in impl.dtypes:
        return NOT_IMPLEMENTED, _not_declared(impl, (dtype,)), None
    try:
        built = impl.build(case.layer, dict(case.config), tuple(case.input_shapes), dtype)
    except NotImplementedError as exc:
        return UNSUPPORTED, f"unsupported: {exc}" if str(exc) else "unsupported: build raised NotImplementedError", None
    except RAISED_BY_IMPLEMENTATION as exc:  # noqa: BLE001
        return ERROR, f"build raised {_exception(exc)}", traceback.format_exception(exc)
    if not hasattr(built, "gradients"):
        return NOT_IMPLEMENTED, "gradients() is not provided", None
    try:
        built.load_weights({k: np.asarray(v, dtype=dtype) for k, v in weights.items()})
        raw_inputs, raw_weights = built.gradients(
            [to_layout(np.asarray(x, dtype=dtype), i.kind, impl.layout) for x, i in zip(inputs, spec.inputs)],
            to_layout(np.asarray(cot, dtype=dtype), spec.output_kind, impl.layout),
        )
    except RAISED_BY_IMPLEMENTATION as exc:  # noqa: BLE001
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


def run_gradients(candidate: Candidate, case: Case, arrays=None, fd: dict | None = None, dtype: str | None = None, dtypes=DTYPES):
    """One case's gradients on one implementation against the reference's finite differences,
    in ``dtype`` (default :func:`gradient_dtype`: float64 when declared, else float32).
    Returns the outcome and the implementation's canonical gradients (None if it gave none).
    ``fd`` is a cache shared between implementations of the same case."""
    inputs, weights = arrays if arrays is not None else case.arrays()
    cot = cotangent(case)
    dtype = dtype or gradient_dtype(candidate.impl, dtypes)
    if dtype is None:
        return Outcome(CHECK, case.layer, candidate.name, DTYPE, NOT_IMPLEMENTED, _not_declared(candidate.impl, dtypes), case), None
    if dtype != case.dtype:  # the same values (the float16 grid is exact in both), labelled with the dtype run
        case = dataclasses.replace(case, dtype=dtype)
    repro = reproduce_command([candidate.ref], case)
    where = f"{case.layer} on {candidate.name} ({dtype})"
    tolerance = GRADIENT_TOLERANCES[dtype]

    def outcome(status, detail, comparison=None, tb=""):
        if status in (FAIL, ERROR):
            detail = f"{CHECK}: {where}: {detail}\n  case: {case.describe()}\n  reproduce: {repro}"
        return Outcome(CHECK, case.layer, candidate.name, dtype, status, detail, case, comparison=comparison, traceback="".join(tb) if isinstance(tb, list) else tb)

    status, detail, got = implementation_gradients(candidate, case, inputs, weights, cot, dtype)
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
    scale = gradient_scale(dtype, all_fd, cot, rounding)
    results = {}
    nonfinite = []
    for name, (idx, values) in sampled.items():
        full = got_inputs[int(name.split()[1])] if name.startswith("input ") else got_weights[name]
        if not np.all(np.isfinite(full)):
            nonfinite.append(name)
        results[name] = compare(full.reshape(-1)[idx], values, tolerance, scale=scale)
    if nonfinite:
        return outcome(FAIL, "non-finite gradient values in " + ", ".join(nonfinite)), (got_inputs, got_weights)
    if not results:
        return outcome(PASS, "nothing to differentiate"), (got_inputs, got_weights)
    bad = [n for n, r in results.items() if not r.ok]
    name, worst = _worst(results)
    count = sum(r.total for r in results.values())
    if bad:
        text = "; ".join(f"d/d {n}: {results[n].summary()}" for n in bad)
        return outcome(FAIL, f"{dtype} gradients differ from float64 central differences of the reference (flat indices): {text}", worst), (got_inputs, got_weights)
    return outcome(PASS, f"{count} sampled elements of {len(results)} {dtype} gradients within {tolerance.describe()} (scale {scale:.3g}); worst d/d {name}: {worst.summary()}", worst), (got_inputs, got_weights)


def gradient_scale(dtype: str, fd_values, cot, rounding: float) -> float:
    """What ``atol`` is multiplied by: in float64 the RMS of the compared finite differences; in
    float32 the larger of that and the cotangent's RMS (the float32 rounding is on the scale of the
    terms a gradient sums, which cancellation can make larger than the gradient itself); both
    floored at what the finite differences can tell (see the module docstring)."""
    tolerance = GRADIENT_TOLERANCES[dtype]
    scale = max(output_scale(fd_values), FD_ERROR_MULTIPLE * model_error(rounding) / tolerance.atol)
    if dtype != DTYPE:
        scale = max(scale, output_scale(cot))
    return scale


def cross_tolerance(dtype_a: str, dtype_b: str) -> Tolerance:
    """The sum of the two implementations' shares, 256 eps of the dtype each ran in."""
    if dtype_a == dtype_b == DTYPE:
        return CROSS_TOLERANCE
    t = CROSS_EPS[dtype_a] + CROSS_EPS[dtype_b]
    return Tolerance(rtol=t, atol=t, reason=f"256 eps({dtype_a}) + 256 eps({dtype_b}): each implementation within 256 eps of its dtype of the exact gradient")


def run_gradients_cross(a: Candidate, ga, b: Candidate, gb, case: Case, dtype_a: str = DTYPE, dtype_b: str = DTYPE) -> Outcome:
    """Two implementations' full gradients against each other, each in the dtype it was checked
    in; the outcome is labelled with the lower of the two, the tolerance is the sum of theirs."""
    name = f"{a.name} vs {b.name}"
    tol = cross_tolerance(dtype_a, dtype_b)
    dtype = dtype_a if DTYPES.index(dtype_a) > DTYPES.index(dtype_b) else dtype_b
    if dtype != case.dtype:
        case = dataclasses.replace(case, dtype=dtype)
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
        return Outcome(CHECK, case.layer, name, dtype, PASS, "nothing to differentiate", case)
    bad = [n for n, r in results.items() if not r.ok]
    worst_name, worst = _worst(results)
    if bad:
        text = "; ".join(f"d/d {n}: {results[n].summary()}" for n in bad)
        detail = f"{CHECK} cross: {case.layer} {name} ({dtype_a} vs {dtype_b}): {text} (got = {a.name}, expected = {b.name})\n  case: {case.describe()}\n  reproduce: {reproduce_command([a.ref, b.ref], case)}"
        return Outcome(CHECK, case.layer, name, dtype, FAIL, detail, case, comparison=worst)
    return Outcome(CHECK, case.layer, name, dtype, PASS, f"{len(results)} {dtype_a} vs {dtype_b} gradients agree; worst d/d {worst_name}: {worst.summary()}", case, comparison=worst)


def run_gradient_case(candidates: list[Candidate], case: Case, cross: bool = True, dtypes=DTYPES) -> list[Outcome]:
    """Every candidate on one gradient case (the finite differences computed once), each in its
    :func:`gradient_dtype` among ``dtypes``, then every pair that returned gradients."""
    arrays = case.arrays()
    fd: dict = {}
    outcomes, grads = [], {}
    for c in candidates:
        dtype = gradient_dtype(c.impl, dtypes)
        o, g = run_gradients(c, case, arrays, fd, dtype=dtype, dtypes=dtypes)
        outcomes.append(o)
        if g is not None:
            grads[c.ref] = (c, g, dtype)
    if cross:
        done = list(grads.values())
        for i, (a, ga, da) in enumerate(done):
            for b, gb, db in done[i + 1 :]:
                outcomes.append(run_gradients_cross(a, ga, b, gb, case, da, db))
    return outcomes
