"""The project's Keras 3 layers (``impls/tf``) on Keras' JAX and PyTorch backends.

``keras-jax`` and ``keras-torch`` are the Keras implementation (``impls.tf.adapter``) run with
``KERAS_BACKEND=jax`` / ``KERAS_BACKEND=torch``. Keras reads its backend once, when it is first
imported, so each declares an isolated runtime (``conformance.isolation``) and runs in its own
worker process: ``attnconf check --impl tf --impl keras-jax --impl keras-torch --impl torch``
checks all four in one command, cross checks included.

This module imports no framework: the objects below are what the suite loads in its own process
(only their ``isolation`` is read there) and, unchanged, what the worker loads and calls; they
import Keras on first use, in the worker, after its environment is set.

JAX runs on the CPU (``JAX_PLATFORMS=cpu``) with 64-bit types on (``JAX_ENABLE_X64=1``): without
that flag JAX silently computes float64 in float32. ``forward`` runs the model as Keras' own
``predict`` does on JAX: ``jax.jit`` of ``Model.stateless_call`` (op-by-op eager JAX compiles every
op for every new shape, about five times slower here), and ``gradients`` is ``jax.grad`` of it
(on PyTorch, ``torch.autograd``; the adapter's own use ``tf.GradientTape``). Install JAX with ``pip install "attnconf[jax]"``.

float64 is declared only where the backend computes in it: at start the worker runs the ops the
layers use (``_FLOAT64_PROBES``) on float64 values that float32 cannot hold and compares them with
NumPy. Keras 3.15 fails that on both backends: its ``result_type`` maps float64 to float32 on every
backend but TensorFlow (keras-team/keras#23704), so on torch ``ops.matmul``, ``maximum``, ``mean``
and ``var``, and on JAX ``ops.mean``, ``var`` and ``tanh``, compute float64 tensors in float32.
Both then declare float32 only (and the half dtypes of the Keras adapter), say why in
``dtype_notes`` (which the report shows in the float64 cells' "not implemented" reason) and on
stderr when they start, and float64 returns by itself once Keras keeps it
(``ATTNCONF_KERAS_FLOAT64=1`` declares it anyway, to see which layers the downcast breaks). The
``gradients`` check runs in float64 where it is declared and otherwise in float32, with a float32
tolerance (``conformance.checks.gradients``), so both are checked in float32 while that lasts.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping

import numpy as np

BACKEND_ENV = {
    "jax": {"KERAS_BACKEND": "jax", "JAX_ENABLE_X64": "1", "JAX_PLATFORMS": "cpu"},
    "torch": {"KERAS_BACKEND": "torch"},
}

FORCE_FLOAT64 = "ATTNCONF_KERAS_FLOAT64"
"""Set to 1 to declare float64 even where the backend downcasts it (to see which layers it breaks)."""

INSTALL_HINT = {
    "jax": 'pip install "attnconf[jax]" (JAX for the CPU)',
    "torch": 'pip install "attnconf[torch]"',
}


class KerasOnBackend:
    """The Keras implementation on one Keras backend, declared to run in its own process."""

    layout = "channels_last"

    def __init__(self, backend: str):
        self.backend = backend
        self.name = f"keras-{backend}"
        self.isolation = {"env": dict(BACKEND_ENV[backend])}
        self._adapter: Any = None
        self._dtypes: tuple[str, ...] | None = None
        self._dtype_notes: dict[str, str] = {}

    @property
    def dtypes(self) -> tuple[str, ...]:
        """In the worker, the Keras adapter's dtypes less float64 where this backend computes
        float64 ops in float32; elsewhere (only the declaration is read there) float32 and float64."""
        from conformance.isolation import in_worker

        if not in_worker():
            return ("float32", "float64")
        if self._dtypes is None:
            declared = tuple(self._keras_adapter().dtypes)
            dropped = _float64_downcasts() if "float64" in declared else ""
            if dropped and os.environ.get(FORCE_FLOAT64) == "1":
                print(f"{self.name}: float64 declared anyway ({FORCE_FLOAT64}=1): {dropped}", file=sys.stderr, flush=True)
                dropped = ""
            elif dropped:
                print(f"{self.name}: float64 is not declared: {dropped}", file=sys.stderr, flush=True)
            self._dtypes = tuple(d for d in declared if not (dropped and d == "float64"))
            self._dtype_notes = {"float64": dropped} if dropped else {}
        return self._dtypes

    @property
    def dtype_notes(self) -> dict[str, str]:
        """{dtype: why it is not declared}: float64 with the downcast the probes found, in the
        worker; empty elsewhere (only the declaration is read there)."""
        from conformance.isolation import in_worker

        if not in_worker():
            return {}
        self.dtypes  # noqa: B018 - runs the probes once
        return dict(self._dtype_notes)

    def _keras_adapter(self) -> Any:
        if self._adapter is not None:
            return self._adapter
        try:
            __import__(self.backend)
        except ImportError as exc:
            raise ImportError(f"{self.name} needs {self.backend}: {INSTALL_HINT[self.backend]} ({exc})") from exc
        import keras

        running = keras.backend.backend()
        if running != self.backend:
            raise RuntimeError(
                f"{self.name}: this process's Keras runs the {running!r} backend; load it with "
                f"conformance.contract.load_implementation({self.name!r}), which runs it in a worker process with KERAS_BACKEND={self.backend}"
            )
        if self.backend == "jax":
            import jax

            if not jax.config.jax_enable_x64:
                raise RuntimeError(f"{self.name}: JAX runs without 64-bit types (set JAX_ENABLE_X64=1), so float64 would be computed in float32")
        from impls.tf.adapter import implementation

        self._adapter = implementation
        return implementation

    def not_implemented(self) -> dict[str, str]:
        return self._keras_adapter().not_implemented()

    def build(self, layer: str, config: Mapping[str, Any], input_shapes, dtype: str):
        built = self._keras_adapter().build(layer, config, input_shapes, dtype)
        return (JaxKerasLayer if self.backend == "jax" else TorchKerasLayer)(built)


class _BackendKerasLayer:
    """A built Keras layer (``impls.tf.adapter.KerasLayer``) with the backend's own gradients
    (the adapter's use ``tf.GradientTape``)."""

    def __init__(self, built: Any):
        self.built = built

    def initial_weights(self) -> dict[str, np.ndarray]:
        return self.built.initial_weights()

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.built.weight_shapes()

    def load_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        self.built.load_weights(weights)

    def forward(self, *inputs: np.ndarray) -> np.ndarray:
        return self.built.forward(*inputs)

    def forward_training(self, *inputs: np.ndarray):
        return self.built.forward_training(*inputs)

    def _inputs(self, inputs) -> list:
        import keras

        return [keras.ops.cast(x, i.dtype) for x, i in zip(inputs, self.built.model.inputs)]

    def _trainable(self) -> dict[str, Any]:
        """{canonical name: variable} of the trainable variables, in the model's order."""
        by_id = {id(v): name for name, v in self.built.variables.items()}
        return {by_id[id(v)]: v for v in self.built.model.trainable_variables}


class JaxKerasLayer(_BackendKerasLayer):
    """On JAX, ``forward`` is ``jax.jit`` of the model's ``stateless_call`` (as Keras' predict
    runs it) and ``gradients`` is ``jax.grad`` of it."""

    def __init__(self, built: Any):
        import jax

        super().__init__(built)
        model = built.model

        def call(trainable, non_trainable, inputs):
            return model.stateless_call(trainable, non_trainable, inputs if len(inputs) > 1 else inputs[0], training=False)[0]

        def total(inputs, trainable, non_trainable, cotangent):
            return (call(trainable, non_trainable, inputs) * cotangent).sum()

        self._call = jax.jit(call)
        self._grad = jax.jit(jax.grad(total, argnums=(0, 1)))

    def _values(self):
        model = self.built.model
        return [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables]

    def forward(self, *inputs: np.ndarray) -> np.ndarray:
        from impls.tf.adapter import _numpy

        trainable, non_trainable = self._values()
        return _numpy(self._call(trainable, non_trainable, self._inputs(inputs)))

    def gradients(self, inputs, cotangent):
        import jax.numpy as jnp

        trainable, non_trainable = self._values()
        xs = self._inputs(inputs)
        input_grads, weight_grads = self._grad(xs, trainable, non_trainable, jnp.asarray(cotangent, dtype=xs[0].dtype))
        names = list(self._trainable())
        return [np.asarray(g) for g in input_grads], {name: np.asarray(g) for name, g in zip(names, weight_grads)}


class TorchKerasLayer(_BackendKerasLayer):
    """On PyTorch, ``gradients`` is ``torch.autograd.grad`` of the eager model."""

    def gradients(self, inputs, cotangent):
        import torch

        xs = [x.detach().clone().requires_grad_(True) for x in self._inputs(inputs)]
        trainable = self._trainable()
        out = self.built.model(xs if len(xs) > 1 else xs[0], training=False)
        total = (out * torch.as_tensor(np.asarray(cotangent), dtype=out.dtype, device=out.device)).sum()
        sources = [*xs, *(v.value for v in trainable.values())]
        grads = torch.autograd.grad(total, sources, allow_unused=True)
        grads = [torch.zeros_like(s) if g is None else g for s, g in zip(sources, grads)]
        as_numpy = [g.detach().cpu().numpy() for g in grads]
        return as_numpy[: len(xs)], dict(zip(trainable, as_numpy[len(xs):]))


# ops the layers use, with NumPy's float64 answer: a backend keeps float64 if it matches them all
_FLOAT64_PROBES = {
    "add": (lambda ops, a, b: ops.add(a, b), lambda a, b: a + b),
    "multiply": (lambda ops, a, b: ops.multiply(a, b), lambda a, b: a * b),
    "divide": (lambda ops, a, b: ops.divide(a, b), lambda a, b: a / b),
    "matmul": (lambda ops, a, b: ops.matmul(a[None], b[:, None]), lambda a, b: a[None] @ b[:, None]),
    "einsum": (lambda ops, a, b: ops.einsum("i,i->", a, b), lambda a, b: np.einsum("i,i->", a, b)),
    "maximum": (lambda ops, a, b: ops.maximum(a, b), lambda a, b: np.maximum(a, b)),
    "sum": (lambda ops, a, b: ops.sum(a), lambda a, b: a.sum()),
    "mean": (lambda ops, a, b: ops.mean(a), lambda a, b: a.mean()),
    "var": (lambda ops, a, b: ops.var(a), lambda a, b: a.var()),
    "sqrt": (lambda ops, a, b: ops.sqrt(b * b), lambda a, b: np.abs(b)),
    "exp": (lambda ops, a, b: ops.exp(a), lambda a, b: np.exp(a)),
    "tanh": (lambda ops, a, b: ops.tanh(a), lambda a, b: np.tanh(a)),
    "sigmoid": (lambda ops, a, b: ops.sigmoid(a), lambda a, b: 1 / (1 + np.exp(-a))),
    "softmax": (lambda ops, a, b: ops.softmax(a), lambda a, b: np.exp(a) / np.exp(a).sum()),
}


def _float64_downcasts() -> str:
    """Empty when this Keras backend computes the probed ops in float64, else which it does not
    (values that float32 cannot hold, compared with NumPy's float64 results)."""
    import keras

    a = np.array([0.1, 1 / 3, 1 + 2.0**-30, -np.e])
    b = np.array([0.7, -1.3, 2 / 3, 1 + 2.0**-40])
    wrong = []
    for name, (keras_op, numpy_op) in _FLOAT64_PROBES.items():
        got = np.asarray(keras.ops.convert_to_numpy(keras_op(keras.ops, a, b)))
        if got.dtype != np.float64 or not np.allclose(got, numpy_op(a, b), rtol=1e-13, atol=0):
            wrong.append(f"ops.{name}")
    if not wrong:
        return ""
    return (f"Keras {keras.__version__} on {keras.backend.backend()} computes {', '.join(wrong)} of float64 tensors in float32 "
            "(its result_type maps float64 to float32 on every backend but TensorFlow: keras-team/keras#23704)")


keras_jax = KerasOnBackend("jax")
keras_torch = KerasOnBackend("torch")
