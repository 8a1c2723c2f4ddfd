"""PyTorch modules from AotNet: AntiAliasDownsample, BatchNormAct2d, Conv2dNoBias, SEModule
(the 2021 ``anti_alias_downsample``, ``batchnorm_with_activation``, ``conv2d_no_bias`` and
``se_module``), on ``[B, C, H, W]`` maps."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import reference
from impls.torch._mapping import CONV2D, DEPTHWISE_CONV2D, Canonical, CanonicalWeights, KerasBatchNorm2d, check_channels, checked_config, positive_sizes
from impls.torch.mlp_mixer import ACTIVATIONS


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _activation(name: str | None) -> nn.Module:
    return nn.Identity() if name is None else ACTIVATIONS[name]()


def check_input(layer: str, x: torch.Tensor, config: dict, channels: int) -> None:
    """Reject what the reference rejects, with its message (an NCHW map is checked as NHWC),
    and a channel count other than the module's."""
    shape = tuple(x.shape)
    reference.validate(layer, (shape[0], *shape[2:], shape[1]) if x.ndim == 4 else shape, **config)
    check_channels(layer, x, 1, channels)


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME along one axis: ``ceil(size / stride)`` outputs; the odd zero goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class AntiAliasDownsample(CanonicalWeights):
    """Blur every channel with a fixed binomial filter, then subsample by ``strides``, with
    TensorFlow SAME padding (the extra zero row / column at the bottom / right).

    The ``(C, 1, k, k)`` filter is the outer product of row ``k - 1`` of Pascal's triangle with
    itself, over ``4 ** (k - 1)``. It is a buffer (saved in the state_dict, never trained) unless
    ``trainable``, when it is a parameter that starts as the blur. ``padding`` is ignored.
    """

    def __init__(self, channels: int, kernel_size=3, strides=2, padding="SAME", trainable: bool = False):
        super().__init__()
        positive_sizes(type(self).__name__, channels=channels)
        config = checked_config("anti_alias_downsample", kernel_size=kernel_size, strides=strides, padding=padding, trainable=trainable)
        reference.validate("anti_alias_downsample", (1, 1, 1, channels), **config)
        self.config, self.channels = config, channels
        self.kernel_size, self.stride = _pair(config["kernel_size"])[0], _pair(config["strides"])[0]
        k = self.kernel_size
        row = torch.tensor([math.comb(k - 1, i) for i in range(k)], dtype=torch.get_default_dtype()) / 2 ** (k - 1)
        blur = torch.outer(row, row).expand(channels, 1, k, k).clone()
        if config["trainable"]:
            self.weight = nn.Parameter(blur)
        else:
            self.register_buffer("weight", blur)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("anti_alias_downsample", x, self.config, self.channels)
        top, bottom = tf_same_padding(x.shape[2], self.kernel_size, self.stride)
        left, right = tf_same_padding(x.shape[3], self.kernel_size, self.stride)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, stride=self.stride, groups=self.channels)

    def canonical_weights(self):
        return {"anti_alias_down/depthwise_kernel": Canonical("weight", DEPTHWISE_CONV2D)}

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("anti_alias_downsample", input_shape, **config)
        return cls(input_shape[-1], **config)


