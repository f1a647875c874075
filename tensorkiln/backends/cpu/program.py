"""Lowering a graph to a flat list of pre-bound steps, and running it.

A ``Program`` holds one slot per value. Constants are placed in their slots once; each
step is ``(kernel, input slots, output slots, slots to free after)``. Running walks that
list and nothing else: no graph walking, no per-call dispatch on op types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tensorkiln.backends.cpu import chain
from tensorkiln.backends.cpu.base import BuildContext, Kernel
from tensorkiln.backends.cpu.chain import Chain
from tensorkiln.errors import KernelError, TensorkilnError, UnsupportedOpError
from tensorkiln.ir import Graph, Node, Value


@dataclass
class Step:
    kernel: Kernel
    ins: tuple[int, ...]
    outs: tuple[int, ...]
    frees: tuple[int, ...]
    node: Node
    attrs: dict[str, Any] = field(default_factory=dict)  # the node's attributes when the kernel was made


@dataclass
class Program:
    n_slots: int
    template: list[torch.Tensor | None]
    input_slots: list[int]
    capture_slots: list[int]
    output_slots: list[int]
    steps: list[Step]
    captures: list[Value] = field(default_factory=list)
    # slots whose tensors must not be handed out without a copy (constants)
    protected: frozenset[int] = frozenset()
    # what a run executes: the steps, with runs of native steps as chains (made on first run)
    _runs: list[Step | Chain] | None = field(default=None, repr=False)

    def runs(self) -> list[Step | Chain]:
        if self._runs is None:
            self._runs = chain.group(self.steps, self.protected) if chain.enabled() else list(self.steps)
        return self._runs

    @property
    def n_inputs(self) -> int:
        return len(self.input_slots)

    def __call__(self, inputs: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
        env = self.template.copy()
        slots = self.input_slots + self.capture_slots
        for s, t in zip(slots, inputs):
            env[s] = t
        step = None
        try:
            for step in self._runs or self.runs():
                if type(step) is Chain:
                    step.run(env)
                    continue
                r = step.kernel(*[env[i] for i in step.ins])
                outs = step.outs
                if len(outs) == 1:
                    env[outs[0]] = r
                else:
                    for s, t in zip(outs, r):
                        env[s] = t
                for f in step.frees:
                    env[f] = None
        except TensorkilnError:
            raise
        except Exception as e:
            if not isinstance(step, Step):
                raise
            raise kernel_error(step, e) from e
        return [env[s] for s in self.output_slots]  # type: ignore[misc]


def kernel_error(step: Step, e: Exception) -> KernelError:
    n = step.node
    return KernelError(f"step {n.op_type} for ONNX node(s) {', '.join(n.origin) or n.name!r} failed: "
                       f"{type(e).__name__}: {e}")


def profile_program(program: Program, inputs: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[float]]:
    """Run once, timing every step (seconds, in ``program.steps`` order); like ``Program.__call__``
    otherwise. Steps inside a chain report their native call's own time."""
    import time

    env = program.template.copy()
    for s, t in zip(program.input_slots + program.capture_slots, inputs):
        env[s] = t
    times: list[float] = []
    clock = time.perf_counter
    for step in program.runs():
        if type(step) is Chain:
            step.run(env, times)
            continue
        args = [env[i] for i in step.ins]
        t0 = clock()
        r = step.kernel(*args)
        times.append(clock() - t0)
        if len(step.outs) == 1:
            env[step.outs[0]] = r
        else:
            for s, t in zip(step.outs, r):
                env[s] = t
        for f in step.frees:
            env[f] = None
    return [env[s] for s in program.output_slots], times  # type: ignore[misc]


def lower(graph: Graph, registry: dict[tuple[str, str], object], release: bool = True,
          reuse: Program | None = None) -> Program:
    """Compile ``graph`` into a Program. Unsupported ops are reported all at once."""
    missing = find_unsupported(graph, registry)
    if missing:
        raise UnsupportedOpError(
            f"the model uses {len(missing)} operator(s) the CPU backend does not support:\n  "
            + "\n  ".join(missing)
        )
    errors: list[str] = []
    old: dict[int, Step] = {}
    if reuse is not None:  # kernels of unchanged nodes are kept (no second weight packing)
        old = {id(st.node): st for st in reuse.steps}
    prog = _lower(graph, registry, errors, old)
    if prog is not None and not release:
        for st in prog.steps:  # planner off: keep every intermediate until the run ends
            st.frees = ()
    if errors:
        raise UnsupportedOpError(
            f"{len(errors)} node(s) use attributes or types the CPU backend cannot run:\n  "
            + "\n  ".join(errors)
        )
    assert prog is not None
    return prog


