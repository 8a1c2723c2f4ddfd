"""Move one layer's weights between Keras, PyTorch and a canonical safetensors file.

Three formats, each holding the weights of one layer at one config and input shapes:

``canonical``
    A safetensors file (written and read with the ``safetensors`` package) whose tensors are the
    layer's weights under their canonical names (``query``, ``token_mixing/Dense_0/kernel``) in
    Keras layouts, exactly ``reference.weight_shapes(layer, *input_shapes, **config)``. Its
    ``__metadata__`` holds one key, ``attnconf``, whose value is a JSON object with sorted keys::

        {"config": {...every parameter, defaults filled in...}, "dtype": "float32",
         "format": "attnconf canonical weights", "input_shapes": [[1, 14, 16, 256]],
         "layer": "MHSAWithPositionEmbedding", "layout": "...", "spec_version": "0.1.0"}

    One key because the safetensors writer orders several metadata keys differently from run to
    run; with one, writing the same weights twice gives the same bytes. A canonical file carries
    everything needed to rebuild the layer, so converting from it needs no other arguments.
``keras``
    A Keras 3 ``.weights.h5`` file: ``model.save_weights`` of the layer as this project's Keras
    implementation builds it (``impls.tf.adapter``: a functional model of the layer or block at
    that config and input shapes), read back with ``model.load_weights``. In memory: a Keras
    layer or model (``canonical_from_keras`` / ``keras_from_canonical``); a layer's canonical
    names are its variable paths after the layer's own name, a block's after its ``name``
    prefix.
``torch``
    A PyTorch state dict (of the module ``impls.torch.MODULES[layer].from_canonical(config,
    *input_shapes)``) stored with ``safetensors.torch.save_file`` and read with
    ``safetensors.torch.load_file``: never ``torch.save``/pickle. The layouts are mapped by each
    module's declaration (``canonical_weights()``: a state_dict key, a permutation, and for a
    grouped convolution the block of the tensor that holds one canonical kernel).

Guarantees:

* **Exact.** Weights are copied, permuted or sliced, never computed: every round trip
  (Keras -> canonical -> Keras, PyTorch -> canonical -> PyTorch, and through every pair) gives the
  same bits, in float32 and in float64.
* **No silent casts.** Canonical weights have one dtype, float32 or float64, kept in every format
  (a source's dtype decides the dtype the target layer is built in). A source with weights in
  different dtypes, or in another dtype, is refused; so is loading canonical weights into a
  Keras layer or PyTorch module of another dtype. A change of dtype is explicit:
  ``LayerWeights.astype`` or ``attnconf convert --dtype`` (NumPy ``astype``: float32 -> float64 is
  exact, float64 -> float32 rounds to nearest). A layer without weights (``rsoftmax``) has no
  dtype to read off a Keras or PyTorch source: float32 unless ``--dtype`` says otherwise (a
  canonical file records its dtype in the metadata).
* **Checked.** Every source is checked against the reference's weight names and shapes before
  anything is written; a missing, unexpected or wrong-shape weight raises
  :class:`WeightMismatchError` (a ``ValueError``) naming each weight with the shape expected and
  the shape found, and for a file format the name it has there (the ``.weights.h5`` dataset,
  the state_dict key). A config or input shape outside the layer's domain raises the reference's
  ``DomainError``.
* **Only weights.** A state dict also holds buffers that are not weights (BatchNorm's
  ``num_batches_tracked``): they are optional when reading (a fresh module's value is kept) and
  written as a freshly built module holds them.

Python API (``lw`` is a :class:`LayerWeights`)::

    lw = canonical(layer, config, input_shapes, weights)        # check and wrap NumPy arrays
    write_canonical(path, lw); lw = read_canonical(path)
    lw = canonical_from_keras(keras_layer_or_model, layer, config, input_shapes, prefix=None)
    model = keras_from_canonical(lw, keras_layer_or_model=None, prefix=None)
    write_keras_weights(path, lw); lw = read_keras_weights(path, layer, config, input_shapes)
    lw = canonical_from_torch(module, layer, config, input_shapes)
    module = torch_from_canonical(lw, module=None)
    state_dict = torch_state_dict_from_canonical(lw, module=None)
    lw = canonical_from_torch_state_dict(state_dict, layer, config, input_shapes)
    write_torch_state_dict(path, lw); lw = read_torch_state_dict(path, layer, config, input_shapes)
    lw = convert("keras", src, "torch", dst, layer, config, input_shapes, dtype=None)

The command line (``attnconf convert``) is a thin layer over :func:`convert`; see
:func:`command`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

import reference

FORMATS = ("keras", "torch", "canonical")
DTYPES = ("float32", "float64")
METADATA_KEY = "attnconf"
FILE_FORMAT = "attnconf canonical weights"
FILE_FORMATS = {"canonical": FILE_FORMAT, "torch": "attnconf PyTorch state dict", "keras": "attnconf Keras weights"}
"""The ``format`` field of each file format's ``attnconf`` metadata (a canonical file's is required;
PyTorch and Keras files written here carry it too, and are checked against it when read)."""
LAYOUT = "tensors are the layer's weights under canonical names, in Keras layouts"
KERAS_SUFFIX = ".weights.h5"


class ConversionError(ValueError):
    """A conversion that cannot be done as asked: an unreadable source, a dtype mismatch, a
    canonical file whose metadata disagrees with the arguments."""


class WeightMismatchError(ConversionError):
    """Weights that are not the layer's: ``missing`` and ``extra`` map a weight's name (as the
    message shows it) to its shape, ``wrong_shape`` maps it to ``(expected, got)``."""

    def __init__(self, what: str, missing: Mapping[str, tuple] = (), extra: Mapping[str, tuple] = (), wrong_shape: Mapping[str, tuple] = ()):
        self.what = what
        self.missing = dict(missing)
        self.extra = dict(extra)
        self.wrong_shape = dict(wrong_shape)
        parts = [f"missing {name} (expected shape {_shape(shape)})" for name, shape in self.missing.items()]
        parts += [f"unexpected {name} (shape {_shape(shape)})" for name, shape in self.extra.items()]
        parts += [f"{name} has shape {_shape(got)}, expected {_shape(expected)}" for name, (expected, got) in self.wrong_shape.items()]
        super().__init__(f"{what}: the weights do not match the layer: " + "; ".join(parts))


def _shape(shape) -> str:
    return str(tuple(int(d) for d in shape))


@dataclass(frozen=True)
class LayerWeights:
    """One layer's canonical weights with what they belong to: the layer, its full config
    (defaults filled in, JSON values: lists, not tuples), the channels-last input shapes and the
    dtype every weight has. Build one with :func:`canonical`, which checks it."""

    layer: str
    config: dict[str, Any]
    input_shapes: tuple[tuple[int, ...], ...]
    dtype: str
    weights: dict[str, np.ndarray] = field(repr=False)

    def astype(self, dtype: str) -> "LayerWeights":
        """The same weights cast to ``dtype`` (float32 or float64): the one explicit way to
        change a dtype; float64 -> float32 rounds to nearest."""
        _check_dtype_name(dtype)
        weights = {name: np.ascontiguousarray(array.astype(dtype)) for name, array in self.weights.items()}
        return LayerWeights(self.layer, self.config, self.input_shapes, dtype, weights)

    def describe(self) -> str:
        shapes = ", ".join(str(list(s)) for s in self.input_shapes)
        return f"{self.layer} {json.dumps(self.config, sort_keys=True)} on input shape(s) {shapes}"

    def metadata(self, fmt: str = "canonical") -> dict[str, Any]:
        return {
            "config": self.config,
            "dtype": self.dtype,
            "format": FILE_FORMATS[fmt],
            "input_shapes": [list(s) for s in self.input_shapes],
            "layer": self.layer,
            "layout": LAYOUT,
            "spec_version": reference.SPEC_VERSION,
        }


# --------------------------------------------------------------------------------------------
# Canonical weights and files


def _check_dtype_name(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ConversionError(f"dtype {dtype!r}: canonical weights are one of {', '.join(DTYPES)}")


def _json_value(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


def layer_args(layer: str, config: Mapping[str, Any] | None, input_shapes: Sequence[Sequence[int]]) -> tuple[dict[str, Any], tuple[tuple[int, ...], ...]]:
    """The full config (JSON values) and the shapes as tuples, or the reference's
    ``DomainError`` for a config or shape outside the layer's domain (``KeyError`` for an
    unknown layer)."""
    if layer not in reference.names():
        raise KeyError(f"unknown layer {layer!r}; the layers are: {', '.join(reference.names())}")
    shapes = tuple(tuple(int(d) for d in s) for s in input_shapes)
    full = reference.validate(layer, *shapes, **dict(config or {}))
    return _json_value(full), shapes


def _dtype_of(what: str, dtypes: Mapping[str, str], show=lambda name: repr(name)) -> str | None:
    """The one dtype in ``dtypes`` (name -> dtype name; None when empty) if it is float32 or
    float64, else a ConversionError naming the odd weights."""
    found = sorted(set(dtypes.values()))
    if not found:
        return None
    if len(found) > 1:
        by_dtype = {d: [show(n) for n, x in dtypes.items() if x == d] for d in found}
        listing = "; ".join(f"{d}: {', '.join(names)}" for d, names in by_dtype.items())
        raise ConversionError(f"{what}: weights in several dtypes ({listing}); convert them to one dtype first")
    if found[0] not in DTYPES:
        raise ConversionError(f"{what}: weights are {found[0]}; canonical weights are {' or '.join(DTYPES)} (cast explicitly)")
    return found[0]


def check_shapes(what: str, expected: Mapping[str, tuple], got: Mapping[str, tuple], show=lambda name: repr(name)) -> None:
    """A :class:`WeightMismatchError` unless ``got`` has exactly ``expected``'s names and shapes."""
    missing = {show(n): s for n, s in expected.items() if n not in got}
    extra = {show(n): s for n, s in got.items() if n not in expected}
    wrong = {show(n): (expected[n], got[n]) for n in expected if n in got and tuple(expected[n]) != tuple(got[n])}
    if missing or extra or wrong:
        raise WeightMismatchError(what, missing, extra, wrong)


