"""The canonical semantics of the keras_cv_attention_models (07209e2, 2021) attention layers,
in plain NumPy and float64.

This module's functions are a stable contract that outside tools rely on::

    reference.names()                                    # layer names, spelled as in the README
    reference.weight_shapes(name, *input_shapes, **config)  # {canonical weight name: shape}
    reference.output_shape(name, *input_shapes, **config)   # output shape
    reference.forward(name, *inputs, weights=..., **config) # float64 ndarray

Config keywords and defaults are those of the 2021 signatures, without ``name``. Tensors are
channels-last and weights use the Keras layouts (see docs/decisions.md). Anything outside a layer's
domain raises :class:`DomainError` (a ``ValueError``) naming the parameter, value and rule.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from reference._errors import DomainError
from reference._registry import all_specs, get as spec
from reference._spec import Example, LayerSpec, Rejection, Weight

SPEC_VERSION = "0.1.0"
"""Bumped whenever any layer's semantics, domain or weights change; stored in every fixture."""

__all__ = [
    "SPEC_VERSION",
    "DomainError",
    "Example",
    "LayerSpec",
    "Rejection",
    "Weight",
    "forward",
    "names",
    "output_shape",
    "spec",
    "validate",
    "weight_shapes",
    "weight_specs",
]


def names() -> tuple[str, ...]:
    """The layer names, spelled as in the README, in the README's order."""
    return tuple(all_specs())


def validate(name: str, /, *input_shapes, **config) -> dict[str, Any]:
    """The full config (defaults filled in) if the config and input shapes are in the layer's
    domain; otherwise :class:`DomainError`."""
    full, _ = spec(name).validate(input_shapes, config)
    return full


def weight_specs(name: str, /, *input_shapes, **config) -> list[Weight]:
    """The canonical weights in declaration order, with the scale tests draw them at."""
    layer = spec(name)
    full, shapes = layer.validate(input_shapes, config)
    return list(layer.weights(full, *shapes))


def weight_shapes(name: str, /, *input_shapes, **config) -> dict[str, tuple[int, ...]]:
    """``{canonical weight name: shape}`` for these input shapes and config."""
    return {w.name: w.shape for w in weight_specs(name, *input_shapes, **config)}


def output_shape(name: str, /, *input_shapes, **config) -> tuple[int, ...]:
    layer = spec(name)
    full, shapes = layer.validate(input_shapes, config)
    return tuple(layer.output_shape(full, *shapes))


def forward(name: str, /, *inputs, weights: Mapping[str, Any], **config) -> np.ndarray:
    """Run the layer in float64 on channels-last inputs with canonical weights.

    Inputs and weights are real arrays (bool, integer or float, any memory layout), computed as
    their float64 values; complex, text and object arrays are rejected rather than converted."""
    layer = spec(name)
    arrays = [_real_array(name, f"input {index}", x) for index, x in enumerate(inputs)]
    full, shapes = layer.validate([a.shape for a in arrays], config)
    declared = list(layer.weights(full, *shapes))
    _check_weights(name, {w.name: w.shape for w in declared}, weights)
    weights64 = {w.name: _real_array(name, f"weight {w.name!r}", weights[w.name]) for w in declared}
    for w in declared:
        if w.positive and np.any(weights64[w.name] < 0):
            raise DomainError(f"{name}: weight {w.name!r} has negative values (smallest {float(weights64[w.name].min())}); a variance must be >= 0")
    out = layer.forward(*arrays, weights=weights64, **full)
    want = tuple(layer.output_shape(full, *shapes))
    if out.shape != want:
        raise RuntimeError(f"{name}: reference produced shape {out.shape}, its spec says {want}")
    return out


def _real_array(name: str, what: str, value: Any) -> np.ndarray:
    """``value`` as a C-contiguous float64 array (the layout must not move results by an ulp)."""
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise DomainError(f"{name}: {what} is not a rectangular array of numbers ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise DomainError(f"{name}: {what} has dtype {array.dtype}, expected real numbers (bool, integer or float)")
    return np.ascontiguousarray(array, dtype=np.float64)


def _check_weights(name: str, expected: Mapping[str, tuple], weights: Mapping[str, Any]) -> None:
    if not isinstance(weights, Mapping):
        raise DomainError(f"{name}: weights must be a mapping of canonical names to arrays, got {type(weights).__name__}")
    missing = [k for k in expected if k not in weights]
    extra = sorted(k for k in weights if k not in expected)
    if missing:
        raise DomainError(f"{name}: weights {missing!r} are missing; expected {list(expected)}")
    if extra:
        raise DomainError(f"{name}: weights {extra!r} are not weights of this configuration; expected {list(expected)}")
    for key, shape in expected.items():
        try:
            got = tuple(np.shape(weights[key]))
        except ValueError as exc:  # ragged nested lists
            raise DomainError(f"{name}: weight {key!r} is not a rectangular array of numbers ({exc})") from None
        if got != tuple(shape):
            raise DomainError(f"{name}: weight {key!r} has shape {got}, expected {tuple(shape)}")
