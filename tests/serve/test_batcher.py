"""The dynamic batcher on its own, with a fake model whose execution time the test controls."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tensorkiln.serve.batcher import BatchPolicy, DynamicBatcher, QueuePolicy
from tensorkiln.serve.status import Unavailable


class FakeModel:
    """Each batch sleeps ``exec_s`` on an instance thread and returns each request's own value."""

    def __init__(self, exec_s: float = 0.0) -> None:
        self.exec_s = exec_s
        self.batches: list[tuple[str, list, float, float]] = []  # instance, requests, start, end
        self.lock = threading.Lock()

    def execute(self, instance, batch):
        t0 = time.monotonic()
        time.sleep(self.exec_s(batch) if callable(self.exec_s) else self.exec_s)
        with self.lock:
            self.batches.append((instance, [p.request for p in batch], t0, time.monotonic()))
        return [("out", p.request) for p in batch]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def make(policy: BatchPolicy, model: FakeModel, instances=1):
    loop = asyncio.get_running_loop()
    ex = ThreadPoolExecutor(max_workers=instances)
    return DynamicBatcher(policy, [f"i{k}" for k in range(instances)], ex, model.execute, loop)


async def gather(ps):
    return await asyncio.gather(*(p.future for p in ps), return_exceptions=True)


def test_waits_for_delay_then_sends_one_batch():
    async def main():
        m = FakeModel()
        b = make(BatchPolicy(enabled=True, max_rows=8, delay_s=0.15), m)
        t0 = time.monotonic()
        ps = [b.submit(k, 1, ()) for k in range(3)]
        res = await gather(ps)
        assert res == [("out", 0), ("out", 1), ("out", 2)]  # split back per request
        assert [r for _, r, _, _ in m.batches] == [[0, 1, 2]]
        assert m.batches[0][2] - t0 >= 0.14  # it waited for the delay, counted from the oldest
    run(main())


def test_full_batch_goes_at_once():
    async def main():
        m = FakeModel()
        b = make(BatchPolicy(enabled=True, max_rows=4, delay_s=10.0), m)
        t0 = time.monotonic()
        ps = [b.submit(k, 1, ()) for k in range(4)]
        await gather(ps)
        assert time.monotonic() - t0 < 2.0 and len(m.batches) == 1
    run(main())


def test_rows_count_not_requests():
    async def main():
        m = FakeModel()
        b = make(BatchPolicy(enabled=True, max_rows=4, delay_s=0.05), m)
        ps = [b.submit("a", 3, ()), b.submit("b", 2, ()), b.submit("c", 1, ())]
        await gather(ps)
        assert [r for _, r, _, _ in m.batches] == [["a"], ["b", "c"]]  # 3 + 2 > 4: arrival order kept
    run(main())


def test_queued_requests_are_not_left_behind():
    """While the instance is busy requests pile up; the next batch takes all of them."""
    async def main():
        m = FakeModel(exec_s=lambda batch: 0.3 if batch[0].request == "first" else 0.0)
        b = make(BatchPolicy(enabled=True, max_rows=16, delay_s=0.001), m)
        first = b.submit("first", 1, ())
        await asyncio.sleep(0.05)
        ps = []
        for k in range(6):
            ps.append(b.submit(k, 1, ()))
            await asyncio.sleep(0.01)
        await gather([first, *ps])
        assert [r for _, r, _, _ in m.batches] == [["first"], [0, 1, 2, 3, 4, 5]]
    run(main())


def test_shape_buckets_do_not_cut_batches():
    async def main():
        m = FakeModel()
        b = make(BatchPolicy(enabled=True, max_rows=8, delay_s=0.1), m)
        ps = [b.submit(f"{k}", 1, ("A" if k % 2 == 0 else "B",)) for k in range(6)]
        await gather(ps)
        assert sorted(r for _, r, _, _ in m.batches) == [["0", "2", "4"], ["1", "3", "5"]]
    run(main())