def canonical(layer: str, config: Mapping[str, Any] | None, input_shapes: Sequence[Sequence[int]], weights: Mapping[str, Any], dtype: str | None = None, what: str | None = None) -> LayerWeights:
    """Check ``weights`` (canonical names -> arrays in Keras layouts) against the reference and
    wrap them, copied into C-ordered arrays. Every weight must have one dtype (``dtype`` when
    given; float32 for a layer without weights unless given)."""
    full, shapes = layer_args(layer, config, input_shapes)
    what = what or f"{layer} {json.dumps(full, sort_keys=True)} on input shape(s) {', '.join(str(list(s)) for s in shapes)}"
    arrays = {name: np.asarray(value) for name, value in weights.items()}
    check_shapes(what, reference.weight_shapes(layer, *shapes, **full), {n: a.shape for n, a in arrays.items()})
    found = _dtype_of(what, {n: str(a.dtype) for n, a in arrays.items()})
    if dtype is not None:
        _check_dtype_name(dtype)
        if found is not None and found != dtype:
            raise ConversionError(f"{what}: weights are {found}, expected {dtype} (use LayerWeights.astype to convert)")
    dtype = dtype or found or "float32"
    order = list(reference.weight_shapes(layer, *shapes, **full))
    copies = {name: np.array(arrays[name], dtype=dtype, order="C", copy=True) for name in order}
    return LayerWeights(layer, full, shapes, dtype, copies)


