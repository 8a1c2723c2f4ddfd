"""Deliberately broken implementations: the harness must report each one failing, and why.

Each wraps the reference-backed ``numpy`` implementation and breaks one thing, the way real
ports go wrong.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from conformance.numpy_impl import ReferenceImplementation, ReferenceLayer

RENAMED_SUFFIX = "_renamed"


class _MisnamedLayer(ReferenceLayer):
    """Lists its first weight under a wrong name (a typo in a weight-name mapping)."""

    def weight_shapes(self):
        shapes = super().weight_shapes()
        first = next(iter(shapes))
        return {(k + RENAMED_SUFFIX if k == first else k): v for k, v in shapes.items()}


class _TransposedLayer(ReferenceLayer):
    """Forgets the transpose of its first matrix (a Linear weight mapped without ``.T``): it
    reports that weight's shape reversed and uses the matrix transposed. A square matrix
    then passes the shape check and must be caught by numerics."""

    def _matrix(self):
        return next(k for k, v in super().weight_shapes().items() if len(v) == 2)

    def weight_shapes(self):
        matrix = self._matrix()
        return {k: (tuple(reversed(v)) if k == matrix else v) for k, v in super().weight_shapes().items()}

    def load_weights(self, weights):
        matrix = self._matrix()
        super().load_weights({k: (np.asarray(v).T if k == matrix else v) for k, v in weights.items()})


class _OffByLayer(ReferenceLayer):
    """Adds 1e-3 to every output element."""

    def forward(self, *inputs):
        return super().forward(*inputs) + np.asarray(1e-3, self.dtype)


class _Broken(ReferenceImplementation):
    def __init__(self, name, layer_class):
        self.name, self._layer_class = name, layer_class

    def build(self, layer, config, input_shapes, dtype):
        return self._layer_class(layer, config, input_shapes, dtype)


misnamed_weight = _Broken("misnamed", _MisnamedLayer)
transposed_weight = _Broken("transposed", _TransposedLayer)
off_by_1e3 = _Broken("off_by_1e-3", _OffByLayer)


class _HeightWidthConfusedLayer(ReferenceLayer):
    """Reads a square map's height axis as its width (a port that mixes up two axes of the same
    size): right shapes everywhere, wrong values wherever the layer is not symmetric in H and W."""

    def forward(self, *inputs):
        first = inputs[0]
        if first.ndim == 4 and first.shape[1] == first.shape[2]:
            swapped = (np.swapaxes(first, 1, 2),) + tuple(inputs[1:])
            return np.swapaxes(super().forward(*swapped), 1, 2)
        return super().forward(*inputs)


class _TokensChannelsConfusedLayer(ReferenceLayer):
    """Mixes over the channel axis where it should mix over tokens when the two have the same size."""

    def forward(self, *inputs):
        first = inputs[0]
        if first.ndim == 3 and first.shape[1] == first.shape[2]:
            return np.swapaxes(super().forward(np.swapaxes(first, 1, 2), *inputs[1:]), 1, 2)
        return super().forward(*inputs)


height_width_confused = _Broken("hw_confused", _HeightWidthConfusedLayer)
tokens_channels_confused = _Broken("nc_confused", _TokensChannelsConfusedLayer)


class _WrongInitialLayer(ReferenceLayer):
    """Builds every weight at 0.5 (a port that ignores zero_gamma, weight_init_value or a fixed kernel)."""

    def initial_weights(self):
        return {name: np.full_like(value, 0.5) for name, value in super().initial_weights().items()}


class _NoInitialLayer(ReferenceLayer):
    """Does not offer initial_weights(): the init check must read "not implemented", never pass."""

    initial_weights = property(lambda self: (_ for _ in ()).throw(AttributeError("initial_weights")))


wrong_initial_values = _Broken("wrong_init", _WrongInitialLayer)
no_initial_values = _Broken("no_init", _NoInitialLayer)


class _ChangedDefaultLayer(ReferenceLayer):
    """ChannelAffine whose use_bias defaults to False (a port that changed a default): right
    whenever the caller sets use_bias, wrong whenever the default is relied on."""

    def __init__(self, layer, config, input_shapes, dtype):
        if layer == "ChannelAffine" and "use_bias" not in config:
            config = {**config, "use_bias": False}
        super().__init__(layer, config, input_shapes, dtype)


class _TwoSlipsLayer(ReferenceLayer):
    """Two independent slips on mlp_block: a misnamed weight when hidden_dim is 3, an offset
    output when the batch is 2. Different checks, different configs: both must be reported."""

    def weight_shapes(self):
        shapes = super().weight_shapes()
        if self.layer == "mlp_block" and self.config["hidden_dim"] == 3:
            return {("Dense_0/bias_typo" if k == "Dense_0/bias" else k): v for k, v in shapes.items()}
        return shapes

    def forward(self, *inputs):
        out = super().forward(*inputs)
        return out + np.asarray(1e-3, self.dtype) if self.layer == "mlp_block" and inputs[0].shape[0] == 2 else out


class _PartialImplementation(ReferenceImplementation):
    """Supports mlp_block only with the gelu activation (like an adapter for a library without
    the others): every other config raises NotImplementedError."""

    name = "partial"

    def build(self, layer, config, input_shapes, dtype):
        built = super().build(layer, config, input_shapes, dtype)  # rejects out-of-domain configs first
        if layer == "mlp_block" and config.get("activation", "gelu") != "gelu":
            raise NotImplementedError(f"activation {config['activation']!r} is not available")
        return built


class _CrashingLayer(ReferenceLayer):
    """Raises from forward on maps with a side of 1 (an implementation bug, not a rejection)."""

    def forward(self, *inputs):
        if inputs[0].ndim == 4 and 1 in inputs[0].shape[1:3]:
            raise RuntimeError("reshape of a side of 1 is not supported here")
        return super().forward(*inputs)


class _SlippedBackwardLayer(ReferenceLayer):
    """Forward right; gradients of mlp_block's first bias doubled, and BatchNorm's training
    step keeps the moving statistics (a forward-only check would pass it)."""

    def gradients(self, inputs, cotangent):
        input_grads, weight_grads = super().gradients(inputs, cotangent)
        if "Dense_0/bias" in weight_grads:
            weight_grads["Dense_0/bias"] = weight_grads["Dense_0/bias"] * 2
        return input_grads, weight_grads

    def forward_training(self, *inputs):
        kept = {k: v.copy() for k, v in self.weights.items() if k.endswith(("moving_mean", "moving_variance"))}
        out, _ = super().forward_training(*inputs)
        self.weights.update(kept)
        return out, kept


class _ExitingLayer(ReferenceLayer):
    """Calls ``sys.exit(0)`` from forward on a batch of 2: a run must not end there with status 0."""

    def forward(self, *inputs):
        if inputs[0].shape[0] == 2:
            sys.exit(0)
        return super().forward(*inputs)


class _StatefulLayer(ReferenceLayer):
    """Wrong on one forward call of the process, the ``WRONG_CALL``-th, whatever the inputs
    (past ChannelAffine's fixed cases, so inside its search): replayed, the case passes, so
    Hypothesis finds the failure flaky. ``calls`` counts per process; a test resets it."""

    calls = 0
    WRONG_CALL = 30

    def forward(self, *inputs):
        _StatefulLayer.calls += 1
        out = super().forward(*inputs)
        return out + 1.0 if _StatefulLayer.calls == self.WRONG_CALL else out


class _ProcessKillingLayer(ReferenceLayer):
    """Ends its process without a Python exception (as a segfault in native code would) on a
    batch of 2."""

    def forward(self, *inputs):
        if inputs[0].shape[0] == 2:
            os._exit(3)
        return super().forward(*inputs)


half_only = _Broken("half_only", ReferenceLayer)
half_only.dtypes = ("float16",)  # declares neither float32 nor float64: nothing of the default run applies
exiting = _Broken("exiting", _ExitingLayer)
stateful = _Broken("stateful", _StatefulLayer)
process_killing = _Broken("process_killing", _ProcessKillingLayer)
slipped_backward = _Broken("slipped_backward", _SlippedBackwardLayer)
changed_default = _Broken("changed_default", _ChangedDefaultLayer)
two_slips = _Broken("two_slips", _TwoSlipsLayer)
partial = _PartialImplementation()
crashing = _Broken("crashing", _CrashingLayer)
