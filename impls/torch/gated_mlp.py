"""PyTorch modules from gMLP: SpatialGatingUnit (the 2021 ``spatial_gating_block``)."""

from __future__ import annotations

import torch
from torch import nn

import reference
from impls.torch._mapping import LINEAR, Canonical, CanonicalWeights, positive_sizes

LAYER_NORM_EPSILON = 1e-5


class SpatialGatingUnit(CanonicalWeights):
    """gMLP's spatial gating on ``[B, N, C]``: ``u, v = x.chunk(2, -1)``, then
    ``u * proj(norm(v)^T)^T`` with ``proj`` an ``nn.Linear(N, N)`` across the tokens.
    The output has ``C / 2`` channels. ``proj`` starts as in gMLP and the 2021 code: weight
    normal with std 1e-6, bias ones."""

    def __init__(self, channels: int, num_tokens: int):
        super().__init__()
        positive_sizes(type(self).__name__, channels=channels, num_tokens=num_tokens)
        reference.validate("spatial_gating_block", (1, num_tokens, channels))
        self.norm = nn.LayerNorm(channels // 2, eps=LAYER_NORM_EPSILON)
        self.proj = nn.Linear(num_tokens, num_tokens)
        nn.init.normal_(self.proj.weight, std=1e-6)
        nn.init.ones_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.proj.in_features, 2 * self.norm.normalized_shape[0])
        if x.ndim != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"spatial_gating_block: inputs shape {tuple(x.shape)} must be [batch, {expected[0]}, {expected[1]}]")
        gate, gated = x.chunk(2, dim=-1)
        return gate * self.proj(self.norm(gated).transpose(1, 2)).transpose(1, 2)

    def canonical_weights(self):
        return {
            "vv_ln/gamma": Canonical("norm.weight"),
            "vv_ln/beta": Canonical("norm.bias"),
            "vv_dense/kernel": Canonical("proj.weight", LINEAR),
            "vv_dense/bias": Canonical("proj.bias"),
        }

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("spatial_gating_block", input_shape, **config)
        _, num_tokens, channels = input_shape
        return cls(channels, num_tokens, **config)


MODULES = {"spatial_gating_block": SpatialGatingUnit}
"""Canonical layer name -> module class (with ``from_canonical``), gathered by ``impls.torch.adapter``."""
__all__ = ["SpatialGatingUnit"]
