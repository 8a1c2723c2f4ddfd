"""attnconf adapter for the 2021 code itself: ``keras_cv_attention_models`` 1.0.4 on Keras 2.

This checks the layers the reference was written from, as their author published them
(keras-cv-attention-models 1.0.4, 2021-09-01, the first release after the commit the spec cites,
07209e2; the last release that still exports ``MHSAWithPositionEmbedding`` and ``HaloAttention``
under the README's names). Nothing of it is copied here: the adapter imports the package and
reads its variables.

Keras 2 code needs ``TF_USE_LEGACY_KERAS=1`` (``tf.keras`` is then ``tf_keras``) before
TensorFlow is first imported, while this suite's own Keras implementation runs Keras 3, so the
implementation declares an isolated runtime (``conformance.isolation``) and every call runs in a
worker process started with that variable. One command checks both::

    pip install --no-deps keras-cv-attention-models==1.0.4 tf_keras==2.21.0
    attnconf check --impl tf --impl examples/kecam2021_adapter.py:implementation \\
        --expect examples/kecam2021_expected.toml

``--no-deps``: the 2021 package asks for ``tensorflow`` (the name of the GPU-capable wheel, not
``tensorflow-cpu``), ``tensorflow-addons`` and ``einops``; the attention layers need none of them
beyond the TensorFlow already installed (``cot_attention`` needs ``tensorflow_addons``, see
below). To keep the two packages out of the environment, install them into a folder
(``pip install --no-deps --target DIR ...``) and name it in ``ATTNCONF_KECAM2021_PATH``: only the
worker gets it on its path.

Mapping: each 2021 layer class is built with the config as written (so its own defaults and
validation are checked) and a 2021 block function is called with ``name="attnconf_"``; Keras 2
variable names are ``<layer or prefix>/<path>:0``, which, stripped, are the canonical names
(the spec took them from this code). ``rsoftmax`` takes no ``name``. ``cot_attention`` imports
``tensorflow_addons.layers.GroupNormalization``; TensorFlow Addons ended with TF 2.15 and has no
release for TF 2.21, so without it the layer is reported as not implemented, with that reason.
Differences from the reference are declared, with reasons, in ``examples/kecam2021_expected.toml``
and explained in ``docs/kecam2021.md``.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Mapping

import numpy as np

import reference

VERSION = "1.0.4"
PREFIX = "attnconf_"
PATH_VARIABLE = "ATTNCONF_KECAM2021_PATH"
NO_NAME = {"rsoftmax"}
"""2021 block functions without a ``name`` argument (and without weights)."""


def _isolation() -> dict:
    env: dict[str, str | None] = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    extra = os.environ.get(PATH_VARIABLE)
    if extra:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, os.environ.get("PYTHONPATH")) if p)
    return {"env": env}


def installed() -> str:
    """Empty when the 2021 package and tf_keras can be found (here or in ATTNCONF_KECAM2021_PATH),
    else what is missing."""
    extra = os.environ.get(PATH_VARIABLE)
    missing = []
    for name in ("keras_cv_attention_models", "tf_keras"):
        if importlib.util.find_spec(name) is None and not (extra and os.path.isdir(os.path.join(extra, name))):
            missing.append(name)
    return ", ".join(missing)


class Kecam2021Layer:
    """A 2021 layer wrapped in a Keras 2 model; weights under canonical names."""

    def __init__(self, model, prefix: str):
        self.model = model
        self.variables = {}
        for variable in model.weights:
            name = variable.name
            if not name.startswith(prefix):
                raise RuntimeError(f"variable {name} is outside the prefix {prefix!r}")
            self.variables[name[len(prefix):].removesuffix(":0")] = variable
        self._initial = {name: np.array(v.numpy()) for name, v in self.variables.items()}

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(v.shape) for name, v in self.variables.items()}

    def initial_weights(self) -> dict[str, np.ndarray]:
        return dict(self._initial)

    def load_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        for name, variable in self.variables.items():
            variable.assign(np.asarray(weights[name], dtype=variable.dtype.as_numpy_dtype))

    def _inputs(self, inputs):
        import tensorflow as tf

        return [tf.constant(np.asarray(x), dtype=i.dtype) for x, i in zip(inputs, self.model.inputs)]

    def forward(self, *inputs: np.ndarray) -> np.ndarray:
        xs = self._inputs(inputs)
        return np.array(self.model(xs if len(xs) > 1 else xs[0], training=False))

    def forward_training(self, *inputs: np.ndarray):
        xs = self._inputs(inputs)
        out = np.array(self.model(xs if len(xs) > 1 else xs[0], training=True))
        return out, {n: np.array(v.numpy()) for n, v in self.variables.items() if n.endswith(("moving_mean", "moving_variance"))}

    def gradients(self, inputs, cotangent):
        import tensorflow as tf

        xs = self._inputs(inputs)
        trainable = {name: v for name, v in self.variables.items() if v.trainable}
        with tf.GradientTape() as tape:
            tape.watch(xs)
            out = self.model(xs if len(xs) > 1 else xs[0], training=False)
            total = tf.reduce_sum(out * tf.constant(np.asarray(cotangent), dtype=out.dtype))
        grads = tape.gradient(total, [*xs, *trainable.values()], unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return [np.array(g) for g in grads[: len(xs)]], {n: np.array(tf.convert_to_tensor(g)) for n, g in zip(trainable, grads[len(xs):])}


class Kecam2021:
    name = "kecam2021"
    layout = "channels_last"
    dtypes = ("float32", "float64")

    def __init__(self):
        self.isolation = _isolation()
        self._layers = None

    def _attention_layers(self):
        if self._layers is None:
            if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
                raise RuntimeError("kecam2021 runs Keras 2 code: load it with conformance.contract.load_implementation, which starts its worker with TF_USE_LEGACY_KERAS=1")
            try:
                import tf_keras  # noqa: F401 - TF_USE_LEGACY_KERAS=1 makes tf.keras this package
                from keras_cv_attention_models import __version__, attention_layers
            except ImportError as exc:
                raise ImportError(f"kecam2021 needs: pip install --no-deps keras-cv-attention-models=={VERSION} tf_keras (matching TensorFlow) ({exc})") from exc
            if __version__ != VERSION:
                raise RuntimeError(f"kecam2021 expects keras-cv-attention-models {VERSION}, found {__version__}")
            self._layers = attention_layers
        return self._layers

    def not_implemented(self) -> dict[str, str]:
        layers = self._attention_layers()
        missing = {name: f"not in keras_cv_attention_models {VERSION} attention_layers" for name in reference.names() if not hasattr(layers, name)}
        if "cot_attention" not in missing and importlib.util.find_spec("tensorflow_addons") is None:
            missing["cot_attention"] = ("the 2021 cot_attention imports tensorflow_addons.layers.GroupNormalization; TensorFlow Addons "
                                        "ended with TF 2.15 and has no release for this TensorFlow")
        return missing

    def build(self, layer: str, config: Mapping[str, Any], input_shapes, dtype: str) -> Kecam2021Layer:
        import tensorflow as tf

        target = getattr(self._attention_layers(), layer)
        previous = tf.keras.backend.floatx()
        tf.keras.backend.set_floatx(dtype)  # blocks take no dtype: their layers use floatx
        try:
            inputs = [tf.keras.Input(shape=tuple(s[1:]), batch_size=s[0], dtype=dtype) for s in input_shapes]
            if reference.spec(layer).kind == "layer":
                instance = target(**config, dtype=dtype)
                outputs, prefix = instance(*inputs), instance.name + "/"
            elif layer in NO_NAME:
                outputs, prefix = target(*inputs, **config), ""
            else:
                outputs, prefix = target(*inputs, **config, name=PREFIX), PREFIX
            model = tf.keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs)
        finally:
            tf.keras.backend.set_floatx(previous)
        return Kecam2021Layer(model, prefix)


def implementation() -> Kecam2021:
    return Kecam2021()
