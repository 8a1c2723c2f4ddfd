"""The contract an implementation fulfils to be checked by this suite.

An implementation is any object with these attributes and methods (a structural protocol:
nothing needs to be imported or subclassed)::

    name: str              # shown in reports, e.g. "tf", "torch", "mylib"
    layout: str            # "channels_last" or "channels_first": where feature maps keep
                           # their channels. Token sequences [B, N, C] and per-head tensors
                           # [B, heads, N, d] are the same in both (passed unchanged).
    dtypes: tuple[str]     # the float dtypes it runs, e.g. ("float32", "float64")
    dtype_notes: Mapping[str, str]  # optional: {dtype: why it is not in dtypes}, shown with
                           # the "not implemented" cells of that dtype, e.g. {"float64": "Keras
                           # 3.15 on JAX computes float64 in float32 (keras-team/keras#23704)"}

    def not_implemented(self) -> Mapping[str, str]:
        '''{layer name: reason} for layers it does not implement.'''

    def build(self, layer, config, input_shapes, dtype) -> BuiltLayer:
        '''A layer for this case.

        layer: str, the name as in the README (reference.names()).
        config: dict of the parameters the user set, under the 2021 keyword names, as written:
            parameters left out must take the implementation's own defaults (which are
            semantics too: a changed default fails). The README examples arrive exactly as
            written (HaloAttention() arrives as {}).
        input_shapes: tuple of tuples of ints, one per input, canonical (channels-last) shapes.
        dtype: "float32" or "float64" (one of self.dtypes); "float16" or "bfloat16" when the
            implementation declares them (opt-in: attnconf check --dtypes float16 bfloat16).
            NumPy has no bfloat16: bfloat16 weights, inputs and outputs (and initial_weights)
            cross the contract as float32 arrays holding bfloat16 values, exactly; the
            implementation casts them to bfloat16 itself (conformance.checks.half).

        Raise ValueError (or TypeError for a value of the wrong type) for a config or shape
        outside the layer's domain: the rejection check passes out-of-domain configs and
        shapes straight to build (and to forward). Raise NotImplementedError for a config the
        implementation chooses not to support: that case reads "unsupported" (counted, shown,
        never a pass). Any other exception is reported as an error of the implementation.'''

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

    # optional
    def gradients(self, inputs: list[np.ndarray], cotangent: np.ndarray) -> tuple[list, dict]:
        '''(input_grads, weight_grads): the gradients of sum(forward(*inputs) * cotangent) at
        inference (training=False), in the dtype it was built in. inputs and cotangent in
        its own layout; input_grads one per input in its own layout; weight_grads {canonical
        name: array in canonical layout} for every trainable weight (fixed weights and moving
        statistics may be left out; zeros for a weight the output does not use). Checked
        ("gradients") against float64 finite differences of the reference, built in float64
        when the implementation declares it, else in float32 (with a float32 tolerance); without
        it, "not implemented". See conformance.checks.gradients.'''

    # optional
    def forward_training(self, *inputs: np.ndarray) -> tuple[np.ndarray, dict]:
        '''(output, moving_statistics): one training-mode forward (batch statistics, dropout
        active) and {canonical name: value} of every BatchNorm moving statistic after that step
        ({} without any). Checked ("training") where training differs from inference; see
        conformance.checks.training for the semantics (Keras' biased variance updates the
        moving variance; PyTorch's nn.BatchNorm2d uses the unbiased one).'''

An implementation that needs its own process and environment (Keras 2 code under
``TF_USE_LEGACY_KERAS=1``, Keras 3 under ``KERAS_BACKEND=jax``) declares it::

    isolation = {"env": {"KERAS_BACKEND": "jax"}}   # optional keys: "target", "timeout"

and ``load_implementation`` returns a proxy with this same contract whose calls run in a worker
process started with that environment; arrays cross it bit for bit, built layers have the same
optional methods as the real ones, and exceptions come back with their type and message. See
``conformance.isolation``.

The suite converts feature maps between channels-last and the declared layout, draws the
configs, shapes, weights and inputs, and compares. See README "Checking your implementation".
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

import numpy as np

import reference

LAYOUTS = ("channels_last", "channels_first")

BUILTIN_IMPLEMENTATIONS = {
    "tf": "impls.tf.adapter:implementation",
    "torch": "impls.torch.adapter:implementation",
    "tf-mixed": "impls.tf.adapter:mixed_implementation",  # half dtypes only: mixed_float16 / mixed_bfloat16 policies
    "torch-autocast": "impls.torch.adapter:autocast_implementation",  # half dtypes only: CPU torch.autocast
    "numpy": "conformance.numpy_impl:implementation",
    "keras-jax": "impls.keras_backends:keras_jax",
    "keras-torch": "impls.keras_backends:keras_torch",
}
"""Short names for the bundled implementations; anything else is ``module:attribute`` or
``path/to/file.py:attribute``."""


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
    module_name, sep, attribute = target.rpartition(":")
    if not sep or not module_name or not attribute:
        raise ContractError(f"implementation {spec!r} must be one of {sorted(BUILTIN_IMPLEMENTATIONS)}, 'module:attribute' or 'path/to/file.py:attribute'")
    try:
        module = _import_file(module_name) if module_name.endswith(".py") else importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise  # the adapter itself imports something missing: its own error, as it is
        raise ContractError(
            f"implementation {spec!r}: no module named {exc.name!r} on the Python path; install it, add its folder to "
            f"PYTHONPATH, or name the file: path/to/{module_name.replace('.', '/')}.py:{attribute}"
        ) from None
    try:
        impl = getattr(module, attribute)
    except AttributeError:
        raise ContractError(f"implementation {spec!r}: module {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(impl, type) or (not isinstance(impl, Implementation) and callable(impl)):  # a class is a factory too
        impl = impl()
    if getattr(impl, "isolation", None) is not None:
        from conformance.isolation import isolate

        impl = isolate(impl, spec)  # a proxy whose calls run in the declared worker process
    check_implementation(impl, spec)
    return impl


def _import_file(path: str):
    """Import an adapter from a file path; its folder goes on ``sys.path`` so that it can import
    its siblings, as when it is run as a script."""
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise ContractError(f"implementation file {path!r} does not exist")
    name = f"attnconf_adapter_{file.stem}_{abs(hash(str(file))):x}"
    if name in sys.modules:
        return sys.modules[name]
    if str(file.parent) not in sys.path:
        sys.path.insert(0, str(file.parent))
    loader_spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    loader_spec.loader.exec_module(module)
    return module


def portable_ref(spec: str) -> str:
    """A load string that works from a fresh shell in any directory: built-in names and modules
    importable without the current directory stay as they are; anything else becomes the
    absolute path of its file."""
    target = BUILTIN_IMPLEMENTATIONS.get(spec)
    if target is not None:
        return spec
    module_name, _, attribute = spec.rpartition(":")
    if module_name.endswith(".py"):
        return f"{Path(module_name).expanduser().resolve()}:{attribute}"
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if file is None or _importable_without_cwd(module_name):
        return spec
    return f"{Path(file).resolve()}:{attribute}"


INSTALLED_PACKAGES = ("reference", "impls", "conformance")
"""This project's packages: importable from any directory once it is installed."""


