"""timm's PyTorch layers, checked against the attnconf reference: a real third-party adapter.

timm (PyTorch Image Models) has counterparts for 15 of the 21 layers. This adapter builds
the timm module for each canonical config, maps its parameters to canonical names and
Keras layouts, and runs it on the suite's channels-first inputs::

    pip install -e ".[timm]"
    attnconf check --impl examples.timm_adapter:implementation --expect examples/timm_expected.toml
    attnconf check --impl examples.timm_adapter:timm_defaults --expect examples/timm_expected.toml

Two implementations, two questions:

``implementation`` (name ``timm``)
    Every timm constructor argument that can express the canonical config is set to do so
    (``scale_pos_embed=True``, LayerNorm epsilons, SE widths, pixel paddings, ...). A
    config no timm argument can express raises NotImplementedError from ``build``, so the
    suite counts it as unsupported. What remains is whether timm computes the same math.
``timm_defaults`` (name ``timm-defaults``)
    The same modules with the settings timm's own models give them (BoTNet and HaloNet
    leave ``scale_pos_embed=False``, MLP-Mixer's LayerNorms use epsilon 1e-6, SE and
    ResNeSt round widths to multiples of 8, BlurPool2d pads by reflection). Its
    differences are the known deviations declared in ``examples/timm_expected.toml``:
    what changes when timm's pretrained layers stand in for the 2021 ones.

docs/timm.md has the result matrix and the reason for every difference. timm is an
optional extra (``attnconf[timm]``), never a dependency of the suite.

timm 1.0.31 imports ``torchvision`` at module level in ``timm.layers.norm_act`` and
``timm.layers.create_norm`` (for ``FrozenBatchNorm2d``, used only by its batch-norm freezing
utilities) and in ``timm.data`` (image transforms). torchvision is not needed for any layer
used here, and installing it would pull a torch build of its own, so when it is absent
:func:`load_timm` imports only the timm submodules these layers live in, with a stand-in for
that one torchvision class while they load.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import math
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Callable, Mapping

import numpy as np

import reference

TIMM_VERSION = "1.0.31"
"""The timm release this adapter and docs/timm.md were checked with (the ``timm`` extra pins it)."""

NOT_IN_TIMM = {
    "conv2d_no_bias": "timm has no counterpart beyond torch.nn.Conv2d: its create_conv2d pads ((stride - 1) + (kernel - 1)) // 2, not the 2021 kernel // 2, and has no depthwise-when-groups-equals-filters rule",
    "cot_attention": "timm has no CoTNet layer",
    "outlook_attention_simple": "timm's VOLO has only the overlapping OutlookAttention",
    "BiasLayer": "timm has no bias-only layer",
    "PositionalEmbedding": "timm's models hold position embeddings as bare nn.Parameters added in forward, not as a layer",
    "ClassToken": "timm's models hold the class token as a bare nn.Parameter concatenated in forward, not as a layer",
}

# Keras activation names (the spec's) -> names in timm's activation registry (timm.layers.create_act).
TIMM_ACTIVATIONS = {
    None: "identity",
    "linear": "identity",
    "relu": "relu",
    "relu6": "relu6",
    "gelu": "gelu",
    "swish": "swish",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "elu": "elu",
}


# --------------------------------------------------------------------------------------------
# Importing timm without torchvision


def load_timm() -> SimpleNamespace:
    """The timm classes this adapter uses. ImportError, with the install command, without timm."""
    if importlib.util.find_spec("timm") is None:
        raise ImportError("examples.timm_adapter needs timm, an optional extra: pip install -e \".[timm]\" (or pip install --no-deps timm==%s pyyaml huggingface_hub safetensors)" % TIMM_VERSION)
    if "timm" not in sys.modules and importlib.util.find_spec("torchvision") is None:
        _import_without_torchvision()
    import timm
    from timm.layers import blur_pool, bottleneck_attn, create_act, halo_attn, mlp, norm, norm_act, split_attn, squeeze_excite
    from timm.models import coat, mlp_mixer, volo

    return SimpleNamespace(
        version=timm.__version__,
        get_act_layer=create_act.get_act_layer,
        BottleneckAttn=bottleneck_attn.BottleneckAttn,
        HaloAttn=halo_attn.HaloAttn,
        SplitAttn=split_attn.SplitAttn,
        RadixSoftmax=split_attn.RadixSoftmax,
        SEModule=squeeze_excite.SEModule,
        BlurPool2d=blur_pool.BlurPool2d,
        LayerNorm=norm.LayerNorm,
        LayerNorm2d=norm.LayerNorm2d,
        BatchNormAct2d=norm_act.BatchNormAct2d,
        Mlp=mlp.Mlp,
        ConvPosEnc=coat.ConvPosEnc,
        ConvRelPosEnc=coat.ConvRelPosEnc,
        OutlookAttention=volo.OutlookAttention,
        MixerBlock=mlp_mixer.MixerBlock,
        Affine=mlp_mixer.Affine,
        SpatialGatingUnit=mlp_mixer.SpatialGatingUnit,
    )


def _import_without_torchvision() -> None:
    """Register ``timm`` and its ``layers``, ``models`` and ``data`` packages without running
    their ``__init__`` (which imports every model, and torchvision through ``timm.data``).

    A name imported from one of them (``from timm.layers import Mlp``) is looked up in the
    package's ``__init__.py``, read with ``ast``, and only the submodule that defines it is
    imported. ``torchvision.ops.misc.FrozenBatchNorm2d`` is a stand-in while the layers load
    and is removed from ``sys.modules`` afterwards.
    """
    root = Path(importlib.util.find_spec("timm").submodule_search_locations[0])
    top = _lazy_package("timm", root)
    for sub in ("layers", "models", "data"):
        setattr(top, sub, _lazy_package(f"timm.{sub}", root / sub))
    stand_ins = _torchvision_stand_in()
    try:
        for name in ("timm.layers.norm_act", "timm.layers.create_norm", "timm.models._builder", "timm.models.volo", "timm.models.coat", "timm.models.mlp_mixer"):
            importlib.import_module(name)
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)


def _lazy_package(name: str, directory: Path) -> ModuleType:
    exports: dict[str, tuple[str, str]] = {}
    star_modules: list[str] = []
    for node in ast.walk(ast.parse((directory / "__init__.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                if alias.name == "*":
                    star_modules.append(node.module)
                else:
                    exports[alias.asname or alias.name] = (node.module, alias.name)
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(directory)]
    package = importlib.util.module_from_spec(spec)

    def __getattr__(attribute: str):
        if attribute in exports:
            submodule, original = exports[attribute]
            value = getattr(importlib.import_module(f"{name}.{submodule}"), original)
            setattr(package, attribute, value)
            return value
        for submodule in star_modules:
            module = importlib.import_module(f"{name}.{submodule}")
            if hasattr(module, attribute):
                return getattr(module, attribute)
        raise AttributeError(f"module {name!r} has no attribute {attribute!r}")

    package.__getattr__ = __getattr__
    sys.modules[name] = package
    return package


def _torchvision_stand_in() -> list[str]:
    class FrozenBatchNorm2d:  # only timm's freeze_batch_norm_2d utilities build one
        def __init__(self, *args, **kwargs):
            raise RuntimeError("torchvision is not installed (examples.timm_adapter imported timm without it)")

    names = ["torchvision", "torchvision.ops", "torchvision.ops.misc"]
    modules = {}
    for name in names:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=name != "torchvision.ops.misc")
        if spec.submodule_search_locations is not None:
            spec.submodule_search_locations = []
        modules[name] = importlib.util.module_from_spec(spec)
    modules["torchvision.ops.misc"].FrozenBatchNorm2d = FrozenBatchNorm2d
    modules["torchvision"].ops = modules["torchvision.ops"]
    modules["torchvision.ops"].misc = modules["torchvision.ops.misc"]
    sys.modules.update(modules)
    return names


# --------------------------------------------------------------------------------------------
# Canonical weights <-> timm parameters


@dataclass(frozen=True)
class Layout:
    """How a canonical (Keras-layout) array becomes the PyTorch tensor, and back."""

    to_torch: Callable[[np.ndarray], np.ndarray]
    to_canonical: Callable[[np.ndarray], np.ndarray]


SAME = Layout(lambda a: a, lambda t: t)
LINEAR = Layout(lambda a: a.transpose(1, 0), lambda t: t.transpose(1, 0))  # Dense (in, out) -> nn.Linear (out, in)
CONV2D = Layout(lambda a: a.transpose(3, 2, 0, 1), lambda t: t.transpose(2, 3, 1, 0))  # (kh, kw, in, out) -> (out, in, kh, kw)
DEPTHWISE = Layout(lambda a: a.transpose(2, 3, 0, 1), lambda t: t.transpose(2, 3, 0, 1))  # (kh, kw, C, 1) -> (C, 1, kh, kw)
DENSE_AS_1X1 = Layout(lambda a: a.transpose(1, 0)[:, :, None, None], lambda t: t[:, :, 0, 0].transpose(1, 0))  # (in, out) -> (out, in, 1, 1)
TOKEN_VECTOR = Layout(lambda a: a.reshape(1, 1, -1), lambda t: t.reshape(-1))  # (C,) -> Affine's (1, 1, C)


@dataclass(frozen=True)
class Slot:
    """Where one canonical weight lives: a parameter or buffer of the module, optionally a
    range of rows of its first axis (one projection of a fused qkv, one head group)."""

    key: str
    layout: Layout = SAME
    rows: tuple[int, int] | None = None


class TimmLayer:
    """A built timm module seen through the contract: canonical weights, channels-first run."""

    def __init__(self, module, slots: Mapping[str, Slot], run: Callable, dtype: str):
        import torch

        self.torch = torch
        self.module = module.to(getattr(torch, dtype)).eval()
        self.slots = dict(slots)
        self.run = run
        self._initial = self._canonical()

    def _tensors(self) -> dict[str, Any]:
        # Buffers too: BlurPool2d keeps its blur filter in a non-persistent buffer.
        return {**dict(self.module.named_parameters()), **dict(self.module.named_buffers())}

    def _target(self, tensors, slot: Slot):
        tensor = tensors[slot.key]
        return tensor if slot.rows is None else tensor[slot.rows[0] : slot.rows[1]]

    def _canonical(self) -> dict[str, np.ndarray]:
        tensors = self._tensors()
        return {name: slot.layout.to_canonical(self._target(tensors, slot).detach().cpu().numpy()).copy() for name, slot in self.slots.items()}

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(array.shape) for name, array in self._canonical().items()}

    def initial_weights(self) -> dict[str, np.ndarray]:
        return dict(self._initial)

    def load_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        missing, extra = sorted(set(self.slots) - set(weights)), sorted(set(weights) - set(self.slots))
        if missing or extra:
            raise KeyError(f"canonical weights missing {missing}, unexpected {extra}")
        tensors = self._tensors()
        with self.torch.no_grad():
            for name, slot in self.slots.items():
                target = self._target(tensors, slot)
                value = np.ascontiguousarray(slot.layout.to_torch(np.asarray(weights[name])))
                if tuple(value.shape) != tuple(target.shape):
                    raise ValueError(f"canonical {name!r} of shape {np.shape(weights[name])} maps to {slot.key} of shape {tuple(target.shape)}")
                target.copy_(self.torch.from_numpy(value).to(target.dtype))

    def forward(self, *inputs: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            out = self.run(*(self.torch.from_numpy(np.ascontiguousarray(x)) for x in inputs))
        return out.numpy()


# --------------------------------------------------------------------------------------------
# The implementation


class TimmImplementation:
    layout = "channels_first"
    dtypes = ("float32", "float64")

    def __init__(self, name: str = "timm", timm_defaults: bool = False):
        self.name = name
        self.timm_defaults = timm_defaults
        self.timm = load_timm()

    def not_implemented(self) -> dict[str, str]:
        return dict(NOT_IN_TIMM)

    def build(self, layer: str, config: Mapping[str, Any], input_shapes, dtype: str) -> TimmLayer:
        if layer in NOT_IN_TIMM:
            raise NotImplementedError(NOT_IN_TIMM[layer])
        # Out-of-domain configs and shapes raise the reference's ValueError, as the spec words it.
        config = reference.validate(layer, *input_shapes, **config)
        import torch

        previous = torch.get_default_dtype()
        torch.set_default_dtype(getattr(torch, dtype))  # built in the target dtype: initial values are not rounded through float32
        try:
            module, slots, run = getattr(self, f"_build_{layer}")(config, *[tuple(s) for s in input_shapes])
        finally:
            torch.set_default_dtype(previous)
        return TimmLayer(module, slots, run, dtype)

    # ---- helpers

    def _act(self, layer: str, activation):
        if activation not in TIMM_ACTIVATIONS:
            raise NotImplementedError(f"{layer}: activation {activation!r}: timm's activation registry (timm.layers.create_act) has no such name")
        return self.timm.get_act_layer(TIMM_ACTIVATIONS[activation])

    @staticmethod
    def _bn_slots(prefix: str, key: str) -> dict[str, Slot]:
        at = f"{key}." if key else ""
        return {
            f"{prefix}/gamma": Slot(f"{at}weight"),
            f"{prefix}/beta": Slot(f"{at}bias"),
            f"{prefix}/moving_mean": Slot(f"{at}running_mean"),
            f"{prefix}/moving_variance": Slot(f"{at}running_var"),
        }

    @staticmethod
    def _projection(in_channels: int, out_channels: int, weight: bool, bias: bool):
        """The output projection (``output_weight``, ``output_bias``) that timm's BottleneckAttn and
        HaloAttn leave to the next layer of their bottleneck block (its 1x1 ``conv3``)."""
        import torch
        from torch import nn

        class OutputProjection(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False) if weight else None
                self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

            def forward(self, x):
                x = self.conv(x) if self.conv is not None else x
                return x + self.bias[:, None, None] if self.bias is not None else x

        return OutputProjection()

    # ---- aotnet

    def _build_anti_alias_downsample(self, config, shape):
        k, stride = _side(config["kernel_size"]), _side(config["strides"])
        if k == 1:
            raise NotImplementedError("anti_alias_downsample: kernel_size 1: timm's BlurPool2d asserts filt_size > 1")
        if not self.timm_defaults:
            for axis, n in (("height", shape[1]), ("width", shape[2])):
                if not _blur_padding_matches(n, k, stride):
                    raise NotImplementedError(
                        f"anti_alias_downsample: {axis} {n} with kernel_size {k}, strides {stride}: timm's BlurPool2d pads "
                        f"((stride - 1) + (kernel - 1)) // 2 = {(stride + k - 2) // 2} on every side; TensorFlow SAME pads "
                        f"{_tf_same_before(n, k, stride)} before (and reads {-(-n // stride)} positions) here"
                    )
        module = self.timm.BlurPool2d(shape[-1], filt_size=k, stride=stride, pad_mode="reflect" if self.timm_defaults else "constant")
        return module, {"anti_alias_down/depthwise_kernel": Slot("filt", DEPTHWISE)}, module

    def _build_batchnorm_with_activation(self, config, shape):
        module = self.timm.BatchNormAct2d(shape[-1], eps=1e-5, act_layer=self._act("batchnorm_with_activation", config["activation"]))
        if config["zero_gamma"]:
            module.weight.data.zero_()  # as timm's blocks do for their last norm (zero_init_last)
        return module, self._bn_slots("bn", ""), module

    def _build_se_module(self, config, shape):
        channels = shape[-1]
        width = dict(rd_ratio=config["se_ratio"]) if self.timm_defaults else dict(rd_channels=int(channels * config["se_ratio"]))
        module = self.timm.SEModule(channels, bias=config["use_bias"], act_layer=self._act("se_module", config["activation"]), **width)
        slots = {"1_conv/kernel": Slot("fc1.weight", CONV2D), "2_conv/kernel": Slot("fc2.weight", CONV2D)}
        if config["use_bias"]:
            slots.update({"1_conv/bias": Slot("fc1.bias"), "2_conv/bias": Slot("fc2.bias")})
        return module, slots, module

    # ---- botnet, halonet

    def _build_MHSAWithPositionEmbedding(self, config, shape):
        if not config["relative"]:
            raise NotImplementedError("MHSAWithPositionEmbedding: relative=False: timm's BottleneckAttn has only relative position tables (PosEmbedRel)")
        from torch import nn

        _, height, width, channels = shape
        heads, key_dim = config["num_heads"], config["key_dim"]
        embed = heads * key_dim
        attention = self.timm.BottleneckAttn(
            channels, dim_out=embed, feat_size=(height, width), num_heads=heads, dim_head=key_dim, qkv_bias=False, scale_pos_embed=not self.timm_defaults
        )
        out_channels = config["out_shape"] if config["out_weight"] and config["out_shape"] is not None else embed
        projection = self._projection(embed, out_channels, config["out_weight"], config["out_bias"])
        module = nn.Sequential(attention, projection)
        slots = {
            # qkv is one 1x1 conv: rows [0, E) query, [E, 2E) key, [2E, 3E) value, head-major.
            "query": Slot("0.qkv.weight", DENSE_AS_1X1, (0, embed)),
            "key": Slot("0.qkv.weight", DENSE_AS_1X1, (embed, 2 * embed)),
            "value": Slot("0.qkv.weight", DENSE_AS_1X1, (2 * embed, 3 * embed)),
            "r_width": Slot("0.pos_embed.width_rel", LINEAR),
            "r_height": Slot("0.pos_embed.height_rel", LINEAR),
        }
        slots.update(self._projection_slots(config))
        return module, slots, module

    @staticmethod
    def _projection_slots(config):
        """Where MHSA's and HaloAttention's output projection (``_projection``, module ``1``) keeps
        the canonical ``output_weight`` / ``output_bias``, when the config has them."""
        slots = {}
        if config["out_weight"]:
            slots["output_weight"] = Slot("1.conv.weight", DENSE_AS_1X1)
        if config["out_bias"]:
            slots["output_bias"] = Slot("1.bias")
        return slots

    def _build_HaloAttention(self, config, shape):
        from torch import nn

        channels = shape[-1]
        heads, key_dim = config["num_heads"], config["key_dim"]
        embed = heads * key_dim
        attention = self.timm.HaloAttn(
            channels,
            dim_out=embed,
            num_heads=heads,
            dim_head=key_dim,
            block_size=config["block_size"],
            halo_size=config["halo_size"],
            qkv_bias=False,
            scale_pos_embed=not self.timm_defaults,
        )
        out_channels = config["out_shape"] if config["out_weight"] and config["out_shape"] is not None else embed
        module = nn.Sequential(attention, self._projection(embed, out_channels, config["out_weight"], config["out_bias"]))
        slots = {
            "query": Slot("0.q.weight", DENSE_AS_1X1),
            # kv's output channels are grouped by head, key then value: the 2021 key_value layout.
            "key_value": Slot("0.kv.weight", DENSE_AS_1X1),
            "r_width": Slot("0.pos_embed.width_rel", LINEAR),
            "r_height": Slot("0.pos_embed.height_rel", LINEAR),
        }
        slots.update(self._projection_slots(config))
        return module, slots, module

    # ---- resnest

    def _build_rsoftmax(self, config, shape):
        module = self.timm.RadixSoftmax(config["groups"], 1)  # cardinality 1: the 2021 channel order

        def run(x):  # RadixSoftmax flattens [B, C, 1, 1] to [B, C]; the layer keeps the map shape
            return module(x).reshape(x.shape)

        return module, {}, run

    def _build_split_attention_conv2d(self, config, shape):
        from torch import nn

        channels, groups, filters = shape[-1], config["groups"], config["filters"]
        if self.timm_defaults:
            width = dict(rd_ratio=0.25)  # make_divisible(channels * radix / 4, 8, min_value=32)
        else:
            # max(C * radix // 4, 32) exactly: make_divisible(C * radix * rd_ratio, divisor 1, min_value 32).
            width = dict(rd_ratio=(channels * groups // 4) / (channels * groups), rd_divisor=1)
        module = self.timm.SplitAttn(
            channels,
            filters,
            kernel_size=config["kernel_size"],
            stride=config["strides"],
            groups=1,
            radix=groups,
            act_layer=self._act("split_attention_conv2d", config["activation"]),
            norm_layer=nn.BatchNorm2d,
            **width,
        )
        if groups == 1:
            slots = {"1_conv/kernel": Slot("conv.weight", CONV2D)}
        else:
            slots = {f"1_g{i + 1}_conv/kernel": Slot("conv.weight", CONV2D, (i * filters, (i + 1) * filters)) for i in range(groups)}
        slots.update(self._bn_slots("1_bn", "bn0"))
        slots.update({"2_conv/kernel": Slot("fc1.weight", CONV2D), "2_conv/bias": Slot("fc1.bias")})
        slots.update(self._bn_slots("2_bn", "bn1"))
        slots.update({"3_conv/kernel": Slot("fc2.weight", CONV2D), "3_conv/bias": Slot("fc2.bias")})
        return module, slots, module

    # ---- coat

    def _build_ConvPositionalEncoding(self, config, shape):
        side = math.isqrt(shape[1] - 1)
        module = self.timm.ConvPosEnc(shape[-1], k=config["kernel_size"])
        slots = {"depthwise_kernel": Slot("proj.weight", DEPTHWISE), "bias": Slot("proj.bias")}
        return module, slots, lambda x: module(x, (side, side))

    def _build_ConvRelativePositionalEncoding(self, config, query_shape, value_shape):
        _, heads, tokens, head_chs = query_shape
        side = math.isqrt(tokens - 1)
        # timm takes {kernel size: heads}, applied in the dict's order: adjacent groups of one kernel
        # size merge into one depthwise conv; the same size twice around another cannot be written.
        window: dict[int, int] = {}
        offsets = []  # canonical group -> (timm conv index, first channel in it)
        for split, kernel in zip(config["head_splits"], config["head_kernel_size"]):
            if kernel in window and list(window)[-1] != kernel:
                raise NotImplementedError(
                    f"ConvRelativePositionalEncoding: head_kernel_size {list(config['head_kernel_size'])}: timm's ConvRelPosEnc takes "
                    "a dict {kernel size: heads}, which cannot hold one kernel size twice around another"
                )
            offsets.append((len(window) - (kernel in window), window.get(kernel, 0) * head_chs))
            window[kernel] = window.get(kernel, 0) + split
        module = self.timm.ConvRelPosEnc(head_chs, heads, window)
        slots = {}
        for s, ((conv, start), split) in enumerate(zip(offsets, config["head_splits"])):
            rows = (start, start + split * head_chs)
            slots[f"depth_conv_{s + 1}/depthwise_kernel"] = Slot(f"conv_list.{conv}.weight", DEPTHWISE, rows)
            slots[f"depth_conv_{s + 1}/bias"] = Slot(f"conv_list.{conv}.bias", SAME, rows)
        return module, slots, lambda q, v: module(q, v, (side, side))

    def _build_layer_norm(self, config, shape):
        # LayerNorm2d normalises dim 1 of [B, C, H, W]; LayerNorm the last axis. Both default to epsilon 1e-6.
        module = self.timm.LayerNorm2d(shape[-1]) if len(shape) == 4 else self.timm.LayerNorm(shape[-1])
        return module, {"ln/gamma": Slot("weight"), "ln/beta": Slot("bias")}, module

    # ---- volo

    def _build_outlook_attention(self, config, shape):
        channels, embed = shape[-1], config["embed_dim"]
        if channels != embed:
            raise NotImplementedError(f"outlook_attention: input channels {channels} != embed_dim {embed}: timm's OutlookAttention projects dim to dim")
        k = config["kernel_size"]
        # timm's padding is a pixel count; the 2021 padding is a flag for kernel_size // 2 pixels.
        pixels = config["padding"] if self.timm_defaults else (k // 2 if config["padding"] == 1 else 0)
        module = self.timm.OutlookAttention(embed, config["num_head"], kernel_size=k, padding=pixels, stride=config["strides"], qkv_bias=False)
        slots = {
            "v/kernel": Slot("v.weight", LINEAR),
            "attn/kernel": Slot("attn.weight", LINEAR),
            "attn/bias": Slot("attn.bias"),
            "out/kernel": Slot("proj.weight", LINEAR),
            "out/bias": Slot("proj.bias"),
        }
        return module, slots, lambda x: module(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # VOLO's blocks run [B, H, W, C]

    # ---- mlp family

    def _build_mlp_block(self, config, shape):
        module = self.timm.Mlp(shape[-1], config["hidden_dim"], act_layer=self._act("mlp_block", config["activation"]))
        slots = {"Dense_0/kernel": Slot("fc1.weight", LINEAR), "Dense_0/bias": Slot("fc1.bias"), "Dense_1/kernel": Slot("fc2.weight", LINEAR), "Dense_1/bias": Slot("fc2.bias")}
        return module, slots, module

    def _build_mixer_block(self, config, shape):
        from torch import nn

        _, tokens, channels = shape
        ratios = (_ratio(config["tokens_mlp_dim"], channels), _ratio(config["channels_mlp_dim"], channels))
        module = self.timm.MixerBlock(
            channels,
            tokens,
            mlp_ratio=ratios,
            norm_layer=partial(nn.LayerNorm, eps=1e-6 if self.timm_defaults else 1e-5),
            act_layer=self._act("mixer_block", config["activation"]),
            drop_path=config["drop_rate"],
        )
        slots = {"LayerNorm_0/gamma": Slot("norm1.weight"), "LayerNorm_0/beta": Slot("norm1.bias"), "LayerNorm_1/gamma": Slot("norm2.weight"), "LayerNorm_1/beta": Slot("norm2.bias")}
        for prefix, key in (("token_mixing", "mlp_tokens"), ("channel_mixing", "mlp_channels")):
            slots.update(
                {
                    f"{prefix}/Dense_0/kernel": Slot(f"{key}.fc1.weight", LINEAR),
                    f"{prefix}/Dense_0/bias": Slot(f"{key}.fc1.bias"),
                    f"{prefix}/Dense_1/kernel": Slot(f"{key}.fc2.weight", LINEAR),
                    f"{prefix}/Dense_1/bias": Slot(f"{key}.fc2.bias"),
                }
            )
        return module, slots, module

    def _build_ChannelAffine(self, config, shape):
        module = self.timm.Affine(shape[-1])
        slots = {"weight": Slot("alpha", TOKEN_VECTOR)}
        if config["use_bias"]:
            slots["bias"] = Slot("beta", TOKEN_VECTOR)
        # else beta stays at its initial zeros: timm's Affine always adds it.

        def run(x):
            # Affine broadcasts over the last axis of [B, N, C]: feature maps come channels-first,
            # rank 2 has no token axis.
            if x.ndim == 4:
                return module(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            if x.ndim == 2:
                return module(x[:, None, :])[:, 0, :]
            return module(x)

        return module, slots, run

    def _build_spatial_gating_block(self, config, shape):
        from torch import nn

        _, tokens, channels = shape
        module = self.timm.SpatialGatingUnit(channels, tokens, norm_layer=nn.LayerNorm)  # epsilon 1e-5, as gMLP's blocks leave it
        module.init_weights()  # gMLP's model init: proj.bias = 1 (and proj.weight ~ N(0, 1e-6))
        slots = {"vv_ln/gamma": Slot("norm.weight"), "vv_ln/beta": Slot("norm.bias"), "vv_dense/kernel": Slot("proj.weight", LINEAR), "vv_dense/bias": Slot("proj.bias")}
        return module, slots, module


def _side(value) -> int:
    return value[0] if isinstance(value, (tuple, list)) else value


def _tf_same_before(n: int, k: int, s: int) -> int:
    return max((-(-n // s) - 1) * s + k - n, 0) // 2


def _blur_padding_matches(n: int, k: int, s: int) -> bool:
    """Whether BlurPool2d's symmetric ((s - 1) + (k - 1)) // 2 zero padding reads the same
    rows as TensorFlow SAME padding on an axis of size n: same first row, same count."""
    timm_pad = (s + k - 2) // 2
    return timm_pad == _tf_same_before(n, k, s) and (n + 2 * timm_pad - k) // s + 1 == -(-n // s)


def _ratio(width: int, channels: int) -> float:
    """A float r with int(r * channels) == width, as MixerBlock computes its MLP widths."""
    r = width / channels
    while int(r * channels) < width:
        r = math.nextafter(r, math.inf)
    return r


def implementation() -> TimmImplementation:
    """timm's layers with every argument that can express the canonical config set to do so."""
    return TimmImplementation("timm", timm_defaults=False)


def timm_defaults() -> TimmImplementation:
    """timm's layers with the settings timm's own models use (see docs/timm.md)."""
    return TimmImplementation("timm-defaults", timm_defaults=True)