def metadata_text(lw: LayerWeights, fmt: str = "canonical") -> str:
    """The ``attnconf`` metadata of a file of format ``fmt`` holding ``lw``: one JSON object with
    sorted keys, so the same weights give the same bytes."""
    return json.dumps(lw.metadata(fmt), sort_keys=True, separators=(",", ":"))


def parse_metadata(what: str, text: Any, fmt: str) -> dict[str, Any]:
    """A file's ``attnconf`` metadata, every field checked: a ConversionError naming the file and
    the field otherwise. A file of another spec version is refused: its weights were named and
    laid out by that version."""

    def malformed(problem: str):
        raise ConversionError(f"{what}: malformed {METADATA_KEY!r} metadata: {problem}")

    try:
        meta = json.loads(text)
    except (TypeError, ValueError) as exc:
        malformed(f"not JSON ({exc})")
    if not isinstance(meta, dict):
        malformed(f"expected a JSON object, got {type(meta).__name__}")
    missing = [key for key in ("config", "dtype", "format", "input_shapes", "layer", "layout", "spec_version") if key not in meta]
    if missing:
        malformed(f"no {', '.join(missing)}")
    if meta["format"] != FILE_FORMATS[fmt]:
        malformed(f"format {meta['format']!r}, expected {FILE_FORMATS[fmt]!r}")
    if meta["layout"] != LAYOUT:
        malformed(f"layout {meta['layout']!r}, expected {LAYOUT!r}")
    if meta["spec_version"] != reference.SPEC_VERSION:
        raise ConversionError(f"{what}: written for spec version {meta['spec_version']!r}; this attnconf implements {reference.SPEC_VERSION!r} (convert it with that version)")
    if not isinstance(meta["layer"], str) or meta["layer"] not in reference.names():
        malformed(f"layer {meta['layer']!r} is not a layer of the spec")
    if not isinstance(meta["config"], dict):
        malformed(f"config {meta['config']!r} is not a JSON object")
    shapes = meta["input_shapes"]
    if not isinstance(shapes, list) or not shapes or not all(isinstance(s, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in s) for s in shapes):
        malformed(f"input_shapes {shapes!r} is not a list of lists of integers")
    if meta["dtype"] not in DTYPES:
        malformed(f"dtype {meta['dtype']!r}, expected one of {', '.join(DTYPES)}")
    return meta


