"""The ``training`` check: where training and inference differ, the training semantics.

Specified here (the reference's ``forward`` is inference only):

* BatchNorm in training (every BatchNorm of the 2021 code: ``batchnorm_with_activation``,
  ``cot_attention``, ``split_attention_conv2d``; all Keras ``BatchNormalization(momentum=0.9,
  epsilon=1e-5)``) normalises with the statistics of the batch, over every axis but channels:
  ``(x - mean) / sqrt(var + 1e-5) * gamma + beta`` with the BIASED variance
  ``var = mean((x - mean)^2)``, in both Keras and PyTorch. After one training step the moving
  statistics are ``moving_mean = 0.9 * moving_mean + 0.1 * mean`` and
  ``moving_variance = 0.9 * moving_variance + 0.1 * var``: Keras momentum 0.9 is PyTorch momentum
  0.1, and Keras 3 updates the moving variance with the same biased ``var`` (the canonical
  semantics, those of the 2021 Keras code), while PyTorch's ``nn.BatchNorm2d`` updates
  ``running_var`` with the UNBIASED ``var * n / (n - 1)``, ``n`` the elements per channel. That
  difference is what this check pins: an implementation that updates with the unbiased variance
  fails here (the failure names the factor), unless the deviation is declared (``--expect``).
* Dropout (``attn_dropout``, ``output_dropout``) and ``drop_rate`` (stochastic depth) are the
  identity at rate 0 in training, and the identity at any rate at inference.

Contract (optional; see ``conformance.contract``): the built layer's
``forward_training(*inputs) -> (output, moving_statistics)`` runs one training-mode forward
(Keras ``training=True``, PyTorch ``.train()``) on inputs in its own layout and returns the
output in its own layout and ``{canonical name: value}`` of every moving statistic
(``*moving_mean``, ``*moving_variance``) after that step (``{}`` for a layer without any). It may
leave the layer's moving statistics updated, as a training step does.

Cases: the layer's edge cases "every size 2" and "every size 3" (batch 2 and 3: every channel
of every BatchNorm sees ``n >= 2`` elements, so the unbiased variance exists), with dropout
rates set to 0 for the training forward and to 0.5 for the inference forward. Tolerances: those
of the numerics check (``checks/tolerances.py``); the moving statistics are compared with
``atol`` scaled by their RMS.
"""

from __future__ import annotations

import contextlib
import traceback
from dataclasses import replace

import numpy as np

import reference
import reference._conv as _conv
import reference.aotnet as _aotnet
import reference.resnest as _resnest
from conformance.checks.compare import compare, output_scale
from conformance.checks.engine import (
    ERROR, FAIL, NOT_IMPLEMENTED, PASS, RAISED_BY_IMPLEMENTATION, UNSUPPORTED, Candidate, Outcome, _exception, from_layout,
    reproduce_command, to_layout,
)
from conformance.checks.tolerances import Tolerance
from conformance.contract import dtype_not_declared
from conformance.sampling.cases import Case, edge_cases

CHECK = "training"
CASE_LABELS = ("edge: every size 2", "edge: every size 3")
DROPOUT_PARAMS = ("attn_dropout", "output_dropout", "drop_rate")
MOVING_SUFFIXES = ("moving_mean", "moving_variance")
MOMENTUM = 0.9
"""Keras' BatchNormalization momentum in the 2021 code (PyTorch's 0.1)."""
EPSILON = 1e-5
INFERENCE_RATE = 0.5
"""The dropout rate of the inference-mode identity check."""


def has_batch_norm(layer: str, case: Case) -> bool:
    return any(n.endswith(MOVING_SUFFIXES) for n in reference.weight_shapes(layer, *case.input_shapes, **case.config))


def dropout_params(layer: str) -> list[str]:
    return [p.name for p in reference.spec(layer).params if p.name in DROPOUT_PARAMS]


def applies(layer: str) -> bool:
    """Whether training differs from inference in this layer (BatchNorm or a dropout rate)."""
    cases = training_cases(layer, "float64")
    return bool(dropout_params(layer)) or any(has_batch_norm(layer, c) for c in cases)


def training_cases(layer: str, dtype: str) -> list[Case]:
    """The small cases of the check, with every dropout rate 0."""
    rates = {p: 0 for p in dropout_params(layer)}
    return [replace(c, config={**dict(c.config), **rates}) for c in edge_cases(layer, dtype) if c.label in CASE_LABELS]


