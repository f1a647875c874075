"""Element types: one enum with conversions to ONNX, numpy and torch."""

from __future__ import annotations

import enum
from typing import Any

import numpy as np


class DType(enum.Enum):
    """Tensor element types tensorkiln knows. Values are ONNX TensorProto codes."""

    FLOAT32 = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    FLOAT64 = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23

    @property
    def short(self) -> str:
        return _SHORT[self]

    @staticmethod
    def from_onnx(code: int) -> DType:
        try:
            return DType(code)
        except ValueError:
            from tensorkiln.errors import ModelError, UnsupportedOpError

            if 0 < code < 64:  # a type newer ONNX versions define (int2, float8e8m0, …)
                raise UnsupportedOpError(f"ONNX element type code {code} is not supported") from None
            raise ModelError(f"unknown ONNX element type code {code}") from None

    @staticmethod
    def from_name(name: str) -> DType:
        key = name.lower()
        for dt, short in _SHORT.items():
            if short == key or dt.name.lower() == key:
                return dt
        from tensorkiln.errors import OptionError

        raise OptionError(f"unknown dtype {name!r}; expected one of {sorted(_SHORT.values())}")

    @staticmethod
    def from_numpy(dt: Any) -> DType:
        npdt = np.dtype(dt)
        for k, v in _NUMPY.items():
            if np.dtype(v) == npdt:
                return k
        from tensorkiln.errors import UserError

        raise UserError(f"numpy dtype {npdt} has no tensorkiln equivalent")

    def to_numpy(self) -> np.dtype[Any]:
        if self not in _NUMPY:
            from tensorkiln.errors import UnsupportedOpError

            raise UnsupportedOpError(f"element type {self.name} is not supported on this backend")
        return np.dtype(_NUMPY[self])

    def to_torch(self) -> Any:
        import torch

        table = {
            DType.FLOAT32: torch.float32,
            DType.FLOAT16: torch.float16,
            DType.BFLOAT16: torch.bfloat16,
            DType.FLOAT64: torch.float64,
            DType.INT8: torch.int8,
            DType.UINT8: torch.uint8,
            DType.INT16: torch.int16,
            DType.INT32: torch.int32,
            DType.INT64: torch.int64,
            DType.UINT16: torch.uint16,
            DType.UINT32: torch.uint32,
            DType.UINT64: torch.uint64,
            DType.BOOL: torch.bool,
            DType.COMPLEX64: torch.complex64,
            DType.COMPLEX128: torch.complex128,
        }
        if self not in table:
            from tensorkiln.errors import UnsupportedOpError

            raise UnsupportedOpError(f"element type {self.name} is not supported on the CPU backend")
        return table[self]

    @staticmethod
    def from_torch(tdt: Any) -> DType:
        for dt in DType:
            try:
                if dt.to_torch() == tdt:
                    return dt
            except Exception:
                continue
        from tensorkiln.errors import UserError

        raise UserError(f"torch dtype {tdt} has no tensorkiln equivalent")

    @property
    def is_float(self) -> bool:
        return self in (DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64)

    @property
    def is_int(self) -> bool:
        return self in (
            DType.INT8, DType.UINT8, DType.INT16, DType.UINT16,
            DType.INT32, DType.UINT32, DType.INT64, DType.UINT64,
        )


_SHORT = {
    DType.FLOAT32: "float32",
    DType.UINT8: "uint8",
    DType.INT8: "int8",
    DType.UINT16: "uint16",
    DType.INT16: "int16",
    DType.INT32: "int32",
    DType.INT64: "int64",
    DType.STRING: "string",
    DType.BOOL: "bool",
    DType.FLOAT16: "float16",
    DType.FLOAT64: "float64",
    DType.UINT32: "uint32",
    DType.UINT64: "uint64",
    DType.COMPLEX64: "complex64",
    DType.COMPLEX128: "complex128",
    DType.BFLOAT16: "bfloat16",
    DType.FLOAT8E4M3FN: "float8e4m3fn",
    DType.FLOAT8E4M3FNUZ: "float8e4m3fnuz",
    DType.FLOAT8E5M2: "float8e5m2",
    DType.FLOAT8E5M2FNUZ: "float8e5m2fnuz",
    DType.UINT4: "uint4",
    DType.INT4: "int4",
    DType.FLOAT4E2M1: "float4e2m1",
}

_NUMPY: dict[DType, Any] = {
    DType.FLOAT32: np.float32,
    DType.UINT8: np.uint8,
    DType.INT8: np.int8,
    DType.UINT16: np.uint16,
    DType.INT16: np.int16,
    DType.INT32: np.int32,
    DType.INT64: np.int64,
    DType.BOOL: np.bool_,
    DType.FLOAT16: np.float16,
    DType.FLOAT64: np.float64,
    DType.UINT32: np.uint32,
    DType.UINT64: np.uint64,
    DType.COMPLEX64: np.complex64,
    DType.COMPLEX128: np.complex128,
}
