"""Runs of native steps executed in one foreign call: the chain executor.

Consecutive steps whose kernels can describe the native call they would make (a ``plan``
attribute returning a ``NativeCall``, or None when Python work is needed for those inputs) form a
``Chain``. Per signature of the chain's inputs (shapes, strides, dtypes, shared storage) the first
run is traced: each kernel plans its call on the real tensors and the call is made from Python,
while the chain records which buffer every tensor argument lies in. The trace becomes a plan:
one int64 argument template, the relocations of the per-run buffers, a scratch arena for the
intermediates (first fit over their lifetimes, so memory is reused as the Python path reuses
freed tensors), and the geometry of the outputs that outlive the chain. Every later run of that
signature allocates those outputs and one arena and makes one call (``chain.c``): no Python and
no allocator between the kernels (≈ 30–40 µs per step otherwise, most of it cache misses of the
interpreter after a kernel has swept the caches).

Where a kernel cannot plan (its input needs a copy first, an unusual dtype, …) that step runs
from Python for that signature, between the chains of the steps before and after it (each planned
on its own). ``TENSORKILN_CHAIN=0`` turns chains off.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from tensorkiln.backends.cpu.native import chain as native_chain
from tensorkiln.errors import InternalError, TensorkilnError

if TYPE_CHECKING:
    from tensorkiln.backends.cpu.program import Step

ALIGN = 64  # bytes; as PyTorch's CPU allocator
MAX_SIGNATURES = 8  # plans kept per chain; further input signatures run step by step


def enabled() -> bool:
    return os.environ.get("TENSORKILN_CHAIN", "1") != "0" and native_chain.library() is not None


def can_chain(step: Step) -> bool:
    return callable(getattr(step.kernel, "plan", None))


def group(steps: list[Step], constants: frozenset[int]) -> list[Step | Chain]:
    """``steps`` with every run of two or more chainable steps replaced by a Chain."""
    out: list[Step | Chain] = []
    run: list[Step] = []
    for st in [*steps, None]:
        if st is not None and can_chain(st):
            run.append(st)
            continue
        if len(run) >= 2:
            out.append(Chain(run, constants))
        else:
            out.extend(run)
        run = []
        if st is not None:
            out.append(st)
    return out


@dataclass
class _Buf:
    ext: int  # the chain input it belongs to, or -1 for an output a step allocated
    base: int  # its address in the trace: that input's data pointer, or the storage's
    nbytes: int
    first: int  # the call that made it
    last: int  # the last call that used it
    make: tuple[Any, ...] = ()  # (shape, strides, dtype) of the tensor that made it


@dataclass
class _Plan:
    n: int
    keep: list[Any]  # the ctypes arrays below point into these
    fns: int
    argoff: int
    tmpl: int
    nargs: int
    nrel: int
    pos: int
    base: int
    off: int
    calls: list[int]  # per step, the index of its call (-1: a view, no call)
    escapes: list[tuple[Any, ...]]  # (shape, strides, dtype) of each output made fresh per run
    arena: int  # bytes of scratch
    outs: list[tuple[int, bool, int, tuple[Any, ...] | None]]  # slot, from an input?, index, view


class Chain:
    """A run of chainable steps; ``run(env)`` executes them on the slot list of one run."""

    def __init__(self, steps: list[Step], constants: frozenset[int]) -> None:
        self.steps = steps
        self.constants = constants
        made: set[int] = set()
        ins: list[int] = []
        for st in steps:
            for s in st.ins:
                if s and s not in made and s not in constants and s not in ins:
                    ins.append(s)
            made.update(st.outs)
        self.in_slots = ins
        self.frees = tuple(sorted({f for st in steps for f in st.frees}))
        self.out_slots = [s for st in steps for s in st.outs if s not in self.frees]
        self._plans: dict[Any, _Plan | _Split | None] = {}

    def __repr__(self) -> str:
        return f"Chain({len(self.steps)} steps: {self.steps[0].node.name} … {self.steps[-1].node.name})"

    def run(self, env: list[torch.Tensor | None], prof: list[float] | None = None) -> None:
        """Execute the steps on ``env``; with ``prof``, append each step's time (seconds, in step
        order; inside a replay the native call's own time)."""
        ext = [env[s] for s in self.in_slots]
        key = _signature(ext)
        plan = self._plans.get(key, _MISSING) if key is not None else None
        if plan is _MISSING:
            if len(self._plans) < MAX_SIGNATURES:
                self._plans[key] = self._trace(env, ext, prof)  # runs the steps (two threads may both trace)
                return
            plan = None
        if plan is None:
            self._stepwise(env, self.steps, prof)
        elif type(plan) is _Plan:
            self._replay(plan, env, ext, prof)
        else:  # a step that cannot plan here runs from Python between two shorter chains
            before, st, after = plan  # type: ignore[misc]
            if before is not None:
                before.run(env, prof)
            self._stepwise(env, [st], prof)
            if after is not None:
                after.run(env, prof)

    @staticmethod
    def _stepwise(env: list[torch.Tensor | None], steps: list[Step], prof: list[float] | None = None) -> None:
        for st in steps:
            with _named(st):
                t0 = time.perf_counter()
                _store(env, st, st.kernel(*[env[i] for i in st.ins]))
                if prof is not None:
                    prof.append(time.perf_counter() - t0)
            for f in st.frees:
                env[f] = None

    def _replay(self, plan: _Plan, env: list[torch.Tensor | None], ext: list[Any],
                prof: list[float] | None = None) -> None:
        bases = [t.data_ptr() for t in ext]
        esc = [torch.empty_strided(shape, strides, dtype=dt) for shape, strides, dt in plan.escapes]
        bases += [t.data_ptr() for t in esc]
        arena = None
        if plan.arena:
            arena = torch.empty(plan.arena + ALIGN, dtype=torch.uint8)
            a = arena.data_ptr()
            bases.append(a + (-a) % ALIGN)
        b = (ctypes.c_int64 * len(bases))(*bases)
        times = None if prof is None else (ctypes.c_int64 * plan.n)()
        rc = native_chain.library().tk_chain_run(plan.n, plan.fns, plan.argoff, plan.tmpl, plan.nargs, plan.nrel,
                                                  plan.pos, plan.base, plan.off, ctypes.addressof(b),
                                                  None if times is None else ctypes.addressof(times))
        if rc != 0:
            raise MemoryError("the chain executor could not allocate its argument list")
        del arena  # the intermediates in it are dead
        if times is not None and prof is not None:
            prof += [times[i] * 1e-9 if i >= 0 else 0.0 for i in plan.calls]
        for slot, from_in, i, view in plan.outs:
            t = ext[i] if from_in else esc[i]
            env[slot] = t if view is None else torch.as_strided(t, *view)
        for f in self.frees:
            env[f] = None

    def _trace(self, env: list[torch.Tensor | None], ext: list[Any],
               prof: list[float] | None = None) -> _Plan | _Split | None:
        """Run the steps once from Python, recording their native calls; the plan, or where a step
        could not plan its call, that step between the chains of the steps before and after it."""
        local: dict[int, Any] = dict(zip(self.in_slots, ext))
        alive: list[torch.Tensor] = []  # nothing traced is freed before the plan is made: a freed
        # storage's address could come back for a later, larger output
        bufs: list[_Buf] = []
        by_storage: dict[int, int] = {}
        for i, t in enumerate(ext):
            sp = t.untyped_storage().data_ptr()
            if sp not in by_storage:
                by_storage[sp] = len(bufs)
                bufs.append(_Buf(i, t.data_ptr(), 0, -1, -1))
        calls: list[native_chain.NativeCall] = []
        ok, split = True, 0
        for j, st in enumerate(self.steps):
            args = [local[s] if s in local else env[s] for s in st.ins]
            call = None
            if ok:
                try:
                    call = st.kernel.plan(*args)
                except Exception:
                    call = None  # the step's own call below reports the problem
            if call is not None and not self._record(call, j, bufs, by_storage):
                call = None
            if call is None and ok:
                split = j
            with _named(st):
                t0 = time.perf_counter()
                if call is None:
                    ok = False
                    r = st.kernel(*args)
                else:
                    r = native_chain.run(call)
                    calls.append(call)
                if prof is not None:
                    prof.append(time.perf_counter() - t0)
            _store(local, st, r)
            alive += [t for t in (r if isinstance(r, tuple) else (r,)) if isinstance(t, torch.Tensor)]
        outs = {s: local[s] for s in self.out_slots}
        for s in self.out_slots:
            env[s] = outs[s]
        for f in self.frees:
            env[f] = None
        if not ok:
            parts = (self.steps[:split], self.steps[split + 1:])
            sub = [Chain(part, self.constants) if part else None for part in parts]
            return sub[0], self.steps[split], sub[1]
        return self._compile(calls, bufs, by_storage, outs, ext)

    @staticmethod
    def _record(call: native_chain.NativeCall, j: int, bufs: list[_Buf], by_storage: dict[int, int]) -> bool:
        outs = call.out if isinstance(call.out, tuple) else (call.out,)
        made = {t.untyped_storage().data_ptr(): t for t in (*outs, *call.scratch)}  # new per-run buffers
        for a in call.args:
            if not isinstance(a, torch.Tensor):
                continue
            sp = a.untyped_storage().data_ptr()
            b = by_storage.get(sp)
            if b is None:
                o = made.get(sp)
                if o is None:
                    return False  # a tensor made inside the kernel's planning: not a per-run buffer
                by_storage[sp] = len(bufs)
                bufs.append(_Buf(-1, sp, a.untyped_storage().nbytes(), j, j, (tuple(o.shape), o.stride(), o.dtype)))
            else:
                bufs[b].last = j
        return True

    def _compile(self, calls: list[native_chain.NativeCall], bufs: list[_Buf], by_storage: dict[int, int],
                 outs: dict[int, torch.Tensor], ext: list[Any]) -> _Plan | None:
        n_ext = len(ext)
        esc_of: dict[int, int] = {}
        out_spec: list[tuple[int, bool, int, tuple[Any, ...] | None]] = []
        for slot, t in outs.items():
            if not isinstance(t, torch.Tensor):
                return None
            b = by_storage.get(t.untyped_storage().data_ptr())
            if b is None:
                return None
            buf = bufs[b]
            if buf.ext >= 0:
                src = ext[buf.ext]
                if t.dtype != src.dtype:
                    return None
                same = t.shape == src.shape and t.stride() == src.stride() and t.data_ptr() == src.data_ptr()
                out_spec.append((slot, True, buf.ext, None if same else (tuple(t.shape), t.stride(),
                                                                          t.storage_offset())))
            else:
                if t.dtype != buf.make[2]:
                    return None
                i = esc_of.setdefault(b, len(esc_of))
                same = (tuple(t.shape), t.stride()) == buf.make[:2] and t.storage_offset() == 0
                out_spec.append((slot, False, i, None if same else (tuple(t.shape), t.stride(), t.storage_offset())))
        arena_off, arena = _first_fit([(b, bufs[b]) for b in range(len(bufs)) if bufs[b].ext < 0 and b not in esc_of])
        arena_base = n_ext + len(esc_of)

        def where(a: torch.Tensor) -> tuple[int, int]:
            b = by_storage[a.untyped_storage().data_ptr()]
            buf = bufs[b]
            if buf.ext >= 0:
                return buf.ext, a.data_ptr() - buf.base
            if b in esc_of:
                return n_ext + esc_of[b], a.data_ptr() - buf.base
            return arena_base, arena_off[b] + a.data_ptr() - buf.base

        tmpl: list[int] = []
        argoff: list[int] = []
        fns: list[int] = []
        rel: list[tuple[int, int, int]] = []
        index: list[int] = []  # per step, its call (-1: a view)
        for c in calls:
            index.append(-1 if c.fn is None else len(index) - index.count(-1))
        for call in calls:
            if call.fn is None:  # a view
                continue
            vals, r = native_chain.pack(call.fn, call.args, where)
            argoff.append(len(tmpl))
            rel += [(len(tmpl) + j, b, off) for j, b, off in r]
            tmpl += vals
            fns.append(native_chain.packed_address(call.fn))
        escapes = [bufs[b].make for b in sorted(esc_of, key=esc_of.__getitem__)]
        arrays = [(ctypes.c_int64 * max(1, len(fns)))(*fns), (ctypes.c_int32 * max(1, len(argoff)))(*argoff),
                  (ctypes.c_int64 * max(1, len(tmpl)))(*tmpl),
                  (ctypes.c_int32 * max(1, len(rel)))(*[p for p, _, _ in rel]),
                  (ctypes.c_int32 * max(1, len(rel)))(*[b for _, b, _ in rel]),
                  (ctypes.c_int64 * max(1, len(rel)))(*[o for _, _, o in rel])]
        if any(b > arena_base or (b == arena_base and not arena) for _, b, _ in rel):
            raise InternalError("chain plan: a relocation refers to no buffer")
        a = [ctypes.addressof(x) for x in arrays]
        return _Plan(len(fns), arrays, a[0], a[1], a[2], len(tmpl), len(rel), a[3], a[4], a[5], index, escapes,
                     arena, out_spec)


