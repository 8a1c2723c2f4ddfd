"""Helpers shared by the Keras implementation tests."""

from __future__ import annotations

import contextlib

import keras
import numpy as np

from impls.tf import attention_layers


@contextlib.contextmanager
def dtype_policy(name: str):
    """Blocks create their layers with the global policy, as the 2021 blocks did."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build(layer: str, input_shape, name="t_", **config) -> keras.Model:
    """The block on a Keras input of the global policy's dtype."""
    inputs = keras.Input(shape=input_shape[1:], dtype=keras.config.dtype_policy().compute_dtype)
    return keras.Model(inputs, getattr(attention_layers, layer)(inputs, **config, name=name))


def variables(model: keras.Model, prefix: str) -> dict[str, keras.Variable]:
    """The model's variables by canonical name (their paths less ``prefix``)."""
    assert all(v.path.startswith(prefix) for v in model.weights), [v.path for v in model.weights]
    return {v.path[len(prefix):]: v for v in model.weights}


def numpy(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)
