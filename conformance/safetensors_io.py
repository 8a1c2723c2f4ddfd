"""Read and write tensors in the safetensors file format, using only NumPy.

The layout, in our own words
----------------------------
A safetensors file has three parts, back to back:

1. Eight bytes holding an unsigned 64-bit little-endian integer ``N``.
2. ``N`` bytes of UTF-8 text containing one JSON object (the *header*).  The
   text may end in space characters; they are padding and carry no meaning.
3. The *data buffer*: every remaining byte of the file.

Each key of the header object is a tensor name, and its value describes where
that tensor lives::

    {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}

``begin`` and ``end`` count bytes from the first byte of the data buffer (not
from the start of the file), ``end`` being exclusive.  The bytes are the
tensor's elements in C (row-major) order, little-endian, without any strides
or padding, so ``end - begin`` must equal the element size times the product
of the shape (an empty shape ``[]`` means a scalar with one element).  The
tensors together cover the whole data buffer exactly once: no byte belongs to
two tensors and no byte belongs to none.

One key is reserved: ``"__metadata__"`` may map to an object whose keys and
values are all strings.  It holds free-form annotations, not a tensor.

Why we carry our own implementation
-----------------------------------
* The format is simple enough to be read from any language with a JSON parser
  and a way to reinterpret bytes, which is the whole point of using it for
  conformance fixtures; a short, dependency-free reader keeps that promise
  visible and checkable.
* Unlike pickle-based formats, loading a file never runs code: we only parse
  JSON and copy bytes.
* The writer is byte-for-byte deterministic, so fixtures can be compared and
  hashed: tensors are stored in sorted-name order, the header is serialized
  with sorted keys and compact separators, the header is padded with spaces to
  a multiple of 8 bytes, and nothing time- or machine-dependent is recorded.

The reader is strict: anything that does not match the layout above raises
:class:`SafetensorsError`, a subclass of :class:`ValueError`, whose message
names the offending tensor or key and the rule it breaks.

Public API::

    dumps(tensors, metadata=None) -> bytes
    save(path, tensors, metadata=None) -> None
    loads(data) -> (tensors, metadata)
    load(path) -> (tensors, metadata)
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Any, Mapping

import numpy as np

__all__ = [
    "SafetensorsError",
    "DTYPES",
    "dumps",
    "save",
    "loads",
    "load",
]

METADATA_KEY = "__metadata__"
_HEADER_ALIGNMENT = 8
_LENGTH_PREFIX = struct.Struct("<Q")
_ENTRY_KEYS = frozenset(("dtype", "shape", "data_offsets"))

#: Format dtype tag -> little-endian NumPy dtype used for the stored bytes.
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
}

# (NumPy kind, item size) -> format dtype tag; byte order is handled separately.
_TAG_BY_KIND_SIZE: dict[tuple[str, int], str] = {
    (dt.kind, dt.itemsize): tag for tag, dt in DTYPES.items()
}


class SafetensorsError(ValueError):
    """Raised for input that cannot be written or read as safetensors."""


def _supported_list() -> str:
    return ", ".join(sorted(DTYPES))


def _tag_for(name: str, dtype: np.dtype) -> str:
    tag = _TAG_BY_KIND_SIZE.get((dtype.kind, dtype.itemsize))
    if tag is None or dtype.fields is not None or dtype.subdtype is not None:
        raise SafetensorsError(
            f"tensor {name!r}: NumPy dtype {dtype} is not supported "
            f"(supported safetensors dtypes: {_supported_list()})"
        )
    return tag


def _check_name(name: Any) -> None:
    if not isinstance(name, str):
        raise SafetensorsError(
            f"tensor name {name!r} must be a str, got {type(name).__name__}"
        )
    if name.startswith("__"):
        raise SafetensorsError(
            f"tensor name {name!r} must not start with '__' "
            "(that prefix is reserved for special header keys such as "
            f"{METADATA_KEY!r})"
        )


def _check_metadata(metadata: Any, where: str) -> dict[str, str]:
    if not isinstance(metadata, Mapping):
        raise SafetensorsError(
            f"{where}: {METADATA_KEY} must be a mapping of str to str, "
            f"got {type(metadata).__name__}"
        )
    checked: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise SafetensorsError(
                f"{where}: {METADATA_KEY} key {key!r} must be a str, "
                f"got {type(key).__name__}"
            )
        if not isinstance(value, str):
            raise SafetensorsError(
                f"{where}: {METADATA_KEY} value for key {key!r} must be a str, "
                f"got {type(value).__name__} ({value!r})"
            )
        checked[key] = value
    return checked


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def dumps(
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """Serialize ``tensors`` (and optional string ``metadata``) to bytes.

    The result depends only on the names, dtypes, shapes and values of the
    tensors and on the metadata contents, never on mapping order.  An empty
    or absent ``metadata`` writes no ``__metadata__`` key.
    """
    if not isinstance(tensors, Mapping):
        raise SafetensorsError(
            f"tensors must be a mapping of name to array, got {type(tensors).__name__}"
        )
    for name in tensors:
        _check_name(name)
    meta = _check_metadata(metadata, "dumps") if metadata is not None else {}

    header: dict[str, Any] = {}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        value = tensors[name]
        if not isinstance(value, (np.ndarray, np.generic)):
            raise SafetensorsError(
                f"tensor {name!r}: expected a numpy.ndarray, got {type(value).__name__}"
            )
        array = np.asarray(value)
        tag = _tag_for(name, array.dtype)
        stored = np.ascontiguousarray(array, dtype=DTYPES[tag])
        raw = stored.tobytes(order="C")
        header[name] = {
            "dtype": tag,
            "shape": [int(n) for n in array.shape],
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    if meta:
        header[METADATA_KEY] = meta

    text = json.dumps(
        header, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    text += b" " * (-len(text) % _HEADER_ALIGNMENT)
    return b"".join([_LENGTH_PREFIX.pack(len(text)), text, *chunks])


def save(
    path: str | os.PathLike[str],
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``dumps(tensors, metadata)`` to the file at ``path``."""
    data = dumps(tensors, metadata)
    with open(path, "wb") as handle:
        handle.write(data)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise SafetensorsError(
                f"header: key {key!r} appears more than once in a JSON object"
            )
        result[key] = value
    return result


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_header(data: bytes) -> tuple[dict[str, Any], memoryview]:
    view = memoryview(data)
    if len(view) < _LENGTH_PREFIX.size:
        raise SafetensorsError(
            f"truncated file: {len(view)} bytes, but the 8-byte header length "
            "prefix alone needs 8"
        )
    (n,) = _LENGTH_PREFIX.unpack_from(view, 0)
    start = _LENGTH_PREFIX.size
    if n > len(view) - start:
        raise SafetensorsError(
            f"truncated file: header length prefix says {n} bytes, but only "
            f"{len(view) - start} bytes follow the prefix"
        )
    raw_header = bytes(view[start : start + n])
    try:
        text = raw_header.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SafetensorsError(f"header is not valid UTF-8: {exc}") from None
    try:
        header = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except SafetensorsError:
        raise
    except ValueError as exc:
        raise SafetensorsError(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(
            f"header must be a JSON object, got JSON {type(header).__name__}"
        )
    return header, view[start + n :]


def _parse_entry(name: str, entry: Any, buffer_len: int) -> tuple[str, list[int], int, int]:
    if not isinstance(entry, dict):
        raise SafetensorsError(
            f"tensor {name!r}: header entry must be a JSON object, "
            f"got {type(entry).__name__}"
        )
    missing = _ENTRY_KEYS - entry.keys()
    if missing:
        raise SafetensorsError(
            f"tensor {name!r}: header entry is missing key(s) {sorted(missing)}"
        )
    extra = entry.keys() - _ENTRY_KEYS
    if extra:
        raise SafetensorsError(
            f"tensor {name!r}: header entry has unknown key(s) {sorted(extra)}; "
            f"allowed keys are {sorted(_ENTRY_KEYS)}"
        )

    tag = entry["dtype"]
    if not isinstance(tag, str) or tag not in DTYPES:
        raise SafetensorsError(
            f"tensor {name!r}: dtype {tag!r} is not supported "
            f"(supported: {_supported_list()})"
        )

    shape = entry["shape"]
    if not isinstance(shape, list) or not all(
        _is_int(n) and n >= 0 for n in shape
    ):
        raise SafetensorsError(
            f"tensor {name!r}: shape {shape!r} must be a list of non-negative integers"
        )

    offsets = entry["data_offsets"]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) and o >= 0 for o in offsets)
    ):
        raise SafetensorsError(
            f"tensor {name!r}: data_offsets {offsets!r} must be a list of two "
            "non-negative integers [begin, end]"
        )
    begin, end = offsets
    if begin > end:
        raise SafetensorsError(
            f"tensor {name!r}: data_offsets [{begin}, {end}] has begin after end"
        )
    if end > buffer_len:
        raise SafetensorsError(
            f"tensor {name!r}: data_offsets [{begin}, {end}] run past the end of "
            f"the file (data buffer is {buffer_len} bytes; file truncated?)"
        )
    itemsize = DTYPES[tag].itemsize
    expected = itemsize * math.prod(shape)
    if end - begin != expected:
        raise SafetensorsError(
            f"tensor {name!r}: data_offsets [{begin}, {end}] span {end - begin} "
            f"bytes, but dtype {tag} ({itemsize} bytes) x shape {shape} needs "
            f"{expected} bytes"
        )
    return tag, shape, begin, end