def test_priority_levels():
    async def main():
        m = FakeModel(exec_s=0.05)
        b = make(BatchPolicy(enabled=True, max_rows=1, levels=2, default_level=2), m)
        busy = b.submit("busy", 1, ())
        await asyncio.sleep(0.01)
        low = [b.submit(f"low{k}", 1, (), priority=2) for k in range(2)]
        high = b.submit("high", 1, (), priority=1)
        default = b.submit("default", 1, (), priority=0)
        await gather([busy, *low, high, default])
        order = [r[0] for _, r, _, _ in m.batches]
        assert order == ["busy", "high", "low0", "low1", "default"]
    run(main())


def test_max_queue_size_rejects_at_once():
    async def main():
        m = FakeModel(exec_s=0.2)
        b = make(BatchPolicy(enabled=True, max_rows=1, default_policy=QueuePolicy(max_queue_size=2)), m)
        running = b.submit("run", 1, ())
        await asyncio.sleep(0.02)
        q = [b.submit(0, 1, ())]
        assert not b.full()
        q.append(b.submit(1, 1, ()))
        assert b.full()  # the front ends reject before decoding a request
        t0 = time.monotonic()
        with pytest.raises(Unavailable, match="queue size"):
            b.submit("over", 1, ())
        assert time.monotonic() - t0 < 0.05
        res = await gather([running, *q])
        assert all(isinstance(r, tuple) for r in res)
    run(main())


def test_full_only_when_every_priority_level_is():
    async def main():
        m = FakeModel(exec_s=0.2)
        pol = BatchPolicy(enabled=True, max_rows=1, levels=2, default_level=2,
                          default_policy=QueuePolicy(max_queue_size=1))
        b = make(pol, m)
        running = b.submit("run", 1, ())
        await asyncio.sleep(0.02)
        low = b.submit("low", 1, ())  # level 2 is full, level 1 has room
        assert not b.full()
        high = b.submit("high", 1, (), priority=1)
        assert b.full()
        await gather([running, low, high])
        assert not b.full()
        unbounded = make(BatchPolicy(enabled=True, max_rows=1), m)
        assert not unbounded.full()
    run(main())


def test_timeout_while_queued_rejects():
    async def main():
        m = FakeModel(exec_s=0.4)
        pol = BatchPolicy(enabled=True, max_rows=1, default_policy=QueuePolicy(allow_override=True))
        b = make(pol, m)
        busy = b.submit("busy", 1, ())
        await asyncio.sleep(0.02)
        t0 = time.monotonic()
        late = b.submit("late", 1, (), timeout_us=50_000)
        with pytest.raises(Unavailable, match="timeout"):
            await late.future
        assert time.monotonic() - t0 < 0.3  # answered at its deadline, not when the instance freed
        await busy.future
        assert [r for _, r, _, _ in m.batches] == [["busy"]]  # never executed
    run(main())


def test_timeout_enforced_while_running():
    async def main():
        m = FakeModel(exec_s=0.5)
        b = make(BatchPolicy(enabled=True, max_rows=4, default_policy=QueuePolicy(timeout_us=100_000)), m)
        t0 = time.monotonic()
        p = b.submit("slow", 1, ())
        with pytest.raises(Unavailable, match="timeout"):
            await p.future
        assert time.monotonic() - t0 < 0.4
        await b.drain()
    run(main())


def test_timeout_delay_action_moves_behind():
    async def main():
        m = FakeModel(exec_s=0.3)
        delay = QueuePolicy(timeout_us=50_000, delay_on_timeout=True)
        pol = BatchPolicy(enabled=True, max_rows=1, levels=2, default_level=1, queue_policies={1: delay})
        b = make(pol, m)
        busy = b.submit("busy", 1, ())
        await asyncio.sleep(0.01)
        a = b.submit("a", 1, (), priority=1)  # times out while queued -> delayed, not rejected
        c = b.submit("c", 1, (), priority=2)  # lower priority, no timeout
        res = await gather([busy, a, c])
        assert res[1] == ("out", "a")
        assert [r[0] for _, r, _, _ in m.batches] == ["busy", "c", "a"]
    run(main())


def test_preferred_batch_size_goes_without_waiting():
    async def main():
        m = FakeModel()
        b = make(BatchPolicy(enabled=True, max_rows=8, delay_s=5.0, preferred=(2,)), m)
        t0 = time.monotonic()
        ps = [b.submit(k, 1, ()) for k in range(2)]
        await gather(ps)
        assert time.monotonic() - t0 < 1.0 and [r for _, r, _, _ in m.batches] == [[0, 1]]
    run(main())