def _check_metadata_agrees(what: str, meta: Mapping[str, Any] | None, lw: LayerWeights) -> LayerWeights:
    """``lw`` read from a PyTorch or Keras file with the layer, config and input shapes given,
    against the file's own metadata when it has some (files written by other tools have none).
    A layer without weights takes its dtype from the metadata."""
    if meta is None:
        return lw
    written = (meta["layer"], _json_value(meta["config"]), meta["input_shapes"])
    given = (lw.layer, _json_value(lw.config), [list(s) for s in lw.input_shapes])
    if written != given:
        shapes = ", ".join(str(s) for s in meta["input_shapes"])
        raise ConversionError(
            f"{what}: the file was written for {meta['layer']} {json.dumps(meta['config'], sort_keys=True)} on input shape(s) {shapes}, "
            f"not {lw.describe()} as given"
        )
    return lw.astype(meta["dtype"]) if not lw.weights and meta["dtype"] != lw.dtype else lw


def canonical_bytes(lw: LayerWeights) -> bytes:
    """The canonical safetensors file's bytes (deterministic)."""
    from safetensors.numpy import save

    # safetensors' NumPy writer stores a non-contiguous array in memory order without saying
    # so: LayerWeights holds C-ordered copies only, made sure of again here.
    tensors = {name: np.ascontiguousarray(array) for name, array in lw.weights.items()}
    return save(tensors, metadata={METADATA_KEY: metadata_text(lw)})


def write_canonical(path, lw: LayerWeights) -> Path:
    path = Path(path)
    path.write_bytes(canonical_bytes(lw))
    return path


def read_canonical(path) -> LayerWeights:
    """A canonical file's weights, checked against the layer its metadata names."""
    from safetensors import safe_open

    path = Path(path)
    what = f"canonical file {path}"
    if not path.is_file():
        raise ConversionError(f"{what}: no such file")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            metadata = handle.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise ConversionError(f"{what}: not a safetensors file ({exc})") from None
    if METADATA_KEY not in metadata:
        raise ConversionError(f"{what}: no {METADATA_KEY!r} metadata; not an attnconf canonical weights file (write one with attnconf convert)")
    meta = parse_metadata(what, metadata[METADATA_KEY], "canonical")
    layer, config, shapes, dtype = meta["layer"], meta["config"], meta["input_shapes"], meta["dtype"]
    try:
        return canonical(layer, config, shapes, tensors, dtype, what=f"{what} ({layer})")
    except (KeyError, TypeError, reference.DomainError) as exc:
        raise ConversionError(f"{what}: its metadata does not describe a valid layer ({exc})") from None


# --------------------------------------------------------------------------------------------
# Keras


def _keras_variables(obj, prefix: str | None = None) -> dict[str, Any]:
    """Canonical name -> Keras variable of an adapter ``KerasLayer``, a Keras layer (names after
    the layer's own name in the variable path) or a Keras model: with ``prefix``, the variables
    whose path starts with it (a block built with ``name=prefix``); without, a model holding
    one layer with weights is that layer, one whose variables all start with the adapter's block
    prefix is that block."""
    import keras

    from impls.tf.adapter import BLOCK_PREFIX, KerasLayer

    if isinstance(obj, KerasLayer) and prefix is None:
        return dict(obj.variables)
    if isinstance(obj, KerasLayer):
        obj = obj.model
    if not isinstance(obj, keras.layers.Layer):
        raise TypeError(f"expected a Keras layer or model (or an impls.tf.adapter.KerasLayer), got {type(obj).__name__}")
    variables = list(obj.weights)
    if prefix is not None:
        return {v.path[len(prefix):]: v for v in variables if v.path.startswith(prefix)}
    if not variables:
        return {}
    if isinstance(obj, keras.Model):
        if all(v.path.startswith(BLOCK_PREFIX) for v in variables):
            return {v.path[len(BLOCK_PREFIX):]: v for v in variables}
        owners = [layer for layer in obj.layers if layer.weights]
        if len(owners) == 1:
            return _keras_variables(owners[0])
        raise ConversionError(
            f"Keras model {obj.name!r} holds {len(owners)} layers with weights; pass prefix= (the start of the layer's variable paths, e.g. the block's name)"
        )
    out = {}
    for v in variables:
        parts = v.path.split("/")
        if obj.name not in parts[:-1]:
            raise ConversionError(f"Keras layer {obj.name!r}: variable path {v.path!r} does not contain the layer's name; pass prefix=")
        out["/".join(parts[parts.index(obj.name) + 1:])] = v
    return out


def _keras_value(variable) -> np.ndarray:
    import keras

    return np.array(keras.ops.convert_to_numpy(variable.value), copy=True)


