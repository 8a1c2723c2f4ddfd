"""PyTorch modules from ResNeSt: RadixSoftmax, SplitAttnConv2d (the 2021 ``rsoftmax`` and
``split_attention_conv2d``), on ``[B, C, H, W]`` maps."""

from __future__ import annotations

import torch
from torch import nn

import reference
from impls.torch._mapping import CONV2D, Canonical, CanonicalWeights, KerasBatchNorm2d, check_channels, checked_config, positive_sizes
from impls.torch.mlp_mixer import ACTIVATIONS


def activation_module(name: str | None) -> nn.Module:
    """The module for a Keras activation name; None is the identity."""
    return nn.Identity() if name is None else ACTIVATIONS[name]()


def validate_nchw(layer: str, x: torch.Tensor, config: dict) -> None:
    """Reject what the reference rejects, with its message: a rank-4 ``[B, C, H, W]`` input is
    checked as the canonical ``[B, H, W, C]``."""
    shape = tuple(x.shape)
    reference.validate(layer, (shape[0], *shape[2:], shape[1]) if x.ndim == 4 else shape, **config)


def batch_norm_mapping(prefix: str, module: str) -> dict[str, Canonical]:
    """Canonical ``<prefix>bn/*`` names of an ``nn.BatchNorm2d`` at state_dict prefix ``module``."""
    return {
        f"{prefix}bn/gamma": Canonical(f"{module}.weight"),
        f"{prefix}bn/beta": Canonical(f"{module}.bias"),
        f"{prefix}bn/moving_mean": Canonical(f"{module}.running_mean"),
        f"{prefix}bn/moving_variance": Canonical(f"{module}.running_var"),
    }


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """Keras' BatchNormalization(momentum=0.9, epsilon=1e-5) in PyTorch terms."""
    return KerasBatchNorm2d(channels, eps=1e-5, momentum=0.1)  # the biased variance updates running_var, as Keras


class RadixSoftmax(CanonicalWeights):
    """Radix softmax of ``[B, C, 1, 1]`` attention logits; no weights.

    For ``groups > 1`` channel ``r * (C // groups) + c`` is radix ``r`` of column ``c``: the
    softmax runs over ``r`` and the channel order is kept (timm's ``RadixSoftmax`` with
    cardinality 1). One group is a sigmoid.
    """

    def __init__(self, groups: int):
        super().__init__()
        self.config = checked_config("rsoftmax", groups=groups)
        self.groups = self.config["groups"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        validate_nchw("rsoftmax", x, self.config)
        if self.groups == 1:
            return torch.sigmoid(x)
        return x.view(x.shape[0], self.groups, -1).softmax(dim=1).view(x.shape)

    def canonical_weights(self):
        return {}

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("rsoftmax", input_shape, **config)
        return cls(**config)


class SplitAttnConv2d(CanonicalWeights):
    """ResNeSt split attention (radix ``groups``, cardinality 1), as timm's ``SplitAttn``.

    ``conv`` is one grouped convolution (``groups`` groups, padding ``kernel_size // 2``, no
    bias) to ``groups * filters`` channels, then ``bn0`` and ``act0``. The ``groups`` blocks of
    ``filters`` channels are summed and averaged over the map; ``fc1`` (to
    ``max(in_channels * groups // 4, 32)``), ``bn1``, ``act1``, ``fc2`` (to ``groups * filters``)
    and :class:`RadixSoftmax` give the weights of each block in the output's sum.

    The 2021 code stored group ``i``'s kernel as its own ``1_g{i}_conv``: that is block ``i - 1``
    of ``conv.weight`` along the output channels.
    """

    def __init__(self, in_channels: int, filters: int, kernel_size: int = 3, strides: int = 1, groups: int = 2, activation: str | None = "relu"):
        super().__init__()
        positive_sizes(type(self).__name__, in_channels=in_channels)
        config = checked_config(
            "split_attention_conv2d", filters=filters, kernel_size=kernel_size, strides=strides, groups=groups, activation=activation
        )
        reference.validate("split_attention_conv2d", (1, 1, 1, in_channels), **config)
        self.config, self.in_channels = config, in_channels
        self.filters, self.groups = config["filters"], config["groups"]
        radix_channels = self.groups * self.filters
        inner = max(in_channels * self.groups // 4, 32)
        size = config["kernel_size"]
        self.conv = nn.Conv2d(in_channels, radix_channels, size, stride=config["strides"], padding=size // 2, groups=self.groups, bias=False)
        self.bn0 = batch_norm(radix_channels)
        self.act0 = activation_module(config["activation"])
        self.fc1 = nn.Conv2d(self.filters, inner, 1)
        self.bn1 = batch_norm(inner)
        self.act1 = activation_module(config["activation"])
        self.fc2 = nn.Conv2d(inner, radix_channels, 1)
        self.rsoftmax = RadixSoftmax(self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        validate_nchw("split_attention_conv2d", x, self.config)
        check_channels("split_attention_conv2d", x, 1, self.in_channels)
        logits = self.act0(self.bn0(self.conv(x)))
        batch, _, height, width = logits.shape
        radices = logits.view(batch, self.groups, self.filters, height, width)
        gap = radices.sum(dim=1).mean(dim=(2, 3), keepdim=True)
        attention = self.fc2(self.act1(self.bn1(self.fc1(gap))))
        attention = self.rsoftmax(attention).view(batch, self.groups, self.filters, 1, 1)
        return (radices * attention).sum(dim=1)

    def canonical_weights(self):
        if self.groups == 1:
            mapping = {"1_conv/kernel": Canonical("conv.weight", CONV2D)}
        else:
            mapping = {f"1_g{i}_conv/kernel": Canonical("conv.weight", CONV2D, block=(i - 1, self.groups)) for i in range(1, self.groups + 1)}
        return {
            **mapping,
            **batch_norm_mapping("1_", "bn0"),
            "2_conv/kernel": Canonical("fc1.weight", CONV2D),
            "2_conv/bias": Canonical("fc1.bias"),
            **batch_norm_mapping("2_", "bn1"),
            "3_conv/kernel": Canonical("fc2.weight", CONV2D),
            "3_conv/bias": Canonical("fc2.bias"),
        }

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("split_attention_conv2d", input_shape, **config)
        return cls(input_shape[-1], **config)


MODULES = {"rsoftmax": RadixSoftmax, "split_attention_conv2d": SplitAttnConv2d}
"""Canonical layer name -> module class (with ``from_canonical``), gathered by ``impls.torch.adapter``."""
__all__ = ["RadixSoftmax", "SplitAttnConv2d"]