def find_unsupported(graph: Graph, registry: dict[tuple[str, str], object]) -> list[str]:
    missing: dict[tuple[str, str, int], list[str]] = {}
    for n in graph.iter_nodes_recursive():
        if (n.domain, n.op_type) not in registry:
            missing.setdefault((n.domain, n.op_type, n.opset), []).append(n.name)
    out = []
    for (dom, op, opset), names in sorted(missing.items()):
        qual = f"{dom}::{op}" if dom else op
        shown = ", ".join(repr(x) for x in names[:6])
        if len(names) > 6:
            shown += f" and {len(names) - 6} more"
        out.append(f"{qual} (opset {opset}): nodes {shown}")
    return out


def _lower(graph: Graph, registry: dict[tuple[str, str], object], errors: list[str],
           old: dict[int, Step] | None = None) -> Program | None:
    slot_of: dict[int, int] = {}
    template: list[torch.Tensor | None] = [None]  # slot 0 is always None (absent input)

    def slot(v: Value) -> int:
        k = id(v)
        if k not in slot_of:
            slot_of[k] = len(template)
            template.append(None)
        return slot_of[k]

    input_slots = [slot(v) for v in graph.inputs]
    capture_slots = [slot(v) for v in graph.captures]
    protected: set[int] = set()
    from tensorkiln.backends.cpu.base import torch_const

    for v in graph.constants.values():
        s = slot(v)
        assert v.const is not None
        if v.const.dtype == object:
            continue  # string constants: only a kernel that reads them can fail
        template[s] = torch_const(v.const)
        protected.add(s)

    ctx = BuildContext(compile_subgraph=lambda g: _compile_sub(g, registry, errors))
    steps: list[Step] = []
    # last use of each slot, to free it after its last reader
    last_use: dict[int, int] = {}
    for i, n in enumerate(graph.nodes):
        for v in n.inputs:
            if v is not None:
                last_use[slot(v)] = i
    keep = {slot(v) for v in graph.outputs} | protected | set(input_slots) | set(capture_slots)
    for i, n in enumerate(graph.nodes):
        factory = registry.get((n.domain, n.op_type))
        kernel: Kernel | None = None
        prev = (old or {}).get(id(n))
        if prev is not None and prev.attrs == n.attrs:
            kernel = prev.kernel
        elif factory is None:
            errors.append(f"{n.qualified_op} (opset {n.opset}) at node {n.name!r}: no kernel")
        else:
            try:
                kernel = factory(n, ctx)  # type: ignore[operator]
            except UnsupportedOpError as e:
                errors.append(str(e))
        ins = tuple(0 if v is None else slot(v) for v in n.inputs)
        outs = tuple(slot(v) for v in n.outputs)
        frees = [s for s in set(ins) if s and last_use.get(s) == i and s not in keep]
        frees += [s for s in outs if s not in last_use and s not in keep]  # never read
        if kernel is not None:
            steps.append(Step(kernel, ins, outs, tuple(sorted(set(frees))), n, dict(n.attrs)))
    output_slots = [slot(v) for v in graph.outputs]
    if errors:
        return None
    return Program(
        n_slots=len(template),
        template=template,
        input_slots=input_slots,
        capture_slots=capture_slots,
        output_slots=output_slots,
        steps=steps,
        captures=list(graph.captures),
        protected=frozenset(protected),
    )


class _NullProgram:
    n_inputs = 0

    def __init__(self) -> None:
        self.captures: list[Value] = []

    def __call__(self, inputs: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
        raise UnsupportedOpError("subgraph could not be compiled")


def _compile_sub(g: Graph, registry: dict[tuple[str, str], object], errors: list[str]) -> Program:
    p = _lower(g, registry, errors)
    return p if p is not None else _NullProgram()  # type: ignore[return-value]
