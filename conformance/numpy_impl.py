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


class ReferenceImplementation:
    name = "numpy"
    layout = "channels_last"
    dtypes = ("float32", "float64")

    def not_implemented(self) -> dict[str, str]:
        return {}

    def build(self, layer, config, input_shapes, dtype) -> ReferenceLayer:
        return ReferenceLayer(layer, config, input_shapes, dtype)


implementation = ReferenceImplementation()