def canonical_from_keras(keras_obj, layer: str, config: Mapping[str, Any] | None, input_shapes, *, prefix: str | None = None) -> LayerWeights:
    """The canonical weights held by a built Keras layer or model (see ``_keras_variables`` for
    how variables are named), checked against the layer at ``config`` and ``input_shapes``."""
    variables = _keras_variables(keras_obj, prefix)
    arrays = {name: _keras_value(v) for name, v in variables.items()}
    return canonical(layer, config, input_shapes, arrays, what=f"Keras {getattr(keras_obj, 'name', type(keras_obj).__name__)!r} as {layer}")


def _build_keras(lw: LayerWeights):
    from impls.tf.adapter import implementation

    return implementation.build(lw.layer, lw.config, lw.input_shapes, lw.dtype)


def keras_from_canonical(lw: LayerWeights, keras_obj=None, *, prefix: str | None = None):
    """Set the canonical weights on ``keras_obj`` (a built Keras layer or model, or an adapter
    ``KerasLayer``) and return it; without one, on a new Keras model of the layer built by this
    project's Keras implementation in ``lw.dtype``. The variables' names, shapes and dtype must be
    the weights' exactly."""
    if keras_obj is None:
        built = _build_keras(lw)
        variables, result = built.variables, built.model
    else:
        variables, result = _keras_variables(keras_obj, prefix), keras_obj
    what = f"Keras {getattr(result, 'name', type(result).__name__)!r} as {lw.layer}"
    check_shapes(what, {n: a.shape for n, a in lw.weights.items()}, {n: tuple(v.shape) for n, v in variables.items()})
    wrong = [f"{n!r} is {v.dtype}" for n, v in variables.items() if v.dtype != lw.dtype]
    if wrong:
        raise ConversionError(f"{what}: the weights are {lw.dtype} but {', '.join(wrong)}; convert explicitly (LayerWeights.astype or --dtype)")
    for name, variable in variables.items():
        variable.assign(lw.weights[name])
    return result


def _h5_datasets(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    import h5py

    found = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found[name] = (tuple(obj.shape), str(obj.dtype))

    with h5py.File(path, "r") as handle:
        handle.visititems(visit)
    return found


def _h5_names(built) -> dict[str, str]:
    """``.weights.h5`` dataset path -> canonical name for a built ``KerasLayer``: each variable
    is filled with its own number, saved, and recognised in the file. (The variables are
    overwritten; callers load weights afterwards.)"""
    import h5py

    names = list(built.variables)
    for number, name in enumerate(names, start=1):
        variable = built.variables[name]
        variable.assign(np.full(tuple(variable.shape), number, dtype=variable.dtype))
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder) / f"layout{KERAS_SUFFIX}"
        built.model.save_weights(scratch)
        out = {}
        with h5py.File(scratch, "r") as handle:
            for dataset in _h5_datasets(scratch):
                values = handle[dataset][()]
                if np.size(values):
                    out[dataset] = names[int(np.ravel(values)[0]) - 1]
    return out


def _check_keras_path(path: Path) -> None:
    if not path.name.endswith(KERAS_SUFFIX):
        raise ConversionError(f"Keras weights file {path}: the name must end in {KERAS_SUFFIX} (Keras 3 save_weights/load_weights)")


def read_keras_weights(path, layer: str, config: Mapping[str, Any] | None, input_shapes) -> LayerWeights:
    """The canonical weights in a ``.weights.h5`` file saved from the layer as this project's
    Keras implementation builds it at ``config`` and ``input_shapes``, in the file's dtype."""
    path = Path(path)
    _check_keras_path(path)
    full, shapes = layer_args(layer, config, input_shapes)
    what = f"Keras weights file {path} ({layer})"
    if not path.is_file():
        raise ConversionError(f"{what}: no such file")
    try:
        datasets = _h5_datasets(path)
    except OSError as exc:
        raise ConversionError(f"{what}: not an HDF5 file ({exc})") from None
    dtype = _dtype_of(what, {name: dtype for name, (_, dtype) in datasets.items()}) or "float32"
    built = _build_keras(LayerWeights(layer, full, shapes, dtype, {}))
    names = _h5_names(built)
    expected = {dataset: tuple(built.variables[name].shape) for dataset, name in names.items()}
    check_shapes(what, expected, {d: s for d, (s, _) in datasets.items()}, show=lambda d: f"{names[d]!r} ({d})" if d in names else repr(d))
    try:
        built.model.load_weights(path)
    except Exception as exc:  # noqa: BLE001 - Keras' own loading errors, reported as one line
        raise ConversionError(f"{what}: Keras could not load it: {type(exc).__name__}: {exc}") from None
    arrays = {name: _keras_value(v) for name, v in built.variables.items()}
    return _check_metadata_agrees(what, _keras_metadata(path, what), canonical(layer, full, shapes, arrays, dtype, what=what))


