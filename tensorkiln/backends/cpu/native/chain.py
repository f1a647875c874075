"""The chain executor's binding (chain.c): many native kernel calls in one foreign call.

A kernel that can run without Python for given inputs describes the call it would make as a
``NativeCall``: its ctypes function and the argument values, where a per-run buffer (an input,
the output, a residual) is given as the ``torch.Tensor`` itself. ``pack`` turns a list of such
calls into the int64 argument template of ``tk_chain_run`` and the positions of the tensor
arguments, which the chain relocates on every run.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from tensorkiln.backends.cpu import native
from tensorkiln.errors import InternalError

_p, _i = ctypes.c_void_p, ctypes.c_int
_SIGNATURES: native.Signatures = {"tk_chain_run": [_p, _p, _p, _i, _i, _p, _p, _p, _p, _p]}
_INTS = (ctypes.c_int, ctypes.c_long, ctypes.c_int64, ctypes.c_int32, ctypes.c_longlong)


class NativeCall(NamedTuple):
    """What a kernel returns from its ``plan``: the output tensor it allocated (or the residual it
    writes in place), the ctypes function and that function's arguments (and the work buffers it
    allocated for the call). ``fn`` None: no call, the output is a view of an input (Flatten), or
    a tuple of views for a step with several outputs (a channel split)."""

    out: Any  # torch.Tensor, or a tuple of them (views)
    fn: Any
    args: list[Any]
    scratch: tuple[torch.Tensor, ...] = ()  # per-call work buffers among the arguments


def library() -> Any:
    lib = native.load("chain", _SIGNATURES)
    if lib is not None:
        lib.tk_chain_run.argtypes = [ctypes.c_int, *_SIGNATURES["tk_chain_run"]]
        lib.tk_chain_run.restype = ctypes.c_int
    return lib


def run(call: NativeCall) -> torch.Tensor:
    """Make the call now, from Python (the first, traced run of a chain)."""
    if call.fn is None:
        return call.out
    call.fn(*[a.data_ptr() if isinstance(a, torch.Tensor) else a for a in call.args])
    return call.out


def packed_address(fn: Any) -> int:
    """The address of ``fn``'s packed entry (``<name>_packed`` in the same library)."""
    name = getattr(fn, "__name__", "")
    for lib in native.loaded():
        if getattr(lib, name, None) is fn:
            return int(ctypes.cast(getattr(lib, name + "_packed"), ctypes.c_void_p).value or 0)
    raise InternalError(f"no packed entry for native function {name!r}")


def pack(fn: Any, args: list[Any],
         where: Callable[[torch.Tensor], tuple[int, int]]) -> tuple[list[int], list[tuple[int, int, int]]]:
    """``fn``'s arguments as int64 values, and per tensor argument (its index in that list, the
    buffer ``where`` places it in, the byte offset there)."""
    types = fn.argtypes
    if len(types) != len(args):
        raise InternalError(f"{fn.__name__} takes {len(types)} arguments, the plan gave {len(args)}")
    vals: list[int] = []
    rel: list[tuple[int, int, int]] = []
    for j, (t, a) in enumerate(zip(types, args)):
        if isinstance(a, torch.Tensor):
            b, off = where(a)
            rel.append((j, b, off))
            vals.append(0)
        elif a is None:
            vals.append(0)
        elif t is ctypes.c_float:
            vals.append(struct.unpack("<I", struct.pack("<f", float(a)))[0])
        elif t is ctypes.c_void_p or t in _INTS:
            vals.append(int(a))
        else:
            raise InternalError(f"{fn.__name__}: argument {j} has a type the chain cannot pass ({t})")
    return vals, rel
