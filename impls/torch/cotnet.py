"""PyTorch modules from CoTNet: CotAttention (the 2021 ``cot_attention``), on ``[B, C, H, W]`` maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import reference
from impls.torch._mapping import CONV2D, Canonical, CanonicalWeights, check_channels, checked_config, positive_sizes
from impls.torch.resnest import activation_module, batch_norm, batch_norm_mapping, validate_nchw

REDUCTION = 8
RADIX = 2


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that also normalises a group holding a single value (to ``bias``), as
    Keras does. ``F.group_norm`` refuses one in every mode, with a check meant for training
    statistics; here a group is ``k*k`` channels over the map, one value for k=1 on a 1x1 map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class CotAttention(CanonicalWeights):
    """Contextual Transformer attention (the ``CotLayer`` of the CoTNet repository), C a
    multiple of 8, odd ``kernel_size``; the output has the input's shape.

    ``key_embed``: 4-group ``k x k`` conv (padding ``k // 2``), BatchNorm, activation.
    ``embed``: from ``cat([x, key])``, 1x1 conv to C/2, BatchNorm, activation, 1x1 conv (bias) to
    ``k*k * C/8``, GroupNorm of ``C / 8`` groups (eps 1e-5): per position, ``C / 8`` kernels of
    ``k*k`` taps (channel ``g * k*k + tap``). ``conv1x1``: the value, 1x1 conv and BatchNorm.
    The local aggregation unfolds the value's ``k x k`` neighbourhoods and applies kernel
    ``c mod (C / 8)`` to channel ``c``; then ``bn`` and SiLU. ``se``: from the map mean of
    ``local + key``, 1x1 conv (bias), BatchNorm, activation, 1x1 conv (bias) to ``2C`` logits read
    as ``[C, 2]`` and softmaxed over the pair (local, key) that the output mixes.
    """

    def __init__(self, channels: int, kernel_size: int = 3, activation: str | None = "relu"):
        super().__init__()
        positive_sizes(type(self).__name__, channels=channels)
        config = checked_config("cot_attention", kernel_size=kernel_size, activation=activation)
        reference.validate("cot_attention", (1, 1, 1, channels), **config)
        self.config, self.channels = config, channels
        self.kernel_size = size = config["kernel_size"]
        self.kernels = channels // REDUCTION
        self.key_embed = nn.Sequential(
            nn.Conv2d(channels, channels, size, padding=size // 2, groups=4, bias=False),
            batch_norm(channels),
            activation_module(config["activation"]),
        )
        self.embed = nn.Sequential(
            nn.Conv2d(2 * channels, channels // 2, 1, bias=False),
            batch_norm(channels // 2),
            activation_module(config["activation"]),
            nn.Conv2d(channels // 2, size * size * self.kernels, 1),
            GroupNorm(self.kernels, size * size * self.kernels, eps=1e-5),
        )
        self.conv1x1 = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), batch_norm(channels))
        self.bn = batch_norm(channels)
        self.act = nn.SiLU()
        attention_channels = max(channels * RADIX // 4, 32)
        self.se = nn.Sequential(
            nn.Conv2d(channels, attention_channels, 1),
            batch_norm(attention_channels),
            activation_module(config["activation"]),
            nn.Conv2d(attention_channels, RADIX * channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        validate_nchw("cot_attention", x, self.config)
        check_channels("cot_attention", x, 1, self.channels)
        batch, channels, height, width = x.shape
        size = self.kernel_size
        key = self.key_embed(x)
        local_weights = self.embed(torch.cat([x, key], dim=1)).view(batch, 1, self.kernels, size * size, height, width)
        # unfold's channel c * k*k + tap, read as [8, C / 8, k*k]: channel c uses kernel c mod (C / 8).
        neighbourhoods = F.unfold(self.conv1x1(x), size, padding=size // 2).view(batch, REDUCTION, self.kernels, size * size, height, width)
        local = (neighbourhoods * local_weights).sum(dim=3).reshape(batch, channels, height, width)
        local = self.act(self.bn(local))
        attention = self.se((local + key).mean(dim=(2, 3), keepdim=True)).view(batch, channels, RADIX).softmax(dim=2)
        return local * attention[:, :, 0, None, None] + key * attention[:, :, 1, None, None]

    def canonical_weights(self):
        return {
            "key_conv/kernel": Canonical("key_embed.0.weight", CONV2D),
            **batch_norm_mapping("key_", "key_embed.1"),
            "embed_ww_1_conv/kernel": Canonical("embed.0.weight", CONV2D),
            **batch_norm_mapping("embed_ww_1_", "embed.1"),
            "embed_ww_2_conv/kernel": Canonical("embed.3.weight", CONV2D),
            "embed_ww_2_conv/bias": Canonical("embed.3.bias"),
            "embed_ww_group_norm/gamma": Canonical("embed.4.weight"),
            "embed_ww_group_norm/beta": Canonical("embed.4.bias"),
            "embed_1_conv/kernel": Canonical("conv1x1.0.weight", CONV2D),
            **batch_norm_mapping("embed_1_", "conv1x1.1"),
            **batch_norm_mapping("embed_2_", "bn"),
            "attn_se_1_conv/kernel": Canonical("se.0.weight", CONV2D),
            "attn_se_1_conv/bias": Canonical("se.0.bias"),
            **batch_norm_mapping("attn_se_", "se.1"),
            "attn_se_2_conv/kernel": Canonical("se.3.weight", CONV2D),
            "attn_se_2_conv/bias": Canonical("se.3.bias"),
        }

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("cot_attention", input_shape, **config)
        return cls(input_shape[-1], **config)


MODULES = {"cot_attention": CotAttention}
"""Canonical layer name -> module class (with ``from_canonical``), gathered by ``impls.torch.adapter``."""
__all__ = ["CotAttention", "GroupNorm"]