def _keras_metadata(path: Path, what: str) -> dict[str, Any] | None:
    import h5py

    with h5py.File(path, "r") as handle:
        text = handle.attrs.get(METADATA_KEY)
    return None if text is None else parse_metadata(what, text, "keras")


def write_keras_weights(path, lw: LayerWeights) -> Path:
    """``model.save_weights(path)`` of this project's Keras layer holding ``lw``."""
    import h5py

    path = Path(path)
    _check_keras_path(path)
    keras_from_canonical(lw).save_weights(path)
    with h5py.File(path, "a") as handle:  # Keras reads only its own groups; the attribute rides along
        handle.attrs[METADATA_KEY] = metadata_text(lw, "keras")
    return path


# --------------------------------------------------------------------------------------------
# PyTorch


def _build_torch(layer: str, config, input_shapes, dtype: str):
    from impls.torch.adapter import implementation

    return implementation.build(layer, config, input_shapes, dtype).module


def _torch_dtype_name(tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def canonical_from_torch(module, layer: str, config: Mapping[str, Any] | None, input_shapes) -> LayerWeights:
    """The canonical weights of a PyTorch module that declares its mapping
    (``impls.torch._mapping.CanonicalWeights``), checked against the layer."""
    if not hasattr(module, "canonical_state_dict"):
        raise TypeError(f"{type(module).__name__} declares no canonical weights (canonical_weights/canonical_state_dict, see impls.torch._mapping)")
    return canonical(layer, config, input_shapes, module.canonical_state_dict(), what=f"PyTorch {type(module).__name__} as {layer}")


def torch_from_canonical(lw: LayerWeights, module=None):
    """Set the canonical weights on ``module`` and return it; without one, on a new module of
    the layer (``impls.torch.MODULES``) built in ``lw.dtype``, in eval mode. The module's
    canonical names, shapes and dtype must be the weights' exactly."""
    if module is None:
        module = _build_torch(lw.layer, lw.config, lw.input_shapes, lw.dtype)
    what = f"PyTorch {type(module).__name__} as {lw.layer}"
    check_shapes(what, {n: a.shape for n, a in lw.weights.items()}, module.canonical_shapes())
    state = module.state_dict()
    mapping = module.canonical_weights()
    wrong = sorted({f"{where.key!r} is {_torch_dtype_name(state[where.key])}" for where in mapping.values() if _torch_dtype_name(state[where.key]) != lw.dtype})
    if wrong:
        raise ConversionError(f"{what}: the weights are {lw.dtype} but {', '.join(wrong)}; convert explicitly (LayerWeights.astype or --dtype)")
    module.load_canonical_state_dict(lw.weights)
    return module


def torch_state_dict_from_canonical(lw: LayerWeights, module=None) -> dict[str, Any]:
    """The full state dict (weights and buffers, contiguous copies, ready for
    ``safetensors.torch.save_file``) of ``torch_from_canonical(lw, module)``."""
    module = torch_from_canonical(lw, module)
    return {key: value.detach().clone().contiguous() for key, value in module.state_dict().items()}


def canonical_from_torch_state_dict(state_dict: Mapping[str, Any], layer: str, config: Mapping[str, Any] | None, input_shapes, what: str | None = None) -> LayerWeights:
    """The canonical weights in a state dict of the layer's PyTorch module. Keys holding
    canonical weights are required, other buffers optional, unknown keys refused; the weights'
    dtype is the state dict's."""
    import torch

    full, shapes = layer_args(layer, config, input_shapes)
    what = what or f"PyTorch state dict ({layer})"
    state_dict = {key: torch.as_tensor(value) for key, value in state_dict.items()}
    dtype = _dtype_of(what, {key: _torch_dtype_name(t) for key, t in state_dict.items() if t.is_floating_point()}) or "float32"
    module = _build_torch(layer, full, shapes, dtype)
    state = module.state_dict()
    holds: dict[str, list[str]] = {}
    for name, where in module.canonical_weights().items():
        holds.setdefault(where.key, []).append(name)

    def show(key: str) -> str:
        return f"{key!r} (canonical {', '.join(repr(n) for n in holds[key])})" if key in holds else repr(key)

    expected = {key: tuple(t.shape) for key, t in state.items()}
    given = {key: tuple(t.shape) for key, t in state_dict.items()}
    # buffers that are no weight may be left out: the fresh module's values stand
    check_shapes(what, {k: s for k, s in expected.items() if k in holds or k in given}, given, show)
    not_float = [show(k) for k in holds if not state_dict[k].is_floating_point()]
    if not_float:
        raise ConversionError(f"{what}: {', '.join(not_float)} must be floating point")
    module.load_state_dict({**state, **state_dict}, strict=True)
    return canonical(layer, full, shapes, module.canonical_state_dict(), dtype, what=what)


def write_torch_state_dict(path, lw: LayerWeights) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    save_file(torch_state_dict_from_canonical(lw), str(path), metadata={METADATA_KEY: metadata_text(lw, "torch")})
    return path


def read_torch_state_dict(path, layer: str, config: Mapping[str, Any] | None, input_shapes) -> LayerWeights:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    what = f"PyTorch state dict file {path} ({layer})"
    if not path.is_file():
        raise ConversionError(f"{what}: no such file")
    try:
        state_dict = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise ConversionError(f"{what}: not a safetensors file ({exc})") from None
    meta = parse_metadata(what, metadata[METADATA_KEY], "torch") if METADATA_KEY in metadata else None
    return _check_metadata_agrees(what, meta, canonical_from_torch_state_dict(state_dict, layer, config, input_shapes, what=what))


# --------------------------------------------------------------------------------------------
# Files, any format to any format


def read(fmt: str, path, layer: str | None = None, config: Mapping[str, Any] | None = None, input_shapes=None) -> LayerWeights:
    """A file of format ``fmt``. A canonical file names its own layer; if ``layer``, ``config``
    or ``input_shapes`` are given they must agree with it. The others need all three (``config``
    may be omitted for all defaults)."""
    if fmt not in FORMATS:
        raise ConversionError(f"format {fmt!r} must be one of {', '.join(FORMATS)}")
    if fmt == "canonical":
        lw = read_canonical(path)
        _check_agrees(lw, path, layer, config, input_shapes)
        return lw
    if layer is None or input_shapes is None:
        raise ConversionError(f"reading {fmt} weights needs the layer and its input shapes (only a canonical file names them)")
    return {"keras": read_keras_weights, "torch": read_torch_state_dict}[fmt](path, layer, config, input_shapes)


def _check_agrees(lw: LayerWeights, path, layer, config, input_shapes) -> None:
    said = []
    if layer is not None and layer != lw.layer:
        said.append(f"layer {layer}")
    elif config is not None:
        try:
            given = layer_args(lw.layer, config, lw.input_shapes)[0]
        except (KeyError, reference.DomainError) as exc:
            raise ConversionError(f"canonical file {path} holds {lw.describe()}; the config given does not fit it: {exc}") from None
        if given != lw.config:
            said.append(f"config {json.dumps(given, sort_keys=True)}")
    if input_shapes is not None and tuple(tuple(int(d) for d in s) for s in input_shapes) != lw.input_shapes:
        said.append(f"input shape(s) {', '.join(str(list(s)) for s in input_shapes)}")
    if said:
        raise ConversionError(f"canonical file {path} holds {lw.describe()}, not the {' and '.join(said)} given")


def write(fmt: str, path, lw: LayerWeights) -> Path:
    if fmt not in FORMATS:
        raise ConversionError(f"format {fmt!r} must be one of {', '.join(FORMATS)}")
    from safetensors import SafetensorError

    try:
        return {"keras": write_keras_weights, "torch": write_torch_state_dict, "canonical": write_canonical}[fmt](path, lw)
    except (OSError, SafetensorError) as exc:
        raise ConversionError(f"cannot write {fmt} file {path}: {exc}") from None


def convert(source_format: str, source, target_format: str, target, layer: str | None = None, config: Mapping[str, Any] | None = None, input_shapes=None, dtype: str | None = None) -> LayerWeights:
    """Read ``source`` (see :func:`read`), cast to ``dtype`` if given, write ``target``; returns
    the weights moved."""
    lw = read(source_format, source, layer, config, input_shapes)
    if dtype is not None and dtype != lw.dtype:
        lw = lw.astype(dtype)
    write(target_format, target, lw)
    return lw


# --------------------------------------------------------------------------------------------
# Command line: ``attnconf convert`` (registered in conformance.cli)

USAGE = """
  attnconf convert --layer NAME [--config JSON] --input-shape B,H,W,C [--input-shape ...] --from FORMAT SRC --to FORMAT DST [--dtype DTYPE]
  attnconf convert --layer NAME --example NAME --from FORMAT SRC --to FORMAT DST [--dtype DTYPE]
  attnconf convert --from canonical SRC.safetensors --to FORMAT DST [--dtype DTYPE]"""

EPILOG = """\
FORMAT is keras (a Keras 3 .weights.h5 of the layer as impls.tf builds it at that config and
input shapes), torch (a safetensors state dict of the impls.torch module) or canonical
(safetensors: canonical names, Keras layouts, metadata naming the layer, config, input shapes,
dtype and spec version). The keras and torch files written here carry the same metadata, and a
file that has it must match the --layer, --config and --input-shape given. An existing DST is
refused unless --force. Round trips are bitwise; the dtype is kept unless --dtype says otherwise. Exit status:
0 written, 1 the weights do not fit (the message names each weight, the shape expected and
found), 2 a usage error."""


def add_arguments(parser) -> None:
    """The ``convert`` subcommand's arguments."""
    parser.add_argument("--from", dest="source", nargs=2, required=True, metavar=("FORMAT", "SRC"), help="keras SRC.weights.h5, torch SRC.safetensors (a state dict) or canonical SRC.safetensors")
    parser.add_argument("--to", dest="target", nargs=2, required=True, metavar=("FORMAT", "DST"), help="keras, torch or canonical, and the file to write")
    parser.add_argument("--layer", metavar="NAME", help="the layer (not needed --from canonical: the file names it)")
    parser.add_argument("--example", metavar="NAME", help="take the config and input shapes from the layer's documented example NAME (reference.spec(layer).examples)")
    parser.add_argument("--config", metavar="JSON", help="the layer's config as a JSON object, e.g. '{\"num_heads\": 4, \"key_dim\": 128}' (default: all defaults)")
    parser.add_argument("--input-shape", dest="input_shapes", action="append", metavar="B,H,W,C", help="a channels-last input shape, once per input, e.g. 1,14,16,256")
    parser.add_argument("--dtype", choices=DTYPES, help="write in this dtype (default: the source's); the only way a dtype changes")
    parser.add_argument("--force", action="store_true", help="replace DST if it exists (it is refused otherwise)")


def parse_shape(text: str) -> tuple[int, ...]:
    cleaned = text.strip().strip("[]()").replace("x", ",").replace(" ", ",")
    parts = [p for p in cleaned.split(",") if p]
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"--input-shape {text!r}: expected comma-separated sizes such as 1,14,16,256")
    return tuple(int(p) for p in parts)


