"""The contract an implementation fulfils to be checked by this suite.

An implementation is any object with these attributes and methods (a structural protocol:
nothing needs to be imported or subclassed)::

    name: str              # shown in reports, e.g. "tf", "torch", "mylib"
    layout: str            # "channels_last" or "channels_first": where feature maps keep
                           # their channels. Token sequences [B, N, C] are the same in both.
    dtypes: tuple[str]     # the float dtypes it runs, e.g. ("float32", "float64")

    def not_implemented(self) -> Mapping[str, str]:
        '''{layer name: reason} for layers it does not implement.'''

    def build(self, layer, config, input_shapes, dtype) -> BuiltLayer:
        '''A layer for this config (defaults filled in, 2021 keyword names), canonical
        channels-last input shapes and dtype. Raise ValueError for a config or shape outside
        the layer's domain, NotImplementedError for one it chooses not to support.'''

and ``build`` returns an object with::

    def weight_shapes(self) -> Mapping[str, tuple[int, ...]]:
        '''Its weights, under canonical names, in canonical (Keras) layouts.'''

    def load_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        '''Set every weight from canonical names and layouts (arrays already in its dtype).'''

    def forward(self, *inputs: np.ndarray) -> np.ndarray:
        '''Inference: inputs in its own layout and dtype, output in its own layout.'''

    # optional
    def initial_weights(self) -> Mapping[str, np.ndarray]:
        '''Its weights as freshly built, before load_weights, under canonical names and
        layouts. Checked ("init") against the values the spec declares: fixed kernels (the
        anti-alias blur), initial values the 2021 signatures set (zero_gamma, BatchNorm's moving
        statistics, ChannelAffine's weight_init_value). Without it, "init" reads "not
        implemented", never a pass.'''

The suite converts feature maps between channels-last and the declared layout, draws the
configs, shapes, weights and inputs, and compares. See README "Checking your implementation".
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

LAYOUTS = ("channels_last", "channels_first")

BUILTIN_IMPLEMENTATIONS = {
    "tf": "impls.tf.adapter:implementation",
    "torch": "impls.torch.adapter:implementation",
    "numpy": "conformance.numpy_impl:implementation",
}
"""Short names for the bundled implementations; anything else is ``module:attribute``."""


@runtime_checkable
class BuiltLayer(Protocol):
    def weight_shapes(self) -> Mapping[str, tuple[int, ...]]: ...

    def load_weights(self, weights: Mapping[str, np.ndarray]) -> None: ...

    def forward(self, *inputs: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Implementation(Protocol):
    name: str
    layout: str
    dtypes: tuple[str, ...]

    def not_implemented(self) -> Mapping[str, str]: ...

    def build(self, layer: str, config: Mapping[str, Any], input_shapes: tuple[tuple[int, ...], ...], dtype: str) -> BuiltLayer: ...


class ContractError(TypeError):
    """An object given as an implementation does not fulfil the contract."""


def load_implementation(spec: str) -> Implementation:
    """Resolve ``tf``, ``torch``, ``numpy`` or ``module:attribute`` to a checked implementation.

    The attribute may be an implementation object or a zero-argument callable returning one.
    """
    target = BUILTIN_IMPLEMENTATIONS.get(spec, spec)
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ContractError(f"implementation {spec!r} must be one of {sorted(BUILTIN_IMPLEMENTATIONS)} or 'module:attribute'")
    module = importlib.import_module(module_name)
    try:
        impl = getattr(module, attribute)
    except AttributeError:
        raise ContractError(f"implementation {spec!r}: module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(impl, Implementation) and callable(impl):
        impl = impl()
    check_implementation(impl, spec)
    return impl


def check_implementation(impl: Any, label: str = "") -> None:
    label = label or repr(impl)
    missing = [a for a in ("name", "layout", "dtypes", "not_implemented", "build") if not hasattr(impl, a)]
    if missing:
        raise ContractError(f"implementation {label}: missing {', '.join(missing)} (see conformance.contract)")
    if impl.layout not in LAYOUTS:
        raise ContractError(f"implementation {label}: layout {impl.layout!r} must be one of {LAYOUTS}")
    unknown = [d for d in impl.dtypes if d not in ("float16", "bfloat16", "float32", "float64")]
    if unknown:
        raise ContractError(f"implementation {label}: dtypes {unknown} are not float dtypes this suite knows")