# --------------------------------------------------------------------------------------------
# The specification


def batch_norm_training(x, gamma, beta, moving_mean, moving_variance, epsilon=EPSILON, *, record=None):
    """Training BatchNorm: batch statistics over every axis but the last, biased variance. Each
    call appends ``(moving_mean, moving_variance, mean, biased var, n)`` to ``record``."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    centred = x - mean
    var = (centred * centred).mean(axis=axes)
    if record is not None:
        record.append((moving_mean, moving_variance, mean, var, int(np.prod([x.shape[a] for a in axes]))))
    return centred * (gamma / np.sqrt(var + epsilon)) + beta


@contextlib.contextmanager
def _training_reference(record: list):
    """The reference with every BatchNorm in its training form. The reference calls its one
    ``reference._conv.batch_norm`` from ``reference.aotnet`` and ``reference.resnest``; both are
    substituted for the duration (and a refactor that moves the call fails loudly here)."""
    modules = (_aotnet, _resnest)
    for module in modules:
        if getattr(module, "batch_norm", None) is not _conv.batch_norm:
            raise RuntimeError(f"{module.__name__}.batch_norm is not reference._conv.batch_norm: update conformance.checks.training")

    def patched(x, gamma, beta, moving_mean, moving_variance, epsilon=EPSILON):
        return batch_norm_training(x, gamma, beta, moving_mean, moving_variance, epsilon, record=record)

    try:
        for module in modules:
            module.batch_norm = patched
        yield
    finally:
        for module in modules:
            module.batch_norm = _conv.batch_norm


def expected_training(case: Case, inputs, weights) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, int]]:
    """The training-mode output, the moving statistics after the step (biased variance, momentum
    0.9) and, per moving variance, the ``n`` its batch variance was taken over."""
    weights = {k: np.array(v, dtype=np.float64) for k, v in weights.items()}
    names = {id(v): k for k, v in weights.items()}
    record: list = []
    with _training_reference(record):
        out = reference.forward(case.layer, *inputs, weights=weights, **case.config)
    moving = {k: v.copy() for k, v in weights.items() if k.endswith(MOVING_SUFFIXES)}
    counts = {}
    for mm, mv, mean, var, n in record:
        mean_name, var_name = names.get(id(mm)), names.get(id(mv))
        if mean_name is None or var_name is None:
            raise RuntimeError(f"{case.layer}: a BatchNorm's moving statistics are not the case's weight arrays")
        moving[mean_name] = MOMENTUM * mm + (1 - MOMENTUM) * mean
        moving[var_name] = MOMENTUM * mv + (1 - MOMENTUM) * var
        counts[var_name] = n
    return out, moving, counts


def _tolerance(dtype: str) -> Tolerance:
    eps = float(np.finfo(dtype).eps)
    return Tolerance(rtol=256 * eps, atol=256 * eps, reason=f"256 * eps({dtype}), as the numerics check")


# --------------------------------------------------------------------------------------------
# The check


def run_training(candidate: Candidate, case: Case) -> Outcome:
    """One training-mode case (dropout rates 0) on one implementation: its output and its moving
    statistics after the step against the specification above; then, for a layer with dropout,
    the inference forward at rate ``INFERENCE_RATE`` against the reference."""
    impl, spec = candidate.impl, reference.spec(case.layer)
    repro = reproduce_command([candidate.ref], case)
    where = f"{case.layer} on {impl.name} ({case.dtype})"

    def outcome(status, detail, comparison=None, tb=""):
        if status in (FAIL, ERROR):
            detail = f"{CHECK}: {where}: {detail}\n  case: {case.describe()}\n  reproduce: {repro}"
        return Outcome(CHECK, case.layer, impl.name, case.dtype, status, detail, case, comparison=comparison, traceback=tb)

    reason = dict(impl.not_implemented()).get(case.layer)
    if reason is not None:
        return outcome(NOT_IMPLEMENTED, reason)
    if case.dtype not in impl.dtypes:
        return outcome(NOT_IMPLEMENTED, dtype_not_declared(impl, case.dtype))
    inputs, weights = case.arrays()
    np_dtype = np.dtype(case.dtype)
    tol = _tolerance(case.dtype)
    layout_inputs = [to_layout(np.asarray(x).astype(np_dtype), i.kind, impl.layout) for x, i in zip(inputs, spec.inputs)]
    cast_weights = {k: np.asarray(v).astype(np_dtype) for k, v in weights.items()}
    try:
        built = impl.build(case.layer, dict(case.config), tuple(case.input_shapes), case.dtype)
    except NotImplementedError as exc:
        return outcome(UNSUPPORTED, f"unsupported: {exc}")
    except RAISED_BY_IMPLEMENTATION as exc:  # noqa: BLE001
        return outcome(ERROR, f"build raised {_exception(exc)}", tb="".join(traceback.format_exception(exc)))
    if not hasattr(built, "forward_training"):
        return outcome(NOT_IMPLEMENTED, "forward_training() is not provided")
    want_out, want_moving, counts = expected_training(case, inputs, weights)
    try:
        built.load_weights(cast_weights)
        raw, moving = built.forward_training(*layout_inputs)
        raw = np.asarray(raw)
        moving = {str(k): np.asarray(v, dtype=np.float64) for k, v in dict(moving).items()}
    except RAISED_BY_IMPLEMENTATION as exc:  # noqa: BLE001
        return outcome(ERROR, f"load_weights/forward_training raised {_exception(exc)}", tb="".join(traceback.format_exception(exc)))
    got = from_layout(raw.astype(np.float64), spec.output_kind, impl.layout, want_out.ndim)
    if got.shape != want_out.shape:
        return outcome(FAIL, f"training output shape {list(got.shape)}, expected {list(want_out.shape)}")
    problems = []
    results = {"output": compare(got, want_out, tol, scale=output_scale(want_out))}
    if not results["output"].ok:
        problems.append(f"training-mode output (batch statistics, biased variance; dropout rates 0): {results['output'].summary()}")
    missing = [n for n in want_moving if n not in moving]
    if missing:
        problems.append("moving statistics not returned: " + ", ".join(missing))
    for name, want in want_moving.items():
        if name not in moving:
            continue
        result = results[name] = compare(moving[name].reshape(want.shape) if moving[name].size == want.size else moving[name], want, tol, scale=output_scale(want))
        if not result.ok:
            note = ""
            if name in counts and want.shape == moving[name].shape:
                n = counts[name]
                old = cast_weights[name].astype(np.float64)
                unbiased = MOMENTUM * old + (1 - MOMENTUM) * (want - MOMENTUM * old) / (1 - MOMENTUM) * n / (n - 1) if n > 1 else None
                if unbiased is not None and compare(moving[name], unbiased, tol, scale=output_scale(unbiased)).ok:
                    note = f" (it matches an update with the UNBIASED batch variance, n/(n-1) = {n}/{n - 1}; the spec uses the biased one, as Keras)"
            problems.append(f"{name} after one step, expected 0.9 * moving + 0.1 * batch statistic{note}: {result.summary()}")
    if dropout_params(case.layer):
        rated = replace(case, config={**dict(case.config), **{p: INFERENCE_RATE for p in dropout_params(case.layer)}})
        try:
            inf_built = impl.build(rated.layer, dict(rated.config), tuple(rated.input_shapes), rated.dtype)
            inf_built.load_weights(cast_weights)
            inf_raw = np.asarray(inf_built.forward(*layout_inputs))
        except RAISED_BY_IMPLEMENTATION as exc:  # noqa: BLE001
            return outcome(ERROR, f"inference at dropout rate {INFERENCE_RATE}: {_exception(exc)}", tb="".join(traceback.format_exception(exc)))
        want_inf = reference.forward(rated.layer, *inputs, weights=weights, **rated.config)
        inf_got = from_layout(inf_raw.astype(np.float64), spec.output_kind, impl.layout, want_inf.ndim)
        results["inference at rate 0.5"] = r = compare(inf_got, want_inf, tol, scale=output_scale(want_inf))
        if not r.ok:
            problems.append(f"inference output with {', '.join(dropout_params(case.layer))} = {INFERENCE_RATE} is not the identity dropout: {r.summary()}")
    worst_name, worst = max(results.items(), key=lambda item: item[1].tolerance_used)
    if problems:
        return outcome(FAIL, "; ".join(problems), worst)
    checked = ", ".join(results)
    return outcome(PASS, f"{checked} within {tol.describe()}; worst {worst_name}: {worst.summary()}", worst)


def run_training_case(candidates: list[Candidate], case: Case) -> list[Outcome]:
    return [run_training(c, case) for c in candidates]
