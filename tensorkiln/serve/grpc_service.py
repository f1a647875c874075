"""KServe v2 over gRPC: ``inference.GRPCInferenceService`` on grpc.aio, with the generated stubs
that tritonclient ships (``tritonclient.grpc.service_pb2(_grpc)``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pbg

from tensorkiln.serve import dtypes
from tensorkiln.serve.core import ServerCore
from tensorkiln.serve.model import InferRequest, ServedModel
from tensorkiln.serve.status import InvalidArgument, ServeError

log = logging.getLogger("tensorkiln.serve")

# typed `contents` field per datatype
_CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def _param_value(p: Any) -> Any:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def decode_request(r: Any, model: ServedModel) -> InferRequest:
    params = {k: _param_value(v) for k, v in r.parameters.items()}
    for key in ("priority", "timeout"):
        v = params.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InvalidArgument(f"parameter '{key}' must be a non-negative integer, got {v!r}")
    if params.get("sequence_id") not in (None, 0, ""):
        raise InvalidArgument(f"model '{model.name}' has no sequence batching; 'sequence_id' is not allowed")
    if not r.inputs:
        raise InvalidArgument("the request has no inputs")
    raw = list(r.raw_input_contents)
    if raw and len(raw) != len(r.inputs):
        raise InvalidArgument(f"expected {len(r.inputs)} raw_input_contents (one per input), got {len(raw)}")
    inputs: dict[str, np.ndarray] = {}
    types: dict[str, str] = {}
    for k, t in enumerate(r.inputs):
        where = f"input '{t.name}'"
        if t.name in inputs:
            raise InvalidArgument(f"{where} is given twice")
        dt = dtypes.check_datatype(t.datatype, where)
        shape = dtypes.check_shape(list(t.shape), where)
        if "shared_memory_region" in t.parameters:
            raise InvalidArgument(f"{where}: shared memory regions are not supported by this server")
        has_contents = t.HasField("contents")
        if raw:
            if has_contents:
                raise InvalidArgument(f"{where} has both contents and raw_input_contents")
            arr = dtypes.from_bytes(raw[k], dt, shape, where)
        elif has_contents:
            if dt in dtypes.BINARY_ONLY:
                raise InvalidArgument(f"{where}: {dt} data must be sent in raw_input_contents")
            vals = list(getattr(t.contents, _CONTENTS[dt]))
            n = dtypes.numel(shape)
            if len(vals) != n:
                raise InvalidArgument(f"{where}: unexpected element count {len(vals)} for shape {list(shape)}, "
                                      f"expected {n}")
            if dt == "BYTES":
                arr = np.empty(n, dtype=object)
                arr[:] = vals
                arr = arr.reshape(shape)
            else:
                try:
                    arr = np.array(vals, dtype=dtypes.NUMPY[dt]).reshape(shape)
                except (OverflowError, ValueError) as e:
                    raise InvalidArgument(f"{where}: {e}") from None
        else:
            raise InvalidArgument(f"{where} has no data")
        inputs[t.name] = arr
        types[t.name] = dt
    outs = [o.name for o in r.outputs] or None
    for o in r.outputs:
        if "classification" in o.parameters:
            raise InvalidArgument("the classification extension is not supported by this server")
    return InferRequest(inputs, types, outs, r.id, int(params.get("priority") or 0),
                        int(params.get("timeout") or 0), params)


def encode_response(model: ServedModel, req: InferRequest, outputs: dict[str, np.ndarray]) -> Any:
    resp = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=req.id)
    types = {s.name: s.datatype for s in model.outputs}
    for name, a in outputs.items():
        dt = types.get(name) or dtypes.of_array(a)
        o = resp.outputs.add()
        o.name = name
        o.datatype = dt
        o.shape.extend(a.shape)
        resp.raw_output_contents.append(dtypes.to_bytes(a, dt))
    return resp


class InferenceServicer(pbg.GRPCInferenceServiceServicer):
    def __init__(self, core: ServerCore) -> None:
        self.core = core

    async def _fail(self, context: grpc.aio.ServicerContext, e: Exception) -> None:
        if isinstance(e, ServeError):
            await context.abort(getattr(grpc.StatusCode, e.grpc_code), str(e))
        log.exception("internal error in a gRPC call")
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}")

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self.core.live)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.core.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=self.core.model_ready(request.name, request.version))

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        md = self.core.server_metadata()
        return pb.ServerMetadataResponse(name=md["name"], version=md["version"], extensions=md["extensions"])

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            md = self.core.model_metadata(request.name, request.version)
        except Exception as e:
            await self._fail(context, e)
        resp = pb.ModelMetadataResponse(name=md["name"], versions=md["versions"], platform=md["platform"])
        for key, field in (("inputs", resp.inputs), ("outputs", resp.outputs)):
            for t in md[key]:
                field.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return resp

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        try:
            cfg = self.core.model(request.name, request.version).config
        except Exception as e:
            await self._fail(context, e)
        out = mc.ModelConfig()
        out.CopyFrom(cfg)
        return pb.ModelConfigResponse(config=out)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        try:
            stats = self.core.statistics(request.name, request.version)
        except Exception as e:
            await self._fail(context, e)
        resp = pb.ModelStatisticsResponse()
        for s in stats["model_stats"]:
            ms = resp.model_stats.add(name=s["name"], version=s["version"], last_inference=s["last_inference"],
                                      inference_count=s["inference_count"], execution_count=s["execution_count"])
            for k, v in s["inference_stats"].items():
                getattr(ms.inference_stats, k).CopyFrom(pb.StatisticDuration(count=v["count"], ns=v["ns"]))
            for b in s["batch_stats"]:
                bs = ms.batch_stats.add(batch_size=b["batch_size"])
                for k in ("compute_input", "compute_infer", "compute_output"):
                    getattr(bs, k).CopyFrom(pb.StatisticDuration(count=b[k]["count"], ns=b[k]["ns"]))
        return resp

    async def _infer(self, request: Any) -> Any:
        model = self.core.model(request.model_name, request.model_version)
        model.reject_if_full(time.perf_counter_ns())  # before decoding the tensors
        req = decode_request(request, model)
        outputs = await self.core.infer(model, req)
        return encode_response(model, req, outputs)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        try:
            return await self._infer(request)
        except Exception as e:
            await self._fail(context, e)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        out: asyncio.Queue[Any] = asyncio.Queue()
        tasks: set[asyncio.Task[Any]] = set()

        async def one(r: Any) -> None:
            try:
                await out.put(pb.ModelStreamInferResponse(infer_response=await self._infer(r)))
            except ServeError as e:
                await out.put(pb.ModelStreamInferResponse(error_message=str(e),
                                                          infer_response=pb.ModelInferResponse(id=r.id)))
            except Exception as e:
                log.exception("internal error in a stream request")
                await out.put(pb.ModelStreamInferResponse(error_message=f"internal error: {e}"))

        async def reader() -> None:
            async for r in request_iterator:
                t = asyncio.get_running_loop().create_task(one(r))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*list(tasks))
            await out.put(None)

        rt = asyncio.get_running_loop().create_task(reader())
        try:
            while True:
                item = await out.get()
                if item is None:
                    break
                yield item
        finally:
            rt.cancel()
            for t in list(tasks):
                t.cancel()

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        resp = pb.RepositoryIndexResponse()
        for row in self.core.repository_index(request.ready):
            resp.models.add(name=row["name"], version=row.get("version", ""), state=row["state"],
                            reason=row["reason"])
        return resp

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        try:
            params = {k: (v.string_param if v.WhichOneof("parameter_choice") == "string_param"
                          else _param_value(v)) for k, v in request.parameters.items()}
            await self.core.load_model(request.model_name, params)
        except Exception as e:
            await self._fail(context, e)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        try:
            await self.core.unload_model(request.model_name)
        except Exception as e:
            await self._fail(context, e)
        return pb.RepositoryModelUnloadResponse()


def add_to_server(core: ServerCore, server: Any) -> None:
    pbg.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(core), server)
