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
        self._initial: dict[str, np.ndarray] | None = None
        self._loaded = False

    def initial_weights(self) -> dict[str, np.ndarray]:
        # Read when first asked (the init check asks before loading weights), not at build:
        # a copy of every variable per build is a tenth of the build's time.
        if self._initial is None:
            if self._loaded:
                raise RuntimeError("initial_weights() must be read before load_weights() overwrites them")
            self._initial = {name: _numpy(v.value) for name, v in self.variables.items()}
        return dict(self._initial)

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(v.shape) for name, v in self.variables.items()}

    def load_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        self._loaded = True
        for name, variable in self.variables.items():
            variable.assign(keras.ops.cast(weights[name], variable.dtype))

    def forward(self, *inputs: np.ndarray) -> np.ndarray:
        # Cast to each input's own dtype: bfloat16 arrives as float32 holding bfloat16 values.
        inputs = [keras.ops.cast(x, i.dtype) for x, i in zip(inputs, self.model.inputs)]
        return _numpy(self.model(inputs if len(inputs) > 1 else inputs[0], training=False))

    def forward_training(self, *inputs: np.ndarray):
        """One forward with ``training=True`` (batch statistics, dropout active); returns the
        output and the moving statistics after the step (Keras updates them during the call)."""
        inputs = [keras.ops.cast(x, i.dtype) for x, i in zip(inputs, self.model.inputs)]
        out = _numpy(self.model(inputs if len(inputs) > 1 else inputs[0], training=True))
        return out, {name: _numpy(v.value) for name, v in self.variables.items() if name.endswith(("moving_mean", "moving_variance"))}

    def gradients(self, inputs, cotangent):
        """Gradients of ``sum(forward(*inputs) * cotangent)`` (``training=False``) by
        ``tf.GradientTape`` over the inputs and the trainable variables, under canonical names.
        Non-trainable variables (moving statistics, the fixed anti-alias kernel) are omitted;
        a variable the output does not depend on gets zeros."""
        import tensorflow as tf

        xs = [tf.constant(x) for x in inputs]
        trainable = {name: v for name, v in self.variables.items() if v.trainable}
        with tf.GradientTape() as tape:
            tape.watch(xs)
            out = self.model(xs if len(xs) > 1 else xs[0], training=False)
            total = tf.reduce_sum(out * tf.constant(cotangent, dtype=out.dtype))
        grads = tape.gradient(total, [*xs, *(v.value for v in trainable.values())], unconnected_gradients=tf.UnconnectedGradients.ZERO)
        input_grads = [np.asarray(g) for g in grads[: len(xs)]]
        weight_grads = {name: np.asarray(tf.convert_to_tensor(g)) for name, g in zip(trainable, grads[len(xs):])}
        return input_grads, weight_grads


def _numpy(tensor) -> np.ndarray:
    """A NumPy copy; bfloat16 as float32 holding its values (the contract's carrier)."""
    out = np.array(keras.ops.convert_to_numpy(tensor))
    return out.astype(np.float32) if out.dtype.name == "bfloat16" else out


class KerasImplementation:
    name = "tf"
    layout = "channels_last"
    dtypes = ("float32", "float64", "float16", "bfloat16")
    """float16 and bfloat16: built with that dtype policy (variables and compute in half), as for
    float32; bfloat16 arrays travel as float32 holding bfloat16 values (conformance.contract)."""

    def not_implemented(self) -> dict[str, str]:
        return {name: "not in impls.tf.attention_layers" for name in reference.names() if not hasattr(attention_layers, name)}

    def policy(self, dtype: str) -> str:
        """The Keras dtype policy a ``dtype`` case is built under."""
        return dtype

    def build(self, layer: str, config: Mapping[str, Any], input_shapes, dtype: str) -> KerasLayer:
        target = getattr(attention_layers, layer)
        inputs = [keras.Input(shape=tuple(s[1:]), dtype=dtype) for s in input_shapes]
        if reference.spec(layer).kind == "layer":
            # Only the layer's own dtype argument, as a user would build it: a sublayer that
            # ignores it must show up as float32 error.
            instance = target(**config, dtype=self.policy(dtype))
            outputs, prefix = instance(*inputs), instance.name + "/"
        else:
            previous_policy = keras.config.dtype_policy()
            keras.config.set_dtype_policy(self.policy(dtype))  # blocks take no dtype: their layers use the global policy
            try:
                outputs, prefix = target(*inputs, **config, name=BLOCK_PREFIX), BLOCK_PREFIX
            finally:
                keras.config.set_dtype_policy(previous_policy)
        model = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs)
        return KerasLayer(model, prefix)


class KerasMixedImplementation(KerasImplementation):
    """``tf-mixed``: the same layers under Keras' ``mixed_float16`` / ``mixed_bfloat16`` policies
    (float32 variables, half compute), as mixed-precision training builds them. Inputs arrive in the
    half dtype; weights load into the float32 variables exactly (they are on the half grid)."""

    name = "tf-mixed"
    dtypes = ("float16", "bfloat16")

    def policy(self, dtype: str) -> str:
        return f"mixed_{dtype}"


implementation = KerasImplementation()
mixed_implementation = KerasMixedImplementation()
