"""The PyTorch implementation, seen through the conformance contract (``conformance.contract``).

Each module builds itself from a canonical config and channels-last input shapes
(``from_canonical``) and maps its parameters to canonical names (``canonical_weights``).
Feature maps are channels-first; the suite converts them.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

import reference
from impls.torch import MODULES


class TorchLayer:
    def __init__(self, module, dtype: torch.dtype | None = None, autocast: torch.dtype | None = None):
        self.module = module
        self.dtype = dtype
        self.autocast = autocast
        """When set, ``forward`` runs under ``torch.autocast("cpu", dtype=autocast)``."""
        self._initial = module.canonical_state_dict()

    def initial_weights(self) -> dict[str, np.ndarray]:
        return dict(self._initial)

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.module.canonical_shapes()

    def load_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        self.module.load_canonical_state_dict(weights)

    @torch.no_grad()
    def forward(self, *inputs: np.ndarray) -> np.ndarray:
        # bfloat16 inputs arrive as float32 arrays holding bfloat16 values (conformance.contract);
        # the output goes back the same way.
        tensors = [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]
        with torch.autocast("cpu", dtype=self.autocast, enabled=self.autocast is not None):
            out = self.module(*(t if self.dtype is None else t.to(self.dtype) for t in tensors))
        return (out.float() if out.dtype == torch.bfloat16 else out).numpy()

    def forward_training(self, *inputs: np.ndarray):
        """One forward in training mode (``.train()``: batch statistics, dropout active), then
        back to eval mode; returns the output and the moving statistics after the step under
        canonical names (``nn.BatchNorm2d`` updates ``running_var`` with the unbiased variance)."""
        self.module.train()
        try:
            with torch.no_grad():
                out = self.module(*(torch.from_numpy(np.array(x)) for x in inputs))
        finally:
            self.module.eval()
        state = self.module.canonical_state_dict()
        return out.numpy(), {k: v for k, v in state.items() if k.endswith(("moving_mean", "moving_variance"))}

    def gradients(self, inputs, cotangent):
        """Gradients of ``sum(forward(*inputs) * cotangent)`` (eval mode) by autograd: input
        gradients channels-first, parameter gradients under canonical names and layouts (the
        gradient of a permuted or blocked parameter is permuted and blocked the same way).
        Buffers (moving statistics, the fixed anti-alias kernel) are not parameters: omitted. A
        parameter the output does not depend on gets zeros."""
        xs = [torch.from_numpy(np.array(x)).requires_grad_(True) for x in inputs]
        params = dict(self.module.named_parameters())
        for p in params.values():
            p.grad = None
        with torch.enable_grad():
            out = self.module(*xs)
            (out * torch.from_numpy(np.ascontiguousarray(cotangent)).to(out.dtype)).sum().backward()
        input_grads = [torch.zeros_like(x).numpy() if x.grad is None else x.grad.numpy() for x in xs]
        weight_grads = {}
        for name, where in self.module.canonical_weights().items():
            if where.key not in params:
                continue
            p = params[where.key]
            g = torch.zeros_like(p) if p.grad is None else p.grad.detach()
            if where.block is not None:
                g = g.chunk(where.block[1])[where.block[0]]
            if where.permute is not None:
                g = g.permute(*np.argsort(where.permute))
            weight_grads[name] = g.cpu().numpy().copy()
        for p in params.values():
            p.grad = None
        return input_grads, weight_grads


class TorchImplementation:
    name = "torch"
    layout = "channels_first"
    dtypes = ("float32", "float64", "float16", "bfloat16")
    """float16 and bfloat16: the module in ``.half()`` / ``.bfloat16()`` (built under that default
    dtype), inputs cast to it; opt-in with ``attnconf check --dtypes float16 bfloat16``."""

    def not_implemented(self) -> dict[str, str]:
        return {name: "no PyTorch module yet" for name in reference.names() if name not in MODULES}

    def build(self, layer: str, config: Mapping[str, Any], input_shapes, dtype: str) -> TorchLayer:
        # Built in the target dtype, as `torch.set_default_dtype` users do, so that initial values
        # such as weight_init_value=0.1 are not rounded through float32 first.
        previous = torch.get_default_dtype()
        torch.set_default_dtype(getattr(torch, dtype))
        try:
            module = MODULES[layer].from_canonical(dict(config), *input_shapes)
        finally:
            torch.set_default_dtype(previous)
        return TorchLayer(module.to(getattr(torch, dtype)).eval(), getattr(torch, dtype))


class TorchAutocastImplementation(TorchImplementation):
    """``torch-autocast``: the float32 module run under CPU ``torch.autocast`` in float16 or
    bfloat16 (matmuls and convolutions in half, autocast's float32 list, such as softmax and
    layer_norm, in float32). Inputs arrive in the half dtype and enter as float32 (exactly)."""

    name = "torch-autocast"
    dtypes = ("float16", "bfloat16")

    def build(self, layer: str, config: Mapping[str, Any], input_shapes, dtype: str) -> TorchLayer:
        module = super().build(layer, config, input_shapes, "float32").module
        return TorchLayer(module, torch.float32, autocast=getattr(torch, dtype))


implementation = TorchImplementation()
autocast_implementation = TorchAutocastImplementation()