def command(args, usage) -> int:
    """Run ``attnconf convert``: 0 when written, 2 (through ``usage``) for wrong arguments, 1
    for a conversion that cannot be done (the message names what is wrong)."""
    import sys

    (source_format, source), (target_format, target) = args.source, args.target
    for flag, fmt, path in (("--from", source_format, source), ("--to", target_format, target)):
        if fmt not in FORMATS:
            return usage(f"convert {flag}: format {fmt!r} must be one of {', '.join(FORMATS)}")
        if fmt == "keras" and not path.endswith(KERAS_SUFFIX):
            return usage(f"convert {flag} keras {path}: a Keras weights file's name ends in {KERAS_SUFFIX}")
    source_path, target_path = Path(source).expanduser().resolve(), Path(target).expanduser().resolve()
    if source_path == target_path:
        return usage(f"convert: --to {target} is the source file itself")
    if target_path.is_dir():
        return usage(f"convert --to {target}: is a folder; name the file to write")
    if not target_path.parent.is_dir():
        return usage(f"convert --to {target}: the folder {target_path.parent} does not exist")
    if target_path.exists() and not args.force:
        return usage(f"convert --to {target}: the file exists; --force replaces it")
    if args.layer is None and (source_format != "canonical" or args.example is not None):
        return usage(f"convert {'--example' if args.example is not None else f'--from {source_format}'} needs --layer (only a canonical file names its layer)")
    if args.layer is not None and args.layer not in reference.names():
        return usage(f"convert: unknown layer {args.layer!r}; the layers are: {', '.join(reference.names())}")
    config = shapes = None
    if args.example is not None:
        if args.config is not None or args.input_shapes:
            return usage("convert --example sets the config and input shapes; leave out --config and --input-shape")
        examples = {e.name: e for e in reference.spec(args.layer).examples}
        if args.example not in examples:
            return usage(f"convert --example {args.example!r}: {args.layer}'s documented examples are {', '.join(examples)}")
        config, shapes = dict(examples[args.example].config), examples[args.example].input_shapes
    else:
        try:
            config = json.loads(args.config) if args.config is not None else None
            shapes = [parse_shape(s) for s in args.input_shapes] if args.input_shapes else None
        except ValueError as exc:
            return usage(f"convert --config: not JSON ({exc})" if isinstance(exc, json.JSONDecodeError) else f"convert {exc}")
        if config is not None and not isinstance(config, dict):
            return usage(f"convert --config must be a JSON object, got {args.config!r}")
    if source_format != "canonical" and shapes is None:
        return usage(f"convert --from {source_format} needs --input-shape (once per input) or --example")
    if args.layer is not None and shapes is not None:
        try:
            layer_args(args.layer, config, shapes)
        except reference.DomainError as exc:
            return usage(f"convert: {exc}")
    try:
        lw = convert(source_format, source, target_format, target, args.layer, config, shapes, args.dtype)
    except ConversionError as exc:
        print(f"attnconf convert: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {target} ({target_format}): {lw.describe()}, {len(lw.weights)} weight(s), {lw.dtype}")
    return 0