_MISSING: Any = object()


def _store(env: Any, st: Step, r: Any) -> None:
    """A step's result into its output slots (a tuple for a step with several outputs)."""
    if len(st.outs) == 1:
        env[st.outs[0]] = r
    else:
        for s, t in zip(st.outs, r):
            env[s] = t


@contextlib.contextmanager
def _named(step: Step) -> Iterator[None]:
    """A kernel's failure as a KernelError naming the step's ONNX nodes."""
    try:
        yield
    except TensorkilnError:
        raise
    except Exception as e:
        from tensorkiln.backends.cpu.program import kernel_error

        raise kernel_error(step, e) from e
_Split = tuple["Chain | None", "Step", "Chain | None"]


def _signature(ext: list[Any]) -> tuple[Any, ...] | None:
    """What a plan depends on in the chain's inputs; None when one is not a tensor."""
    key: list[Any] = []
    for t in ext:
        if not isinstance(t, torch.Tensor):
            return None
        key.append((t.shape, t.stride(), t.dtype))
    if len(ext) > 1:  # which inputs share storage, and where they lie in it relative to each other
        first: dict[int, tuple[int, int]] = {}
        for i, t in enumerate(ext):
            i0, p0 = first.setdefault(t.untyped_storage().data_ptr(), (i, t.data_ptr()))
            key.append((i0, t.data_ptr() - p0))
    return tuple(key)


def _first_fit(items: list[tuple[int, _Buf]]) -> tuple[dict[int, int], int]:
    """Arena offsets for buffers by lifetime (first call, last call): two buffers share bytes only
    when their lifetimes do not overlap. Returns the offsets and the arena size."""
    placed: list[tuple[int, int, int, int]] = []  # offset, end, first, last
    offs: dict[int, int] = {}
    for b, buf in sorted(items, key=lambda it: (it[1].first, -it[1].nbytes)):
        size = (buf.nbytes + ALIGN - 1) // ALIGN * ALIGN
        live = sorted((o, e) for o, e, f, la in placed if not (la < buf.first or buf.last < f))
        off = 0
        for o, e in live:
            if off + size <= o:
                break
            off = max(off, e)
        offs[b] = off
        placed.append((off, off + size, buf.first, buf.last))
    return offs, max((e for _, e, _, _ in placed), default=0)
