"""ExecutionContext: one independent runner of a program.

Contexts share the program — its kernels and weights — and own only per-run state: the
slot list of one run and the intermediates the kernels allocate, released after their last
reader. A context at rest holds no activation memory; while it runs it holds at most the
planned peak (``Engine.memory_plan``). A context is not meant to be run by two threads at
once; make one per thread, or use ``Engine.run``, which is safe from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from tensorkiln.backends.cpu.program import Program
from tensorkiln.errors import UserError


class ExecutionContext:
    def __init__(self, program: Program, threads: int | None = None) -> None:
        self.program = program
        self.threads = threads
        self._busy = threading.Lock()

    def run(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if not self._busy.acquire(blocking=False):
            raise UserError("this ExecutionContext is already running in another thread; create one context "
                            "per thread (engine.create_context()) or call engine.run, which is thread-safe")
        try:
            if self.threads is not None and torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)  # OpenMP: applies to the calling thread
            return self.program(inputs)
        finally:
            self._busy.release()