def test_instances_run_concurrently():
    async def main():
        m = FakeModel(exec_s=0.2)
        b = make(BatchPolicy(enabled=True, max_rows=1), m, instances=2)
        ps = [b.submit(k, 1, ()) for k in range(2)]
        await gather(ps)
        (i1, _, s1, e1), (i2, _, s2, e2) = m.batches
        assert i1 != i2 and max(s1, s2) < min(e1, e2)  # overlapping executions on two instances
    run(main())


def test_preserve_ordering():
    async def main():
        m = FakeModel(exec_s=lambda batch: 0.3 if batch[0].request == 0 else 0.0)
        b = make(BatchPolicy(enabled=True, max_rows=1, preserve_ordering=True), m, instances=2)
        done = []
        ps = [b.submit(k, 1, ()) for k in range(2)]
        for p in ps:
            p.future.add_done_callback(lambda f: done.append(f.result()[1]))
        await gather(ps)
        await asyncio.sleep(0)
        assert done == [0, 1]  # request 1 finished first but is answered after request 0
    run(main())


def test_adaptive_does_not_wait_for_unlikely_arrivals():
    async def main():
        lat = {}
        for adaptive in (False, True):
            m = FakeModel()
            b = make(BatchPolicy(enabled=True, max_rows=8, delay_s=0.15, adaptive=adaptive), m)
            waits = []
            for k in range(3):  # sparse arrivals: one every 0.2 s or more, longer than the 0.15 s delay
                t0 = time.monotonic()
                await b.submit(k, 1, ()).future
                waits.append(time.monotonic() - t0)
                await asyncio.sleep(0.05)
            lat[adaptive] = max(waits[1:])  # the first has no inter-arrival estimate yet
        assert lat[False] >= 0.14
        assert lat[True] < 0.08
    run(main())


def test_no_dynamic_batching_runs_one_request_at_a_time():
    async def main():
        m = FakeModel()
        b = make(BatchPolicy(enabled=False, max_rows=8), m)
        await gather([b.submit(k, 2, ()) for k in range(3)])
        assert [r for _, r, _, _ in m.batches] == [[0], [1], [2]]
    run(main())


def test_drain_refuses_new_and_finishes_queued():
    async def main():
        m = FakeModel(exec_s=0.05)
        b = make(BatchPolicy(enabled=True, max_rows=1), m)
        ps = [b.submit(k, 1, ()) for k in range(3)]
        await b.drain()
        assert all(p.future.done() and not p.future.exception() for p in ps)
        with pytest.raises(Unavailable):
            b.submit("late", 1, ())
    run(main())


def test_cancelled_request_leaves_the_queue():
    async def main():
        m = FakeModel(exec_s=0.1)
        b = make(BatchPolicy(enabled=True, max_rows=1), m)
        busy = b.submit("busy", 1, ())
        await asyncio.sleep(0.01)
        gone = b.submit("gone", 1, ())
        gone.future.cancel()
        await asyncio.sleep(0)
        assert b.queued() == 0
        await busy.future
        await b.drain()
        assert [r for _, r, _, _ in m.batches] == [["busy"]]
    run(main())


def test_adaptive_closed_loop_single_client_stops_waiting_but_concurrent_clients_batch():
    async def main():
        m = FakeModel(exec_s=0.002)
        b = make(BatchPolicy(enabled=True, max_rows=8, delay_s=0.12, adaptive=True), m)
        waits = []
        for k in range(6):  # one client, next request only after the answer
            t0 = time.monotonic()
            await b.submit(k, 1, ()).future
            waits.append(time.monotonic() - t0)
        assert waits[0] >= 0.115 and max(waits[2:]) < 0.07  # learns that nobody else comes

        async def client(c):
            for k in range(10):
                await b.submit((c, k), 1, ()).future

        n0 = len(m.batches)
        await asyncio.gather(*(client(c) for c in range(6)))
        rows = [len(r) for _, r, _, _ in m.batches[n0:]]
        assert sum(rows) == 60 and sum(rows) / len(rows) > 1.5  # concurrent traffic is still batched
    run(main())
