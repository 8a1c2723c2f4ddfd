"""The Keras implementation, seen through the conformance contract (``conformance.contract``).

Weights are read off Keras variable paths: a layer's ``<layer name>/query`` is the canonical
``query``; a block is built with a name prefix that is then stripped, so ``<prefix>Dense_0/kernel``
is the canonical ``Dense_0/kernel``. Keras layouts are the canonical layouts.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

import keras

import reference
from impls.tf import attention_layers

BLOCK_PREFIX = "attnconf_"


class KerasLayer:
    def __init__(self, model: keras.Model, prefix: str):
        self.model = model
        self.variables = {}
        for variable in model.weights:
            if not variable.path.startswith(prefix):
                raise RuntimeError(f"variable {variable.path} is outside the prefix {prefix!r}")
            self.variables[variable.path[len(prefix):]] = variable
        self._initial = {name: keras.ops.convert_to_numpy(v.value).copy() for name, v in self.variables.items()}

    def initial_weights(self) -> dict[str, np.ndarray]:
        return dict(self._initial)

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(v.shape) for name, v in self.variables.items()}

    def load_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        for name, variable in self.variables.items():
            variable.assign(weights[name])

    def forward(self, *inputs: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(self.model(list(inputs) if len(inputs) > 1 else inputs[0], training=False))


class KerasImplementation:
    name = "tf"
    layout = "channels_last"
    dtypes = ("float32", "float64")

    def not_implemented(self) -> dict[str, str]:
        return {name: "not in impls.tf.attention_layers" for name in reference.names() if not hasattr(attention_layers, name)}

    def build(self, layer: str, config: Mapping[str, Any], input_shapes, dtype: str) -> KerasLayer:
        target = getattr(attention_layers, layer)
        inputs = [keras.Input(shape=tuple(s[1:]), dtype=dtype) for s in input_shapes]
        if reference.spec(layer).kind == "layer":
            # Only the layer's own dtype argument, as a user would build it: a sublayer that
            # ignores it must show up as float32 error.
            instance = target(**config, dtype=dtype)
            outputs, prefix = instance(*inputs), instance.name + "/"
        else:
            previous_policy = keras.config.dtype_policy()
            keras.config.set_dtype_policy(dtype)  # blocks take no dtype: their layers use the global policy
            try:
                outputs, prefix = target(*inputs, **config, name=BLOCK_PREFIX), BLOCK_PREFIX
            finally:
                keras.config.set_dtype_policy(previous_policy)
        model = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs)
        return KerasLayer(model, prefix)


implementation = KerasImplementation()
