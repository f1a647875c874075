"""Lifetimes of intermediate tensors and their placement in one arena.

The CPU kernels are ATen calls that return fresh tensors, so the runtime releases every
intermediate right after its last reader (the program's ``frees``). This module measures
what that costs and what an arena would need: one trace run records each step's output
storage size; tensors that are views of another share its storage and its lifetime.

* ``naive_bytes``: every intermediate kept alive for the whole run (no planning);
* ``peak_bytes``: the largest set of live storages under release-at-last-use;
* ``arena_bytes``: a single arena holding every storage at a fixed offset, two storages
  sharing bytes only when their lifetimes do not overlap (greedy by size, best fit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from tensorkiln.backends.cpu.program import Program


@dataclass
class Block:
    key: int  # storage id in the trace
    size: int
    first: int  # step that creates it
    last: int  # last step that reads it (len(steps) when it is a graph output)
    offset: int = -1


@dataclass
class MemoryPlan:
    naive_bytes: int
    peak_bytes: int
    arena_bytes: int
    blocks: list[Block] = field(default_factory=list)

    def overlaps(self) -> list[tuple[Block, Block]]:
        """Pairs of blocks that are live together and share bytes (must be empty)."""
        bad = []
        bs = self.blocks
        for i in range(len(bs)):
            for j in range(i + 1, len(bs)):
                a, b = bs[i], bs[j]
                live = a.first <= b.last and b.first <= a.last
                mem = a.offset < b.offset + b.size and b.offset < a.offset + a.size
                if live and mem and a.size and b.size:
                    bad.append((a, b))
        return bad


def _storage(t: object) -> tuple[int, int] | None:
    if not isinstance(t, torch.Tensor) or t.numel() == 0:
        return None
    st = t.untyped_storage()
    return st.data_ptr(), st.nbytes()


def trace_blocks(program: Program, inputs: Sequence[torch.Tensor]) -> tuple[list[Block], int]:
    """Run ``program`` once, recording the lifetime and size of every intermediate storage.

    Storages are tracked while some slot refers to them; once the last reference is freed the
    block is closed, so a later tensor that the allocator places at the same address is a
    new block.
    """
    env = program.template.copy()
    for s, t in zip(program.input_slots + program.capture_slots, inputs):
        env[s] = t
    external_ptrs = {p[0] for t in env if (p := _storage(t)) is not None}
    live: dict[int, Block] = {}  # ptr → open block
    refs: dict[int, int] = {}  # ptr → number of slots referring to it
    slot_ptr: dict[int, int] = {}
    blocks: list[Block] = []
    naive = 0
    for i, step in enumerate(program.steps):
        args = [env[k] for k in step.ins]
        for a in args:
            st = _storage(a)
            if st is not None and st[0] in live:
                live[st[0]].last = i
        r = step.kernel(*args)
        outs = [r] if len(step.outs) == 1 else list(r)
        for s, t in zip(step.outs, outs):
            env[s] = t
            st = _storage(t)
            if st is None:
                continue
            naive += t.numel() * t.element_size()
            ptr, size = st
            if ptr in external_ptrs:
                continue  # a view of an input or a weight: no new memory
            if ptr not in live:
                live[ptr] = Block(ptr, size, i, i)
                blocks.append(live[ptr])
                refs[ptr] = 0
            live[ptr].last = i
            refs[ptr] += 1
            slot_ptr[s] = ptr
        for f in step.frees:
            env[f] = None
            ptr = slot_ptr.pop(f, -1)
            if ptr in refs:
                refs[ptr] -= 1
                if refs[ptr] == 0:
                    del refs[ptr], live[ptr]
    for s in program.output_slots:
        st = _storage(env[s])
        if st is not None and st[0] in live:
            live[st[0]].last = len(program.steps)
    return blocks, naive


def _peak(blocks: list[Block], n_steps: int) -> int:
    events: list[tuple[int, int]] = []
    for b in blocks:
        events.append((b.first, b.size))
        events.append((b.last + 1, -b.size))
    events.sort(key=lambda e: (e[0], e[1]))
    cur = peak = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return peak


def assign_offsets(blocks: list[Block], align: int = 64) -> int:
    """Greedy by size with best fit; returns the arena size."""
    placed: list[Block] = []
    arena = 0
    for b in sorted(blocks, key=lambda x: (-x.size, x.first)):
        size = (b.size + align - 1) // align * align
        live = sorted((p for p in placed if p.first <= b.last and b.first <= p.last), key=lambda p: p.offset)
        best, best_gap, cur = -1, None, 0
        for p in live:
            gap = p.offset - cur
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = cur, gap
            cur = max(cur, p.offset + (p.size + align - 1) // align * align)
        b.offset = best if best >= 0 else cur
        arena = max(arena, b.offset + size)
        placed.append(b)
    return arena


def plan_memory(program: Program, inputs: Sequence[torch.Tensor]) -> MemoryPlan:
    blocks, naive = trace_blocks(program, inputs)
    arena = assign_offsets(blocks)
    return MemoryPlan(naive_bytes=naive, peak_bytes=_peak(blocks, len(program.steps)), arena_bytes=arena,
                      blocks=blocks)