class BatchNormAct2d(KerasBatchNorm2d, CanonicalWeights):
    """``nn.BatchNorm2d`` with Keras' training step (``KerasBatchNorm2d``; eps 1e-5, momentum 0.1,
    which is Keras' 0.9) followed by an
    activation by its Keras name (None for none). ``zero_gamma`` starts the weight at 0."""

    def __init__(self, num_features: int, activation: str | None = "relu", zero_gamma: bool = False):
        positive_sizes(type(self).__name__, num_features=num_features)
        config = checked_config("batchnorm_with_activation", activation=activation, zero_gamma=zero_gamma)
        reference.validate("batchnorm_with_activation", (1, 1, 1, num_features), **config)
        super().__init__(num_features, eps=1e-5, momentum=0.1)
        self.config = config
        if config["zero_gamma"]:
            nn.init.zeros_(self.weight)
        self.act = _activation(config["activation"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("batchnorm_with_activation", x, self.config, self.num_features)
        return self.act(super().forward(x))

    def canonical_weights(self):
        return {
            "bn/gamma": Canonical("weight"),
            "bn/beta": Canonical("bias"),
            "bn/moving_mean": Canonical("running_mean"),
            "bn/moving_variance": Canonical("running_var"),
        }

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("batchnorm_with_activation", input_shape, **config)
        return cls(input_shape[-1], **config)


class Conv2dNoBias(CanonicalWeights):
    """``nn.Conv2d`` without bias by default and with symmetric SAME padding:
    ``padding="SAME"`` (any case) pads ``max(kernel_size) // 2`` zeros on every side, VALID none.

    ``groups == filters`` (``groups`` 0 means 1) is the 2021 code's depthwise convolution: one
    filter per input channel, so the output keeps the input's channels whatever ``filters`` is.
    """

    def __init__(self, in_channels: int, filters: int, kernel_size, strides=1, padding: str = "VALID", use_bias: bool = False, groups: int = 1):
        super().__init__()
        positive_sizes(type(self).__name__, in_channels=in_channels)
        config = checked_config(
            "conv2d_no_bias", filters=filters, kernel_size=kernel_size, strides=strides, padding=padding, use_bias=use_bias, groups=groups
        )
        kernel_hw = _pair(config["kernel_size"])
        # A map of the kernel's size always fits: only the config and channel rules are checked here.
        reference.validate("conv2d_no_bias", (1, *kernel_hw, in_channels), **config)
        self.config, self.in_channels = config, in_channels
        self.depthwise = config["groups"] == config["filters"]
        self.conv = nn.Conv2d(
            in_channels,
            in_channels if self.depthwise else config["filters"],
            kernel_hw,
            stride=_pair(config["strides"]),
            padding=max(kernel_hw) // 2 if config["padding"].upper() == "SAME" else 0,
            groups=in_channels if self.depthwise else config["groups"],
            bias=config["use_bias"],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("conv2d_no_bias", x, self.config, self.in_channels)
        return self.conv(x)

    def canonical_weights(self):
        mapping = {"conv/depthwise_kernel": Canonical("conv.weight", DEPTHWISE_CONV2D)} if self.depthwise else {"conv/kernel": Canonical("conv.weight", CONV2D)}
        if self.conv.bias is not None:
            mapping["conv/bias"] = Canonical("conv.bias")
        return mapping

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("conv2d_no_bias", input_shape, **config)
        return cls(input_shape[-1], **config)


class SEModule(CanonicalWeights):
    """Squeeze-and-excitation: ``x * sigmoid(fc2(act(fc1(mean_hw(x)))))`` with 1x1 convolutions
    ``fc1: C -> int(C * se_ratio)`` and ``fc2`` back to C (the 2021 width rule, truncating)."""

    def __init__(self, channels: int, se_ratio: float = 0.25, activation: str | None = "relu", use_bias: bool = True):
        super().__init__()
        positive_sizes(type(self).__name__, channels=channels)
        config = checked_config("se_module", se_ratio=se_ratio, activation=activation, use_bias=use_bias)
        reference.validate("se_module", (1, 1, 1, channels), **config)
        self.config, self.channels = config, channels
        reduction = int(channels * config["se_ratio"])
        self.fc1 = nn.Conv2d(channels, reduction, 1, bias=config["use_bias"])
        self.act = _activation(config["activation"])
        self.fc2 = nn.Conv2d(reduction, channels, 1, bias=config["use_bias"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("se_module", x, self.config, self.channels)
        squeezed = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(squeezed))))

    def canonical_weights(self):
        mapping = {"1_conv/kernel": Canonical("fc1.weight", CONV2D)}
        if self.fc1.bias is not None:
            mapping["1_conv/bias"] = Canonical("fc1.bias")
        mapping["2_conv/kernel"] = Canonical("fc2.weight", CONV2D)
        if self.fc2.bias is not None:
            mapping["2_conv/bias"] = Canonical("fc2.bias")
        return mapping

    @classmethod
    def from_canonical(cls, config, input_shape):
        reference.validate("se_module", input_shape, **config)
        return cls(input_shape[-1], **config)


MODULES = {
    "anti_alias_downsample": AntiAliasDownsample,
    "batchnorm_with_activation": BatchNormAct2d,
    "conv2d_no_bias": Conv2dNoBias,
    "se_module": SEModule,
}
"""Canonical layer name -> module class (with ``from_canonical``), gathered by ``impls.torch.adapter``."""
__all__ = ["AntiAliasDownsample", "BatchNormAct2d", "Conv2dNoBias", "SEModule"]
