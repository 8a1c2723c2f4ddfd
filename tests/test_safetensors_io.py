"""Tests for conformance.safetensors_io (our NumPy-only safetensors codec)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from conformance import safetensors_io as st

REQUIRED_TAGS = ["F16", "F32", "F64", "I32", "I64", "U8", "BOOL"]


def _sample(tag: str, shape: tuple[int, ...]) -> np.ndarray:
    dtype = st.DTYPES[tag]
    count = int(np.prod(shape, dtype=np.int64))
    if tag == "BOOL":
        flat = (np.arange(count) % 3 == 0)
    elif dtype.kind == "f":
        flat = (np.arange(count) - count / 2) * 0.25
    elif dtype.kind == "u":
        flat = np.arange(count) % 251
    else:
        flat = np.arange(count) * 7 - 50
    return flat.astype(dtype.newbyteorder("=")).reshape(shape)


def _build(header: dict, data: bytes, *, raw_header: bytes | None = None) -> bytes:
    """Assemble a file by hand from the documented layout."""
    text = raw_header if raw_header is not None else json.dumps(header).encode("utf-8")
    return struct.pack("<Q", len(text)) + text + data


def _header_of(blob: bytes) -> tuple[int, dict]:
    (n,) = struct.unpack("<Q", blob[:8])
    return n, json.loads(blob[8 : 8 + n].decode("utf-8"))


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("tag", sorted(st.DTYPES))
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (5,), (2, 3), (2, 1, 4)])
def test_round_trip_every_dtype_and_shape(tag, shape):
    original = _sample(tag, shape)
    blob = st.dumps({"t": original})
    tensors, metadata = st.loads(blob)
    assert metadata == {}
    out = tensors["t"]
    assert out.shape == shape
    assert out.dtype == original.dtype
    np.testing.assert_array_equal(out, original)
    _, header = _header_of(blob)
    assert header["t"]["dtype"] == tag
    assert header["t"]["shape"] == list(shape)


def test_required_dtypes_are_supported():
    assert set(REQUIRED_TAGS) <= set(st.DTYPES)


def test_round_trip_many_tensors_and_metadata(tmp_path):
    tensors = {tag.lower(): _sample(tag, (2, 3)) for tag in REQUIRED_TAGS}
    tensors["scalar"] = np.array(3.5, dtype=np.float64)
    tensors["empty"] = np.zeros((0, 4), dtype=np.float32)
    metadata = {"format": "pt", "note": "héllo ✓", "": ""}
    path = tmp_path / "x.safetensors"
    st.save(path, tensors, metadata)
    loaded, loaded_meta = st.load(path)
    assert loaded_meta == metadata
    assert sorted(loaded) == sorted(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded[name], array)
    assert path.read_bytes() == st.dumps(tensors, metadata)


def test_float_special_values_preserved_bitwise():
    values = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-8], dtype=np.float32)
    out = st.loads(st.dumps({"v": values}))[0]["v"]
    assert out.tobytes() == values.tobytes()


def test_big_endian_and_non_contiguous_inputs():
    big = np.arange(6, dtype=">i4").reshape(2, 3)
    strided = np.arange(20, dtype=np.float64).reshape(4, 5)[::2, ::-2]
    fortran = np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3))
    tensors, _ = st.loads(st.dumps({"big": big, "strided": strided, "f": fortran}))
    np.testing.assert_array_equal(tensors["big"], big)
    np.testing.assert_array_equal(tensors["strided"], strided)
    np.testing.assert_array_equal(tensors["f"], fortran)
    blob = st.dumps({"big": big})
    assert blob[-24:] == np.arange(6, dtype="<i4").tobytes()


def test_loaded_arrays_are_writable_native_copies():
    blob = bytearray(st.dumps({"a": np.arange(4, dtype=np.int32), "h": np.ones(2, np.float16)}))
    tensors, _ = st.loads(blob)
    for array in tensors.values():
        assert array.flags.writeable
        assert array.flags.c_contiguous
        assert array.dtype.isnative
        assert array.dtype.byteorder in ("=", "|")
    tensors["a"][0] = 99
    # Mutating the result must not touch the source buffer, and vice versa.
    again, _ = st.loads(bytes(blob))
    assert again["a"][0] == 0
    blob[-1] ^= 0xFF
    assert tensors["h"][1] == 1


def test_empty_mapping_round_trips():
    blob = st.dumps({})
    assert st.loads(blob) == ({}, {})
    n, header = _header_of(blob)
    assert header == {}
    assert len(blob) == 8 + n


# ---------------------------------------------------------------------------
# Determinism and layout of what we write
# ---------------------------------------------------------------------------


def test_output_independent_of_dict_order():
    a = np.arange(3, dtype=np.float32)
    b = np.ones((2, 2), dtype=np.uint8)
    c = np.array(True)
    first = st.dumps({"a": a, "b": b, "c": c}, {"x": "1", "y": "2"})
    second = st.dumps({"c": c, "a": a, "b": b}, {"y": "2", "x": "1"})
    assert first == second
    assert first == st.dumps({"b": b, "c": c, "a": a}, {"x": "1", "y": "2"})


def test_empty_metadata_same_as_none():
    tensors = {"a": np.zeros(2, dtype=np.int64)}
    assert st.dumps(tensors, {}) == st.dumps(tensors)
    assert "__metadata__" not in _header_of(st.dumps(tensors))[1]


@pytest.mark.parametrize("names", [[], ["a"], ["a", "bb"], ["x" * k for k in range(1, 12)]])
def test_header_length_is_multiple_of_8(names):
    for extra in range(9):
        tensors = {name: np.zeros(extra, np.uint8) for name in names}
        blob = st.dumps(tensors, {"k": "v" * extra})
        n, _ = _header_of(blob)
        assert n % 8 == 0
        text = blob[8 : 8 + n]
        padding = len(text) - len(text.rstrip(b" "))
        assert padding < 8
        assert text.rstrip(b" ").endswith(b"}")


def test_header_is_sorted_compact_json_and_data_in_name_order():
    tensors = {"zeta": np.array([1, 2], np.int32), "alpha": np.array([3.0], np.float64)}
    blob = st.dumps(tensors, {"m": "v"})
    n, header = _header_of(blob)
    text = blob[8 : 8 + n].decode("utf-8").rstrip(" ")
    assert text == json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert header["alpha"]["data_offsets"] == [0, 8]
    assert header["zeta"]["data_offsets"] == [8, 16]
    assert blob[8 + n :] == struct.pack("<d", 3.0) + struct.pack("<ii", 1, 2)


def test_exact_bytes_for_a_small_example():
    blob = st.dumps({"w": np.array([1.0, -2.0], dtype=np.float32)}, {"a": "b"})
    header = b'{"__metadata__":{"a":"b"},"w":{"data_offsets":[0,8],"dtype":"F32","shape":[2]}}'
    padded = header + b" " * (-len(header) % 8)
    expected = struct.pack("<Q", len(padded)) + padded + struct.pack("<2f", 1.0, -2.0)
    assert blob == expected


# ---------------------------------------------------------------------------
# Reading files built by hand from the format description
# ---------------------------------------------------------------------------


def test_reads_hand_built_file():
    f16 = struct.pack("<3H", 0x3C00, 0x4000, 0xC000)  # 1.0, 2.0, -2.0 as IEEE half
    i64 = struct.pack("<2q", -1, 2**40)
    u8 = bytes([0, 7, 255, 9])
    bools = bytes([1, 0, 1])
    f64 = struct.pack("<d", 0.125)
    data = f16 + i64 + u8 + bools + f64
    o = [0, len(f16)]
    o.append(o[-1] + len(i64))
    o.append(o[-1] + len(u8))
    o.append(o[-1] + len(bools))
    o.append(o[-1] + len(f64))
    header = {
        # Deliberately unsorted, non-compact, with odd key order inside entries.
        "scalar": {"shape": [], "data_offsets": [o[4], o[5]], "dtype": "F64"},
        "half": {"dtype": "F16", "shape": [3], "data_offsets": [o[0], o[1]]},
        "__metadata__": {"source": "hand built"},
        "ints": {"dtype": "I64", "shape": [2, 1], "data_offsets": [o[1], o[2]]},
        "bytes": {"dtype": "U8", "shape": [2, 2], "data_offsets": [o[2], o[3]]},
        "flags": {"dtype": "BOOL", "shape": [3], "data_offsets": [o[3], o[4]]},
        "nothing": {"dtype": "I32", "shape": [0, 5], "data_offsets": [o[5], o[5]]},
    }
    text = json.dumps(header, indent=2).encode("utf-8") + b"   \n"  # N not a multiple of 8 is fine
    tensors, metadata = st.loads(_build({}, data, raw_header=text))
    assert metadata == {"source": "hand built"}
    np.testing.assert_array_equal(tensors["half"], np.array([1.0, 2.0, -2.0], np.float16))
    assert tensors["half"].dtype == np.float16
    np.testing.assert_array_equal(tensors["ints"], np.array([[-1], [2**40]], np.int64))
    np.testing.assert_array_equal(tensors["bytes"], np.array([[0, 7], [255, 9]], np.uint8))
    np.testing.assert_array_equal(tensors["flags"], np.array([True, False, True]))
    assert tensors["flags"].dtype == np.bool_
    assert tensors["scalar"].shape == () and tensors["scalar"] == 0.125
    assert tensors["nothing"].shape == (0, 5) and tensors["nothing"].dtype == np.int32


def test_reads_hand_built_f32_i32_with_offsets_out_of_name_order():
    # "a" is stored after "b" in the buffer; the format does not require name order.
    b_bytes = struct.pack("<2i", -3, 4)
    a_bytes = struct.pack("<f", 1.5)
    header = {
        "a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
        "b": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]},
    }
    tensors, metadata = st.loads(_build(header, b_bytes + a_bytes))
    assert metadata == {}
    assert tensors["a"].tolist() == [1.5]
    assert tensors["b"].tolist() == [-3, 4]


# ---------------------------------------------------------------------------
# Rejections when writing
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.zeros(2, dtype=np.complex64),
        np.array(["a", "b"]),
        np.array([object()], dtype=object),
        np.zeros(2, dtype=np.longdouble) if np.dtype(np.longdouble).itemsize > 8 else np.zeros(2, dtype="V3"),
        np.zeros(2, dtype=[("x", "<i4")]),
        np.zeros(2, dtype="datetime64[s]"),
    ],
    ids=["complex", "str", "object", "longdouble-or-void", "structured", "datetime"],
)
def test_dumps_rejects_unsupported_dtype(array):
    with pytest.raises(ValueError, match=r"tensor 'bad'.*not supported"):
        st.dumps({"bad": array})


@pytest.mark.parametrize("value", [1, None, b"bytes", 2.0, ["x"]])
def test_dumps_rejects_non_string_metadata_value(value):
    with pytest.raises(ValueError, match=r"__metadata__ value for key 'k' must be a str"):
        st.dumps({}, {"k": value})


def test_dumps_rejects_non_string_metadata_key():
    with pytest.raises(ValueError, match=r"__metadata__ key 1 must be a str"):
        st.dumps({}, {1: "v"})


@pytest.mark.parametrize("name", ["__metadata__", "__x", "__"])
def test_dumps_rejects_reserved_names(name):
    with pytest.raises(ValueError, match=r"must not start with '__'"):
        st.dumps({name: np.zeros(1, np.float32)})


def test_dumps_rejects_non_string_name_and_non_array_value():
    with pytest.raises(ValueError, match=r"tensor name 3 must be a str"):
        st.dumps({3: np.zeros(1)})
    with pytest.raises(ValueError, match=r"tensor 'x': expected a numpy.ndarray"):
        st.dumps({"x": [1, 2, 3]})


def test_error_type_is_value_error_subclass():
    assert issubclass(st.SafetensorsError, ValueError)


# ---------------------------------------------------------------------------
# Rejections when reading
# ---------------------------------------------------------------------------


def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize("length", range(8))
def test_truncated_length_prefix(length):
    blob = st.dumps({"a": np.zeros(2, np.float32)})[:length]
    with pytest.raises(ValueError, match=r"truncated file.*8-byte header length"):
        st.loads(blob)


def test_truncated_header():
    blob = st.dumps({"a": np.zeros(2, np.float32)})
    n, _ = _header_of(blob)
    with pytest.raises(ValueError, match=rf"truncated file: header length prefix says {n} bytes"):
        st.loads(blob[: 8 + n - 1])


def test_truncated_data_runs_past_end():
    blob = st.dumps({"a": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match=r"tensor 'a'.*run past the end of the file"):
        st.loads(blob[:-1])


def test_offsets_past_end_of_file():
    blob = _build({"a": _entry(offsets=(8, 16))}, bytes(8))
    with pytest.raises(ValueError, match=r"tensor 'a'.*\[8, 16\].*run past the end"):
        st.loads(blob)


@pytest.mark.parametrize(
    "raw",
    [b"{not json}", b'{"a": ', b"", b'{"a":1}}', b"\xff\xfe{}"],
    ids=["garbage", "unterminated", "empty", "trailing-brace", "bad-utf8"],
)
def test_invalid_header_json(raw):
    with pytest.raises(ValueError, match=r"header is not valid (JSON|UTF-8)"):
        st.loads(_build({}, b"", raw_header=raw))


@pytest.mark.parametrize("header", [[], "x", 3, None])
def test_header_not_an_object(header):
    with pytest.raises(ValueError, match=r"header must be a JSON object"):
        st.loads(_build({}, b"", raw_header=json.dumps(header).encode()))


def test_duplicate_keys_rejected():
    raw = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    with pytest.raises(ValueError, match=r"key 'a' appears more than once"):
        st.loads(_build({}, b"\x00", raw_header=raw))


@pytest.mark.parametrize("tag", ["F8", "f32", "complex", "BF17", 5, None])
def test_unsupported_dtype_in_header(tag):
    blob = _build({"w": _entry(dtype=tag)}, bytes(8))
    with pytest.raises(ValueError, match=r"tensor 'w': dtype .* is not supported"):
        st.loads(blob)


def test_offsets_overlap():
    header = {"a": _entry(offsets=(0, 8)), "b": _entry(offsets=(4, 12))}
    with pytest.raises(ValueError, match=r"tensor 'b'.*overlap tensor 'a'"):
        st.loads(_build(header, bytes(12)))


def test_identical_offsets_overlap():
    header = {"a": _entry(offsets=(0, 8)), "b": _entry(offsets=(0, 8))}
    with pytest.raises(ValueError, match=r"overlap"):
        st.loads(_build(header, bytes(8)))


def test_gap_between_tensors():
    header = {"a": _entry(offsets=(0, 8)), "b": _entry(offsets=(12, 20))}
    with pytest.raises(ValueError, match=r"tensor 'b'.*gap of 4 unused bytes after tensor 'a'"):
        st.loads(_build(header, bytes(20)))


def test_gap_at_start():
    header = {"a": _entry(offsets=(4, 12))}
    with pytest.raises(ValueError, match=r"tensor 'a'.*gap of 4 unused bytes at the start"):
        st.loads(_build(header, bytes(12)))


def test_trailing_unused_bytes():
    header = {"a": _entry(offsets=(0, 8))}
    with pytest.raises(ValueError, match=r"3 trailing bytes after the last tensor"):
        st.loads(_build(header, bytes(11)))


@pytest.mark.parametrize(
    "dtype,shape,offsets",
    [("F32", (3,), (0, 8)), ("F64", (2,), (0, 8)), ("U8", (), (0, 8)), ("I32", (0,), (0, 8))],
)
def test_size_mismatch(dtype, shape, offsets):
    blob = _build({"w": _entry(dtype, shape, offsets)}, bytes(8))
    with pytest.raises(ValueError, match=rf"tensor 'w'.*span 8 bytes, but dtype {dtype}.*needs"):
        st.loads(blob)


@pytest.mark.parametrize(
    "entry,pattern",
    [
        ({"dtype": "U8", "shape": [1]}, r"missing key\(s\) \['data_offsets'\]"),
        ({**_entry("U8", (1,), (0, 1)), "extra": 1}, r"unknown key\(s\) \['extra'\]"),
        ({**_entry("U8", (1,), (0, 1)), "shape": [-1]}, r"shape \[-1\] must be a list of non-negative"),
        ({**_entry("U8", (1,), (0, 1)), "shape": [1.0]}, r"shape .* must be a list of non-negative"),
        ({**_entry("U8", (1,), (0, 1)), "shape": 1}, r"shape 1 must be a list"),
        ({**_entry("U8", (1,), (0, 1)), "data_offsets": [0]}, r"data_offsets \[0\] must be a list of two"),
        ({**_entry("U8", (1,), (0, 1)), "data_offsets": [0, True]}, r"must be a list of two"),
        ({**_entry("U8", (0,), (1, 0))}, r"begin after end"),
        ([1, 2], r"header entry must be a JSON object"),
    ],
    ids=["missing", "extra", "negative-dim", "float-dim", "shape-not-list", "one-offset",
         "bool-offset", "begin-after-end", "entry-not-object"],
)
def test_malformed_entry(entry, pattern):
    blob = _build({"w": entry}, b"\x00")
    with pytest.raises(ValueError, match=r"tensor 'w'.*" + pattern):
        st.loads(blob)


@pytest.mark.parametrize("name", ["__foo", "__"])
def test_reserved_tensor_name_in_header(name):
    blob = _build({name: _entry("U8", (1,), (0, 1))}, b"\x00")
    with pytest.raises(ValueError, match=r"must not start with '__'"):
        st.loads(blob)


@pytest.mark.parametrize(
    "meta,pattern",
    [
        ({"k": 1}, r"__metadata__ value for key 'k' must be a str"),
        ({"k": None}, r"__metadata__ value for key 'k' must be a str"),
        ({"k": ["v"]}, r"__metadata__ value for key 'k' must be a str"),
        (["k", "v"], r"__metadata__ must be a mapping"),
        ("text", r"__metadata__ must be a mapping"),
    ],
)
def test_bad_metadata_in_header(meta, pattern):
    blob = _build({"__metadata__": meta}, b"")
    with pytest.raises(ValueError, match=pattern):
        st.loads(blob)


def test_bool_bytes_must_be_zero_or_one():
    blob = _build({"b": _entry("BOOL", (2,), (0, 2))}, bytes([1, 2]))
    with pytest.raises(ValueError, match=r"tensor 'b': BOOL data must contain only bytes 0 and 1, found 2"):
        st.loads(blob)


def test_loads_rejects_non_bytes():
    with pytest.raises(ValueError, match=r"loads expects bytes"):
        st.loads("not bytes")


def test_native_byte_order_reported():
    out = st.loads(st.dumps({"x": np.arange(3, dtype=np.int64)}))[0]["x"]
    assert out.dtype == np.dtype(np.int64)
    assert out.dtype.isnative
