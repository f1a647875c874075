"""Datatypes of the KServe v2 protocol: names, numpy types, config names, BYTES encoding.

All binary tensor data is little-endian, row-major and unpadded. A BYTES tensor's elements
are each a 4-byte little-endian length followed by that many bytes.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from tensorkiln.serve.status import InvalidArgument

try:  # ml_dtypes ships with onnx; BF16 tensors need it
    import ml_dtypes

    _BF16: Any = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    _BF16 = None

# protocol name -> numpy dtype (BYTES: object arrays of bytes)
NUMPY: dict[str, Any] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BF16": _BF16,
    "BYTES": np.dtype(object),
}
BINARY_ONLY = frozenset({"FP16", "BF16"})

# tensorkiln dtype short names (TensorSpec.dtype) -> protocol names
FROM_ENGINE = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64", "bfloat16": "BF16", "string": "BYTES",
}


def to_config(datatype: str) -> str:
    """Protocol name -> model_config DataType enum name (BYTES is TYPE_STRING)."""
    return "TYPE_STRING" if datatype == "BYTES" else "TYPE_" + datatype


def from_config(name: str) -> str:
    """model_config DataType enum name -> protocol name."""
    if name == "TYPE_STRING":
        return "BYTES"
    dt = name.removeprefix("TYPE_")
    if dt not in NUMPY:
        raise InvalidArgument(f"unsupported data_type {name!r}")
    return dt


def of_array(a: np.ndarray) -> str:
    if a.dtype == object or a.dtype.kind in "SU":
        return "BYTES"
    if _BF16 is not None and a.dtype == _BF16:
        return "BF16"
    for name, dt in NUMPY.items():
        if dt is not None and name != "BYTES" and a.dtype == dt.newbyteorder("="):
            return name
    raise InvalidArgument(f"numpy dtype {a.dtype} has no protocol datatype")


def element_size(datatype: str) -> int:
    dt = NUMPY[datatype]
    return 0 if datatype == "BYTES" else int(dt.itemsize)


def check_datatype(datatype: Any, where: str) -> str:
    if not isinstance(datatype, str) or datatype not in NUMPY or NUMPY[datatype] is None:
        raise InvalidArgument(f"{where}: unknown datatype {datatype!r}; expected one of {sorted(NUMPY)}")
    return datatype


def check_shape(shape: Any, where: str) -> tuple[int, ...]:
    if not isinstance(shape, (list, tuple)) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidArgument(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    return tuple(int(d) for d in shape)


def numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def from_bytes(buf: bytes | memoryview, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """Raw little-endian bytes -> array of ``shape`` (checks the byte size)."""
    n = numel(shape)
    if datatype == "BYTES":
        return deserialize_bytes(buf, n, where).reshape(shape)
    size = n * element_size(datatype)
    if len(buf) != size:
        raise InvalidArgument(f"{where}: unexpected byte size {len(buf)} for {datatype} {list(shape)}, "
                              f"expected {size}")
    arr = np.frombuffer(buf, dtype=NUMPY[datatype]).reshape(shape)
    return arr.copy() if datatype == "BF16" else arr  # torch refuses read-only bfloat16 views


def to_bytes(a: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return serialize_bytes(a)
    dt = NUMPY[datatype]
    return np.ascontiguousarray(a, dtype=dt).tobytes()


def serialize_bytes(a: np.ndarray) -> bytes:
    parts = []
    for item in a.reshape(-1):
        b = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def deserialize_bytes(buf: bytes | memoryview, count: int, where: str) -> np.ndarray:
    mv = memoryview(buf)
    if count * 4 > len(mv):  # every element has a 4-byte length: refuse before allocating
        raise InvalidArgument(f"{where}: {len(mv)} bytes cannot hold {count} BYTES elements")
    out = np.empty(count, dtype=object)
    off = 0
    for i in range(count):
        if off + 4 > len(mv):
            raise InvalidArgument(f"{where}: BYTES data ends after {i} of {count} elements")
        (n,) = struct.unpack_from("<I", mv, off)
        off += 4
        if off + n > len(mv):
            raise InvalidArgument(f"{where}: BYTES element {i} claims {n} bytes, only {len(mv) - off} left")
        out[i] = bytes(mv[off:off + n])
        off += n
    if off != len(mv):
        raise InvalidArgument(f"{where}: {len(mv) - off} unexpected bytes after {count} BYTES elements")
    return out


def from_json(data: Any, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """The JSON ``data`` of a tensor (flat or nested, row-major) -> array of ``shape``."""
    if datatype in BINARY_ONLY:
        raise InvalidArgument(f"{where}: {datatype} tensors must use the binary data extension, not JSON")
    n = numel(shape)
    flat = _flatten(data, where)
    if len(flat) != n:
        raise InvalidArgument(f"{where}: unexpected element count {len(flat)} for shape {list(shape)}, expected {n}")
    if datatype == "BYTES":
        out = np.empty(n, dtype=object)
        for i, v in enumerate(flat):
            if isinstance(v, str):
                out[i] = v.encode("utf-8")
            else:
                raise InvalidArgument(f"{where}: BYTES elements in JSON must be strings, got {type(v).__name__}")
        return out.reshape(shape)
    kind = NUMPY[datatype].kind
    for v in flat:
        ok = isinstance(v, bool) if kind == "b" else (
            isinstance(v, (int, float)) and not isinstance(v, bool) and (kind == "f" or isinstance(v, int)))
        if not ok:
            raise InvalidArgument(f"{where}: element {v!r} is not a valid {datatype} value")
    try:
        return np.array(flat, dtype=NUMPY[datatype]).reshape(shape)
    except (OverflowError, ValueError) as e:
        raise InvalidArgument(f"{where}: {e}") from None


def to_json(a: np.ndarray, datatype: str) -> list[Any]:
    if datatype in BINARY_ONLY:
        raise InvalidArgument(f"{datatype} outputs can only be returned as binary data")
    flat = a.reshape(-1)
    if datatype == "BYTES":
        return [x.decode("utf-8", errors="replace") if isinstance(x, bytes) else str(x) for x in flat]
    return flat.tolist()


def _flatten(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise InvalidArgument(f"{where}: 'data' must be a JSON array")
    if not any(isinstance(x, list) for x in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    depth_limit = 64
    while stack:
        for x in stack[-1]:
            if isinstance(x, list):
                if len(stack) >= depth_limit:
                    raise InvalidArgument(f"{where}: 'data' is nested too deeply")
                stack.append(iter(x))
                break
            out.append(x)
        else:
            stack.pop()
    return out
