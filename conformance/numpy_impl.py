"""The smallest implementation of the contract: the reference itself, wrapped.

It passes by construction, so it checks the harness's plumbing (layouts, weights, dtypes),
and it is a template for wrapping an implementation of your own (``--impl numpy``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

import reference


class ReferenceLayer:
    def __init__(self, layer: str, config: Mapping[str, Any], input_shapes, dtype: str):
        # Validating here, as a real implementation would at construction, makes bad configs
        # raise ValueError from build().
        self.config = reference.validate(layer, *input_shapes, **config)
        self.layer, self.input_shapes, self.dtype = layer, tuple(input_shapes), np.dtype(dtype)
        # Fresh weights: the spec's declared initial values where it has them, zeros elsewhere.
        self.weights = {
            w.name: (w.initial_value() if w.initial is not None else np.zeros(w.shape)).astype(self.dtype)
            for w in reference.weight_specs(layer, *input_shapes, **self.config)
        }
        self.initial = {name: value.copy() for name, value in self.weights.items()}

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return reference.weight_shapes(self.layer, *self.input_shapes, **self.config)

    def initial_weights(self) -> dict[str, np.ndarray]:
        return dict(self.initial)

    def load_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        self.weights = {name: np.asarray(weights[name], self.dtype) for name in self.weights}

    def forward(self, *inputs: np.ndarray) -> np.ndarray:
        return reference.forward(self.layer, *inputs, weights=self.weights, **self.config).astype(self.dtype)

    def gradients(self, inputs, cotangent):
        """Float64 central differences of the reference over every input and trainable weight
        element (the plumbing of the gradients check; it passes by construction)."""
        from conformance.checks.gradients import STEP, trainable_weights

        inputs = [np.array(x, dtype=np.float64) for x in inputs]
        weights = {k: np.array(v, dtype=np.float64) for k, v in self.weights.items()}
        cot = np.asarray(cotangent, dtype=np.float64)

        def f() -> float:
            return float(np.sum(reference.forward(self.layer, *inputs, weights=weights, **self.config) * cot))

        def differentiate(array: np.ndarray) -> np.ndarray:
            flat, grad = array.reshape(-1), np.zeros(array.size)
            for i, x in enumerate(flat.copy()):
                h = (x + STEP * max(1.0, abs(x))) - x
                flat[i] = x + h
                up = f()
                flat[i] = x - h
                grad[i] = (up - f()) / (2 * h)
                flat[i] = x
            return grad.reshape(array.shape).astype(self.dtype)

        input_grads = [differentiate(x) for x in inputs]
        names = trainable_weights(self.layer, self.input_shapes, self.config)
        return input_grads, {name: differentiate(weights[name]) for name in names}

    def forward_training(self, *inputs: np.ndarray):
        """The training semantics of ``conformance.checks.training``: the output and the moving
        statistics after one step, which the layer then holds."""
        from conformance.checks.training import expected_training
        from conformance.sampling.cases import Case

        case = Case(self.layer, self.config, self.input_shapes, 0, "float64")
        out, moving, _ = expected_training(case, [np.asarray(x, dtype=np.float64) for x in inputs], self.weights)
        self.weights.update({k: v.astype(self.dtype) for k, v in moving.items()})
        return out.astype(self.dtype), {k: v.astype(self.dtype) for k, v in moving.items()}


class ReferenceImplementation:
    name = "numpy"
    layout = "channels_last"
    dtypes = ("float32", "float64")

    def not_implemented(self) -> dict[str, str]:
        return {}

    def build(self, layer, config, input_shapes, dtype) -> ReferenceLayer:
        return ReferenceLayer(layer, config, input_shapes, dtype)


implementation = ReferenceImplementation()

