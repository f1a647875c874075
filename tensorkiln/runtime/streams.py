"""CPU streams: the cores split into N groups, each running its own context (throughput mode).

Each stream is a worker thread whose intra-op thread count is cores/N (OpenMP's thread count
is a per-thread setting, so the streams do not fight over it). ATen kernels release the GIL
while they compute, so the streams run in parallel.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import torch

from tensorkiln.backends.cpu.program import Program
from tensorkiln.errors import OptionError
from tensorkiln.runtime.context import ExecutionContext


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def auto_streams(n_weights_bytes: int, cores: int | None = None) -> int:
    """OpenVINO-like heuristic: one stream per 2 cores for big models, one per core for small."""
    cores = cores or cpu_count()
    if cores <= 1:
        return 1
    if n_weights_bytes < 50_000_000:
        return cores
    return max(1, cores // 2)


_STOP = object()


class StreamPool:
    def __init__(self, program: Program, streams: int, threads_per_stream: int | None = None) -> None:
        if streams < 1:
            raise OptionError(f"streams must be >= 1, got {streams}")
        cores = cpu_count()
        self.streams = streams
        self.threads_per_stream = threads_per_stream or max(1, cores // streams)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._workers = []
        for i in range(streams):
            ctx = ExecutionContext(program, self.threads_per_stream)
            t = threading.Thread(target=self._work, args=(ctx,), name=f"tensorkiln-stream-{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def _work(self, ctx: ExecutionContext) -> None:
        torch.set_num_threads(self.threads_per_stream)
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fut, inputs, finish = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(finish(ctx.run(inputs)))
            except BaseException as e:
                fut.set_exception(e)

    def submit(self, inputs: Sequence[torch.Tensor],
               finish: Callable[[list[torch.Tensor]], Any] = lambda r: r) -> Future[Any]:
        fut: Future[Any] = Future()
        self._queue.put((fut, inputs, finish))
        return fut

    def close(self) -> None:
        for _ in self._workers:
            self._queue.put(_STOP)
        for t in self._workers:
            t.join(timeout=5)