def _importable_without_cwd(module_name: str) -> bool:
    top = module_name.split(".")[0]
    if top in INSTALLED_PACKAGES:
        return True
    location = Path(getattr(sys.modules.get(top), "__file__", "") or "").resolve()
    return any(location.is_relative_to(Path(p).resolve()) for p in sys.path if p and "site-packages" in p)


def dtype_not_declared(impl: Any, dtype: str) -> str:
    """The "not implemented" detail of a dtype ``impl`` does not declare, with the reason from its
    optional ``dtype_notes`` ({dtype: reason}) when it gives one."""
    text = f"dtype {dtype} not declared by {impl.name}"
    try:
        note = dict(getattr(impl, "dtype_notes", None) or {}).get(dtype)
    except Exception:  # noqa: BLE001 - an optional attribute must not break the report
        note = None
    return f"{text}: {note}" if note else text


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
    try:
        listed = [str(layer) for layer in dict(impl.not_implemented())]
    except (TypeError, ValueError) as exc:
        raise ContractError(f"implementation {label}: not_implemented() must give {{layer: reason}}: {exc}") from None
    strangers = [layer for layer in listed if layer not in reference.names()]
    if strangers:
        raise ContractError(f"implementation {label}: not_implemented() names {strangers}, which are not layers of the spec (a typo would leave the layer checked and failing)")
    notes = getattr(impl, "dtype_notes", None)
    if notes is not None and not (isinstance(notes, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in notes.items())):
        raise ContractError(f"implementation {label}: dtype_notes must map dtype names to reasons (strings), got {notes!r}")