def _check_layout(spans: list[tuple[int, int, str]], buffer_len: int) -> None:
    position = 0
    previous = None
    for begin, end, name in sorted(spans):
        if begin < position:
            raise SafetensorsError(
                f"tensor {name!r}: data_offsets [{begin}, {end}] overlap tensor "
                f"{previous!r}, which ends at byte {position}"
            )
        if begin > position:
            after = f"after tensor {previous!r}" if previous is not None else "at the start"
            raise SafetensorsError(
                f"tensor {name!r}: data_offsets [{begin}, {end}] leave a gap of "
                f"{begin - position} unused bytes {after} (bytes {position}..{begin}); "
                "tensors must tile the data buffer with no gaps"
            )
        if end > begin or previous is None:
            previous = name
        position = end
    if position != buffer_len:
        raise SafetensorsError(
            f"data buffer has {buffer_len - position} trailing bytes after the "
            f"last tensor (bytes {position}..{buffer_len}) that no tensor "
            "covers; tensors must tile the data buffer with no gaps"
        )


def loads(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse safetensors bytes into ``(tensors, metadata)``.

    Every returned array is a fresh, writable, C-contiguous copy in the
    machine's native byte order.  ``metadata`` is ``{}`` when the file has no
    ``__metadata__`` key.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SafetensorsError(
            f"loads expects bytes, got {type(data).__name__}"
        )
    header, buffer = _parse_header(data)

    metadata: dict[str, str] = {}
    if METADATA_KEY in header:
        metadata = _check_metadata(header[METADATA_KEY], "header")

    entries: dict[str, tuple[str, list[int], int, int]] = {}
    for name, entry in header.items():
        if name == METADATA_KEY:
            continue
        _check_name(name)
        entries[name] = _parse_entry(name, entry, len(buffer))

    _check_layout([(b, e, name) for name, (_, _, b, e) in entries.items()], len(buffer))

    tensors: dict[str, np.ndarray] = {}
    for name, (tag, shape, begin, end) in entries.items():
        stored = DTYPES[tag]
        count = (end - begin) // stored.itemsize
        flat = np.frombuffer(buffer, dtype=stored, count=count, offset=begin)
        if tag == "BOOL":
            raw = np.frombuffer(buffer, dtype=np.uint8, count=count, offset=begin)
            if np.any(raw > 1):
                bad = int(raw[np.argmax(raw > 1)])
                raise SafetensorsError(
                    f"tensor {name!r}: BOOL data must contain only bytes 0 and 1, "
                    f"found {bad}"
                )
        native = stored.newbyteorder("=")
        tensors[name] = flat.astype(native, copy=True).reshape(shape)
    return tensors, metadata


def load(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read the file at ``path`` and parse it with :func:`loads`."""
    with open(path, "rb") as handle:
        return loads(handle.read())
