"""The dynamic batcher: queues per priority level, shape buckets, delay, timeouts, instances.

It runs on the server's event loop; batches execute on the model's instance threads. A batch
is formed when an instance is free, from queued requests in arrival order (highest priority
level first) that share a shape bucket — requests whose non-batch dims differ wait in their own
bucket instead of cutting the batch — up to ``max_batch_size`` rows. It is sent at once when
full or when it reaches a preferred size; otherwise it waits until ``max_queue_delay`` has passed
since its oldest request, and then takes everything queued for that bucket. The adaptive mode
(beyond Triton) sends without waiting when fewer than one more request is expected within the
remaining delay, from an EWMA of the inter-arrival time. The EWMA learns only from arrivals that
could have joined a batch (while requests were queued or running); a wait that saw no arrival at all
counts as a gap of at least twice its length. So a lone closed-loop client (whose next request cannot
come while it waits) stops paying the delay, while real concurrent traffic keeps being batched.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from tensorkiln.serve.status import Unavailable

QUEUED, RUNNING, DONE = 0, 1, 2


@dataclass(frozen=True)
class QueuePolicy:
    timeout_us: int = 0  # 0 = no timeout
    delay_on_timeout: bool = False  # timeout_action DELAY (else REJECT)
    allow_override: bool = False
    max_queue_size: int = 0  # 0 = unbounded


@dataclass(frozen=True)
class BatchPolicy:
    enabled: bool = False  # dynamic batching on (else one request per execution)
    max_rows: int = 1
    delay_s: float = 0.0
    preferred: tuple[int, ...] = ()
    preserve_ordering: bool = False
    levels: int = 1
    default_level: int = 1
    queue_policies: dict[int, QueuePolicy] = field(default_factory=dict)  # level -> policy
    default_policy: QueuePolicy = QueuePolicy()
    adaptive: bool = False

    def policy(self, level: int) -> QueuePolicy:
        return self.queue_policies.get(level, self.default_policy)


class Pending:
    """One request in the batcher."""

    __slots__ = ("arrival", "arrival_ns", "dispatch_ns", "error", "future", "key", "level", "outcome", "request",
                 "rows", "seq", "state", "timer", "timings")

    def __init__(self, request: Any, rows: int, key: Hashable, level: int, future: asyncio.Future[Any],
                 arrival: float, seq: int) -> None:
        self.request = request
        self.rows = rows
        self.key = key
        self.level = level
        self.future = future
        self.arrival = arrival
        self.arrival_ns = time.perf_counter_ns()
        self.dispatch_ns = 0
        self.timings: tuple[int, int, int] = (0, 0, 0)  # compute input / infer / output ns of its batch
        self.seq = seq
        self.state = QUEUED
        self.timer: asyncio.TimerHandle | None = None
        self.outcome: Any = None
        self.error: BaseException | None = None


class _Bucket:
    __slots__ = ("closed", "items", "oldest", "rows")

    def __init__(self) -> None:
        self.items: list[Pending] = []
        self.rows = 0
        self.oldest = float("inf")
        self.closed = False


Execute = Callable[[Any, list[Pending]], list[Any]]  # (instance, batch) -> per request: outputs or exception


class DynamicBatcher:
    SCAN_LIMIT = 4096  # queued requests looked at per batch formation

    def __init__(self, policy: BatchPolicy, instances: list[Any], executor: Executor, execute: Execute,
                 loop: asyncio.AbstractEventLoop, on_pending: Callable[[int], None] = lambda n: None) -> None:
        self.policy = policy
        self._free = list(instances)
        self._n_instances = len(instances)
        self._executor = executor
        self._execute = execute
        self._loop = loop
        self._on_pending = on_pending
        self._queues: list[deque[Pending]] = [deque() for _ in range(policy.levels + 1)]  # last: delayed
        self._counts = [0] * (policy.levels + 1)
        self._order: deque[Pending] = deque()  # arrival order, for preserve_ordering
        self._timer: asyncio.TimerHandle | None = None
        self._seq = 0
        self._last_arrival: float | None = None
        self.ewma_gap: float | None = None  # seconds between arrivals
        self._running = 0
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.executions = 0

    # ------------------------------------------------------------------ entry
    def queued(self) -> int:
        return sum(self._counts)

    def full(self) -> bool:
        """Every priority level's queue is at its maximum size: any request would be rejected."""
        pol = self.policy
        return all(0 < pol.policy(lv).max_queue_size <= self._counts[lv - 1] for lv in range(1, pol.levels + 1))

    def submit(self, request: Any, rows: int, key: Hashable, priority: int = 0, timeout_us: int = 0) -> Pending:
        """Queue a request (on the loop thread); await ``pending.future`` for its outputs."""
        if self._closing:
            raise Unavailable("the server is shutting down")
        pol = self.policy
        level = priority if 0 < priority <= pol.levels else pol.default_level
        qp = pol.policy(level)
        if qp.max_queue_size and self._counts[level - 1] >= qp.max_queue_size:
            raise Unavailable("Exceeds maximum queue size")
        now = self._loop.time()
        if self._last_arrival is not None and (self.queued() or self._running):
            self._observe_gap(now - self._last_arrival)  # an arrival that could join a batch
        self._last_arrival = now
        fut: asyncio.Future[Any] = self._loop.create_future()
        p = Pending(request, rows, key, level - 1, fut, now, self._seq)
        self._seq += 1
        timeout = qp.timeout_us
        if timeout_us > 0 and (qp.allow_override or not pol.enabled):
            timeout = min(timeout, timeout_us) if timeout else timeout_us
        if timeout > 0:
            p.timer = self._loop.call_at(now + timeout * 1e-6, self._expire, p)
        self._queues[p.level].append(p)
        self._counts[p.level] += 1
        if pol.preserve_ordering:
            self._order.append(p)
        def on_done(f: asyncio.Future[Any], p: Pending = p) -> None:
            if f.cancelled():
                self._cancelled(p)

        fut.add_done_callback(on_done)
        self._idle.clear()
        self._on_pending(1)
        self._schedule()
        return p

    def _observe_gap(self, gap: float) -> None:
        gap = min(gap, 10.0)
        self.ewma_gap = gap if self.ewma_gap is None else 0.2 * gap + 0.8 * self.ewma_gap

    # -------------------------------------------------------------- scheduling
    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._free and self.queued():
            batch, wake = self._form(self._loop.time())
            if not batch:
                if wake is not None:
                    self._timer = self._loop.call_at(wake, self._schedule)
                return
            self._dispatch(batch)

    def _form(self, now: float) -> tuple[list[Pending], float | None]:
        pol = self.policy
        buckets: dict[Hashable, _Bucket] = {}
        order: list[_Bucket] = []
        scanned = 0
        for q in self._queues:
            for p in q:
                b = buckets.get(p.key)
                if b is None:
                    b = buckets[p.key] = _Bucket()
                    order.append(b)
                if b.closed:
                    continue
                if b.items and (not pol.enabled or b.rows + p.rows > pol.max_rows):
                    b.closed = True  # full, or the next request in arrival order does not fit
                    continue
                b.items.append(p)
                b.rows += p.rows
                b.oldest = min(b.oldest, p.arrival)
                if not pol.enabled or b.rows >= pol.max_rows:
                    b.closed = True
                scanned += 1
                if order[0].closed or scanned >= self.SCAN_LIMIT:
                    break
            if (order and order[0].closed) or scanned >= self.SCAN_LIMIT:
                break
        wake: float | None = None
        for b in order:
            ready, until = self._ready(b, now)
            if ready:
                return self._trim(b), None
            if until is not None:
                wake = until if wake is None else min(wake, until)
        return [], wake

    def _ready(self, b: _Bucket, now: float) -> tuple[bool, float | None]:
        pol = self.policy
        if not pol.enabled or b.closed or pol.delay_s <= 0:
            return True, None
        if pol.preferred and self._best_preferred(b) > 0:
            return True, None
        deadline = b.oldest + pol.delay_s
        if now >= deadline:
            if pol.adaptive and self._last_arrival is not None and self._last_arrival <= b.oldest:
                self._observe_gap(2 * (now - b.oldest))  # nobody came during the whole wait
            return True, None
        if pol.adaptive and self.ewma_gap is not None and (deadline - now) < self.ewma_gap:
            return True, None  # fewer than one more arrival expected before the deadline
        return False, deadline

    def _best_preferred(self, b: _Bucket) -> int:
        sizes = set(self.policy.preferred)
        best, rows = 0, 0
        for p in b.items:
            rows += p.rows
            if rows in sizes:
                best = rows
        return best

    def _trim(self, b: _Bucket) -> list[Pending]:
        pol = self.policy
        if not (pol.enabled and pol.preferred) or (b.closed and b.rows >= pol.max_rows):
            return b.items
        best = self._best_preferred(b)
        if best <= 0 or best == b.rows:
            return b.items
        rows, out = 0, []
        for p in b.items:
            if rows >= best:
                break
            out.append(p)
            rows += p.rows
        return out

    def _dispatch(self, batch: list[Pending]) -> None:
        taken = set(map(id, batch))
        for lv in {p.level for p in batch}:
            q = self._queues[lv]
            while q and id(q[0]) in taken:
                q.popleft()
            if any(id(p) in taken for p in q):
                self._queues[lv] = deque(p for p in q if id(p) not in taken)
        now_ns = time.perf_counter_ns()
        for p in batch:
            self._counts[p.level] -= 1
            p.state = RUNNING
            p.dispatch_ns = now_ns
            if p.timer is not None and self.policy.policy(p.level + 1).delay_on_timeout:
                p.timer.cancel()  # DELAY: a running request is never failed by its timeout
        instance = self._free.pop()
        self._running += 1
        self.executions += 1
        self._loop.create_task(self._run(instance, batch))

    async def _run(self, instance: Any, batch: list[Pending]) -> None:
        try:
            results = await self._loop.run_in_executor(self._executor, self._execute, instance, batch)
        except BaseException as e:  # the executor itself failed
            results = [e] * len(batch)
        finally:
            self._free.append(instance)
            self._running -= 1
        for p, r in zip(batch, results):
            self._complete(p, r)
        self._schedule()
        self._check_idle()

    # ------------------------------------------------------------- completion
    def _complete(self, p: Pending, r: Any) -> None:
        if p.state == DONE:
            return
        if p.timer is not None:
            p.timer.cancel()
            p.timer = None
        p.state = DONE
        self._on_pending(-1)
        if isinstance(r, BaseException):
            p.error = r
        else:
            p.outcome = r
        if not self.policy.preserve_ordering:
            self._deliver(p)
            return
        while self._order and self._order[0].state == DONE:
            self._deliver(self._order.popleft())

    @staticmethod
    def _deliver(p: Pending) -> None:
        if p.future.done():
            return
        if p.error is not None:
            p.future.set_exception(p.error)
        else:
            p.future.set_result(p.outcome)

    def _remove(self, p: Pending) -> None:
        try:
            self._queues[p.level].remove(p)
        except ValueError:
            return
        self._counts[p.level] -= 1

    def _expire(self, p: Pending) -> None:
        p.timer = None
        if p.state == DONE:
            return
        if p.state == QUEUED and self.policy.policy(p.level + 1).delay_on_timeout:
            self._remove(p)  # DELAY: behind every other request, whatever its priority
            p.level = len(self._queues) - 1
            self._queues[p.level].append(p)
            self._counts[p.level] += 1
            return
        if p.state == QUEUED:
            self._remove(p)
        self._complete(p, Unavailable("Request timeout expired"))
        self._schedule()
        self._check_idle()

    def _cancelled(self, p: Pending) -> None:
        if p.state == QUEUED:
            self._remove(p)
            self._complete(p, Unavailable("request cancelled"))
            self._check_idle()

    def _check_idle(self) -> None:
        if not self._running and not self.queued():
            self._idle.set()

    # --------------------------------------------------------------- shutdown
    async def drain(self) -> None:
        """Refuse new requests; wait for the queued and running ones to finish."""
        self._closing = True
        self._schedule()
        self._check_idle()
        await self._idle.wait()
