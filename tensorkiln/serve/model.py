"""A served model version: its config, engine, instances (execution contexts) and batcher."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tensorkiln.engine import Engine, TensorSpec
from tensorkiln.errors import UserError
from tensorkiln.runtime.streams import cpu_count
from tensorkiln.serve import config as cfgmod
from tensorkiln.serve import dtypes
from tensorkiln.serve.batcher import BatchPolicy, DynamicBatcher, Pending, QueuePolicy
from tensorkiln.serve.stats import Metrics, ModelStats
from tensorkiln.serve.status import Internal, InvalidArgument, ServeError, Unavailable

log = logging.getLogger("tensorkiln.serve")


@dataclass
class InferRequest:
    """A decoded inference request (protocol independent)."""

    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    outputs: list[str] | None = None  # None: all outputs
    id: str = ""
    priority: int = 0
    timeout_us: int = 0
    parameters: dict[str, Any] = field(default_factory=dict)


def batch_policy(cfg: Any) -> BatchPolicy:
    if not cfg.HasField("dynamic_batching"):
        return BatchPolicy(enabled=False, max_rows=max(1, cfg.max_batch_size))
    db = cfg.dynamic_batching

    def qp(p: Any) -> QueuePolicy:
        return QueuePolicy(int(p.default_timeout_microseconds), p.timeout_action == 1,
                           bool(p.allow_timeout_override), int(p.max_queue_size))

    levels = max(1, int(db.priority_levels))
    return BatchPolicy(
        enabled=True, max_rows=max(1, cfg.max_batch_size), delay_s=db.max_queue_delay_microseconds * 1e-6,
        preferred=tuple(sorted(set(db.preferred_batch_size))), preserve_ordering=db.preserve_ordering,
        levels=levels, default_level=int(db.default_priority_level) or 1,
        queue_policies={int(k): qp(v) for k, v in db.priority_queue_policy.items()},
        default_policy=qp(db.default_queue_policy), adaptive=cfgmod.adaptive(cfg))


class ServedModel:
    def __init__(self, name: str, version: str, cfg: Any, engine: Engine | EchoEngine, metrics: Metrics,
                 max_tensor_bytes: int) -> None:
        self.name = name
        self.version = version
        self.config = cfg
        self.engine = engine
        self.inputs = cfgmod.io_specs(cfg.input)
        self.outputs = cfgmod.io_specs(cfg.output)
        self.output_names = [o.name for o in self.outputs]
        self.max_batch_size = int(cfg.max_batch_size)
        self.stats = ModelStats(name, version)
        self.metrics = metrics
        self.max_tensor_bytes = max_tensor_bytes
        self.n_instances = sum(g.count for g in cfg.instance_group) or 1
        threads = max(1, cpu_count() // self.n_instances)
        self.instances = [engine.create_context(threads=threads) for _ in range(self.n_instances)]
        self.executor = ThreadPoolExecutor(max_workers=self.n_instances, thread_name_prefix=f"tk-serve-{name}")
        self.policy = batch_policy(cfg)
        self.batcher: DynamicBatcher | None = None
        warmed = [b for b in self.warmup_batch_sizes() if b is not None]
        # opt-in: pad executions with zero rows up to these sizes (sizes with exact weight packings run
        # faster than the sizes that reuse another size's packing)
        self.pad_to = cfgmod.pad_sizes(cfg, [b for b in warmed if b in (1, self.max_batch_size)
                                             or b in self.policy.preferred or b & (b - 1) == 0])
        # models with BYTES (string) tensors: the CPU engine has no string kernels; a model whose
        # outputs are all its inputs passed through Identity nodes is served by echoing them
        self.has_bytes = any(s.datatype == "BYTES" for s in [*self.inputs, *self.outputs])
        if isinstance(engine, EchoEngine):
            self.echo: dict[str, str] | None = engine.echo_map
        else:
            self.echo = _echo_map(engine) if self.has_bytes else None
        self._labels = (name, version)

    # --------------------------------------------------------------- lifecycle
    def warmup(self) -> None:
        """Run every instance once at each batch size the batcher will use (before marking ready)."""
        if self.has_bytes:
            return
        for feeds in self._warmup_feeds():
            for ctx in self.instances:
                ctx.run(feeds)

    def _warmup_feeds(self) -> list[dict[str, np.ndarray]]:
        out = []
        if self.config.model_warmup:
            for w in self.config.model_warmup:
                feeds = {}
                for name, inp in w.inputs.items():
                    spec = next((s for s in self.inputs if s.name == name), None)
                    if spec is None or spec.datatype == "BYTES":
                        continue
                    shape = tuple(int(d) for d in inp.dims)
                    if self.max_batch_size > 0:
                        shape = (max(1, w.batch_size),) + shape
                    rng = np.random.default_rng(0)
                    dt = dtypes.NUMPY[spec.datatype]
                    a = rng.random(shape) if inp.random_data else np.zeros(shape)
                    feeds[name] = a.astype(dt)
                out.append(feeds)
            return out
        if any(s.datatype == "BYTES" or -1 in s.dims for s in self.inputs):
            return []  # variable non-batch dims: warm up only through config.model_warmup
        for bs in self.warmup_batch_sizes():
            out.append({s.name: np.zeros(((bs,) if bs else ()) + s.dims, dtypes.NUMPY[s.datatype])
                        for s in self.inputs})
        return out

    def warmup_batch_sizes(self) -> list[int | None]:
        """1, the largest batch, the preferred sizes, the powers of two below the largest (largest first),
        then every other size up to 8: likeliest first, as the engine keeps exact per-batch-size weight
        packings only for the first few sizes it sees (later sizes reuse one, which is slower)."""
        mbs = self.max_batch_size
        if mbs == 0:
            return [None]
        sizes: list[int | None] = []
        pow2 = [1 << k for k in range(mbs.bit_length() - 1, 0, -1) if (1 << k) < mbs]
        for b in [1, mbs, *self.policy.preferred, *pow2, *range(2, min(mbs, 8) + 1)]:
            if b not in sizes:
                sizes.append(b)
        return sizes

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.batcher = DynamicBatcher(self.policy, self.instances, self.executor, self._execute, loop,
                                      on_pending=self.stats.add_pending)

    async def drain(self) -> None:
        if self.batcher is not None:
            await self.batcher.drain()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # --------------------------------------------------------------- requests
    def check(self, req: InferRequest) -> tuple[int, tuple[Any, ...]]:
        """Validate a request against the config; returns (rows, shape bucket key)."""
        where = f"model '{self.name}'"
        by_name = {s.name: s for s in self.inputs}
        for n in req.inputs:
            if n not in by_name:
                raise InvalidArgument(f"unexpected inference input '{n}' for {where}; its inputs are "
                                      f"{list(by_name)}")
        missing = [s.name for s in self.inputs if s.name not in req.inputs and not s.optional]
        if missing:
            raise InvalidArgument(f"expected {len(self.inputs)} inputs but got {len(req.inputs)} inputs for "
                                  f"{where}; missing {missing}")
        rows: int | None = None
        key: list[Any] = []
        total = 0
        for s in self.inputs:
            if s.name not in req.inputs:
                continue
            a = req.inputs[s.name]
            dt = req.datatypes.get(s.name, s.datatype)
            if dt != s.datatype:
                raise InvalidArgument(f"inference input '{s.name}' data-type is '{dt}', but model '{self.name}' "
                                      f"expects '{s.datatype}'")
            shape = a.shape
            if self.max_batch_size > 0:
                if len(shape) < 1:
                    raise InvalidArgument(f"inference input '{s.name}' of {where} needs a batch dimension")
                b = int(shape[0])
                if rows is None:
                    rows = b
                if b != rows:
                    raise InvalidArgument(f"inference input '{s.name}' has batch size {b}, other inputs have {rows}")
                if not 1 <= b <= self.max_batch_size:
                    raise InvalidArgument(f"inference request batch-size must be <= {self.max_batch_size} for "
                                          f"{where}, got {b}")
                dims = tuple(shape[1:])
            else:
                dims = tuple(shape)
            if len(dims) != len(s.dims) or any(d != -1 and d != n for d, n in zip(s.dims, dims)):
                full = ([-1] if self.max_batch_size > 0 else []) + list(s.dims)
                raise InvalidArgument(f"unexpected shape for input '{s.name}' for {where}. Expected {full}, "
                                      f"got {list(shape)}")
            key.append(dims)
            total += a.nbytes if a.dtype != object else sum(len(x) for x in a.reshape(-1))
        if total > self.max_tensor_bytes:
            raise InvalidArgument(f"request tensors hold {total} bytes, over the server's limit of "
                                  f"{self.max_tensor_bytes}")
        if req.outputs is not None:
            for n in req.outputs:
                if n not in self.output_names:
                    raise InvalidArgument(f"unexpected inference output '{n}' for {where}; its outputs are "
                                          f"{self.output_names}")
        return rows or 1, tuple(key)

    def reject_if_full(self, t0_ns: int) -> None:
        """Raise Unavailable (counted as a failed request, timed from ``t0_ns``) when every queue is
        full, before the request body is decoded: a rejection costs no decoding."""
        if self.batcher is not None and self.batcher.full():
            e = Unavailable("Exceeds maximum queue size")
            self.stats.failure(time.perf_counter_ns() - t0_ns, e.reason)
            raise e

    async def infer(self, req: InferRequest) -> dict[str, np.ndarray]:
        t0 = time.perf_counter_ns()
        try:
            rows, key = self.check(req)
            assert self.batcher is not None
            p = self.batcher.submit(req, rows, key, req.priority, req.timeout_us)
        except ServeError as e:
            self.stats.failure(time.perf_counter_ns() - t0, e.reason)
            raise
        try:
            out = await p.future
        except BaseException as e:
            reason = e.reason if isinstance(e, ServeError) else ("CANCELED" if isinstance(
                e, asyncio.CancelledError) else "OTHER")
            self.stats.failure(time.perf_counter_ns() - t0, reason)
            raise
        total = time.perf_counter_ns() - t0
        queue = max(0, p.dispatch_ns - p.arrival_ns)
        self.stats.success(total, queue, *p.timings)
        self.metrics.queue_time.labels(*self._labels).observe(queue * 1e-9)
        return out

    # ------------------------------------------------------ instance threads
    def _execute(self, ctx: Any, batch: list[Pending]) -> list[Any]:
        t0 = time.perf_counter_ns()
        reqs: list[InferRequest] = [p.request for p in batch]
        try:
            rows = sum(p.rows for p in batch)
            pad = next((s for s in self.pad_to if s >= rows), rows) - rows if self.pad_to else 0
            if len(reqs) == 1 and not pad:
                feeds = reqs[0].inputs
            else:
                feeds = {}
                for s in self.inputs:
                    if s.name not in reqs[0].inputs:
                        continue
                    parts = [r.inputs[s.name] for r in reqs]
                    if pad:
                        a0 = parts[0]
                        parts.append(np.zeros((pad, *a0.shape[1:]), a0.dtype))
                    feeds[s.name] = np.concatenate(parts)
            t1 = time.perf_counter_ns()
            if self.echo is not None:
                result = {o: feeds[i] for o, i in self.echo.items()}
            elif self.has_bytes:
                raise InvalidArgument(f"model '{self.name}' has BYTES tensors and does string math, which the CPU "
                                      "engine cannot run; only pure pass-through of BYTES is served")
            else:
                result = ctx.run(feeds)
            t2 = time.perf_counter_ns()
        except ServeError as e:
            return [e] * len(reqs)
        except UserError as e:
            err: ServeError = InvalidArgument(str(e)) if len(reqs) == 1 else Internal(f"batch failed: {e}")
            return [err] * len(reqs)
        except Exception as e:  # a bug: keep serving, tell the client
            log.exception("model %s: execution failed", self.name)
            return [Internal(f"{type(e).__name__}: {e}")] * len(reqs)
        outs: list[Any] = []
        if len(reqs) == 1 and not pad:
            outs.append(self._select(reqs[0], result))
        else:
            off = 0
            for p in batch:
                n = p.rows
                outs.append(self._select(p.request, {k: v[off:off + n] for k, v in result.items()}))
                off += n
        t3 = time.perf_counter_ns()
        timings = (t1 - t0, t2 - t1, t3 - t2)
        for p in batch:
            p.timings = timings
        rows = sum(p.rows for p in batch) if self.max_batch_size > 0 else len(batch)
        self.stats.execution(rows, *timings)
        self.metrics.batch_size.labels(*self._labels).observe(rows)
        return outs

    def _select(self, req: InferRequest, result: dict[str, Any]) -> dict[str, np.ndarray]:
        names = req.outputs if req.outputs is not None else self.output_names
        return {n: result[n] for n in names}

    # --------------------------------------------------------------- describe
    def metadata(self, versions: list[str]) -> dict[str, Any]:
        lead = [-1] if self.max_batch_size > 0 else []
        return {
            "name": self.name,
            "versions": versions,
            "platform": self.config.platform or self.config.backend,
            "inputs": [{"name": s.name, "datatype": s.datatype, "shape": lead + list(s.dims)} for s in self.inputs],
            "outputs": [{"name": s.name, "datatype": s.datatype, "shape": lead + list(s.dims)}
                        for s in self.outputs],
        }


def _echo_map(engine: Engine) -> dict[str, str] | None:
    """output name -> input name when every output is an input passed through Identity nodes."""
    g = engine.graph
    inputs = {id(v): v.name for v in g.inputs}
    out: dict[str, str] = {}
    for v in g.outputs:
        cur, hops = v, 0
        while id(cur) not in inputs:
            node = cur.producer
            if node is None or node.op_type != "Identity" or hops > 64:
                return None
            nxt = node.inputs[0] if node.inputs else None
            if nxt is None:
                return None
            cur = nxt
            hops += 1
        out[v.name] = inputs[id(cur)]
    return out


class EchoEngine:
    """Stands in for the engine of an ONNX model that carries BYTES (string) tensors and only passes
    its inputs through Identity nodes: the CPU engine has no string kernels, and none are needed."""

    def __init__(self, inputs: list[TensorSpec], outputs: list[TensorSpec], echo_map: dict[str, str]) -> None:
        self.inputs, self.outputs, self.echo_map = inputs, outputs, echo_map

    def create_context(self, threads: int | None = None) -> EchoEngine:
        return self

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        return {o: feeds[i] for o, i in self.echo_map.items()}

    def close(self) -> None:
        pass


def echo_engine_for(path: str) -> EchoEngine | None:
    """An EchoEngine for an ONNX file with string tensors whose outputs are all Identity pass-throughs."""
    import onnx

    m = onnx.load(path, load_external_data=False)
    g = m.graph
    inits = {i.name for i in g.initializer}
    vis = [v for v in g.input if v.name not in inits]
    if not any(v.type.tensor_type.elem_type == onnx.TensorProto.STRING for v in [*vis, *g.output]):
        return None
    producer = {o: n for n in g.node for o in n.output}
    names = {v.name for v in vis}
    echo: dict[str, str] = {}
    for v in g.output:
        cur, hops = v.name, 0
        while cur not in names:
            n = producer.get(cur)
            if n is None or n.op_type != "Identity" or n.domain not in ("", "ai.onnx") or hops > 64:
                return None
            cur, hops = n.input[0], hops + 1
        echo[v.name] = cur

    def spec(v: Any) -> TensorSpec:
        from tensorkiln.ir import DType

        tt = v.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim) \
            if tt.HasField("shape") else None
        return TensorSpec(v.name, DType.from_onnx(tt.elem_type).short, shape)

    return EchoEngine([spec(v) for v in vis], [spec(v) for v in g.output], echo)
