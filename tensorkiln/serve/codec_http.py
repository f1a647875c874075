"""The HTTP/REST inference body: JSON tensors and the binary tensor data extension.

A request's JSON header may be followed by binary input data (``Inference-Header-Content-Length``
gives the header's length); outputs come back as JSON ``data`` or as binary data after the JSON
header, per output (``parameters.binary_data``) or per request (``binary_data_output``).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tensorkiln.serve import dtypes
from tensorkiln.serve.model import InferRequest, ServedModel
from tensorkiln.serve.status import InvalidArgument, PayloadTooLarge, Unsupported


@dataclass
class OutputOptions:
    binary_default: bool = False
    binary: dict[str, bool] = field(default_factory=dict)  # per requested output
    has_id: bool = False


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    if enc == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif enc == "deflate":
        wbits = zlib.MAX_WBITS  # zlib stream (what tritonclient sends); raw deflate tried below
    else:
        raise Unsupported(f"unsupported Content-Encoding {encoding!r}; use gzip or deflate")
    for wb in (wbits, -zlib.MAX_WBITS) if enc == "deflate" else (wbits,):
        d = zlib.decompressobj(wb)
        try:
            out = d.decompress(body, limit + 1)
        except zlib.error as e:
            if wb == wbits and enc == "deflate":
                continue
            raise InvalidArgument(f"cannot decompress the {enc} request body: {e}") from None
        if len(out) > limit or d.unconsumed_tail:
            raise PayloadTooLarge(f"the decompressed request body is over the limit of {limit} bytes")
        if not d.eof:
            raise InvalidArgument(f"the {enc} request body is truncated")
        return out
    raise InvalidArgument(f"cannot decompress the {enc} request body")


def compress(body: bytes, accept: str) -> tuple[bytes, str | None]:
    """Compress a response only when the client asked for exactly one of gzip/deflate (as tritonclient does)."""
    acc = accept.strip().lower()
    if acc == "gzip":
        c = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return c.compress(body) + c.flush(), "gzip"
    if acc == "deflate":
        return zlib.compress(body, 1), "deflate"
    return body, None


def _int_param(params: dict[str, Any], key: str, where: str) -> int:
    v = params.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise InvalidArgument(f"{where}: parameter '{key}' must be a non-negative integer, got {v!r}")
    return v


def parse_infer(body: bytes, header_length: str | None, model: ServedModel) -> tuple[InferRequest, OutputOptions]:
    hl: int | None = None
    if header_length is not None:
        try:
            hl = int(header_length)
        except ValueError:
            raise InvalidArgument(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") \
                from None
        if not 0 <= hl <= len(body):
            raise InvalidArgument(f"Inference-Header-Content-Length {hl} is outside the body's {len(body)} bytes")
    if hl == 0:
        return _raw_request(body, model), OutputOptions(binary_default=True)
    head = body if hl is None else body[:hl]
    binary = memoryview(body)[hl:] if hl is not None else memoryview(b"")
    try:
        j = json.loads(head)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"failed to parse the request JSON buffer: {e}") from None
    if not isinstance(j, dict):
        raise InvalidArgument("the inference request must be a JSON object")
    rid = j.get("id", None)
    if rid is not None and not isinstance(rid, str):
        raise InvalidArgument(f"'id' must be a string, got {type(rid).__name__}")
    params = j.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidArgument("'parameters' must be a JSON object")
    opts = OutputOptions(has_id=rid is not None)
    bdo = params.get("binary_data_output", False)
    if not isinstance(bdo, bool):
        raise InvalidArgument("parameter 'binary_data_output' must be a boolean")
    opts.binary_default = bdo
    if params.get("sequence_id") not in (None, 0, ""):
        raise InvalidArgument(f"model '{model.name}' has no sequence batching; 'sequence_id' is not allowed")
    priority = _int_param(params, "priority", "request")
    timeout = _int_param(params, "timeout", "request")
    ins = j.get("inputs")
    if not isinstance(ins, list) or not ins:
        raise InvalidArgument("the request needs a non-empty 'inputs' array")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for k, t in enumerate(ins):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise InvalidArgument(f"inputs[{k}] must be an object with a string 'name'")
        name = t["name"]
        where = f"input '{name}'"
        if name in inputs:
            raise InvalidArgument(f"{where} is given twice")
        shape = dtypes.check_shape(t.get("shape"), where)
        dt = dtypes.check_datatype(t.get("datatype"), where)
        tp = t.get("parameters") or {}
        if not isinstance(tp, dict):
            raise InvalidArgument(f"{where}: 'parameters' must be an object")
        if "shared_memory_region" in tp:
            raise InvalidArgument(f"{where}: shared memory regions are not supported by this server")
        if "binary_data_size" in tp:
            size = tp["binary_data_size"]
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidArgument(f"{where}: binary_data_size must be a non-negative integer")
            if "data" in t:
                raise InvalidArgument(f"{where} has both 'data' and binary_data_size")
            if offset + size > len(binary):
                raise InvalidArgument(f"{where}: binary_data_size {size} runs past the end of the body "
                                      f"({len(binary) - offset} bytes left)")
            arr = dtypes.from_bytes(binary[offset:offset + size], dt, shape, where)
            offset += size
        elif "data" in t:
            arr = dtypes.from_json(t["data"], dt, shape, where)
        else:
            raise InvalidArgument(f"{where} has neither 'data' nor binary_data_size")
        inputs[name] = arr
        datatypes[name] = dt
    if offset != len(binary):
        raise InvalidArgument(f"{len(binary) - offset} unexpected bytes of binary data after the inputs")
    outs_req = j.get("outputs")
    names: list[str] | None = None
    if outs_req is not None:
        if not isinstance(outs_req, list):
            raise InvalidArgument("'outputs' must be an array")
        names = []
        for k, o in enumerate(outs_req):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise InvalidArgument(f"outputs[{k}] must be an object with a string 'name'")
            op = o.get("parameters") or {}
            if not isinstance(op, dict):
                raise InvalidArgument(f"output '{o['name']}': 'parameters' must be an object")
            if op.get("classification"):
                raise InvalidArgument("the classification extension is not supported by this server")
            if "shared_memory_region" in op:
                raise InvalidArgument("shared memory regions are not supported by this server")
            if "binary_data" in op:
                if not isinstance(op["binary_data"], bool):
                    raise InvalidArgument(f"output '{o['name']}': binary_data must be a boolean")
                opts.binary[o["name"]] = op["binary_data"]
            names.append(o["name"])
    req = InferRequest(inputs, datatypes, names, rid or "", priority, timeout, params)
    return req, opts


def _raw_request(body: bytes, model: ServedModel) -> InferRequest:
    """``Inference-Header-Content-Length: 0``: the body is the raw data of the only input, batch 1."""
    if len(model.inputs) != 1 or -1 in model.inputs[0].dims:
        raise InvalidArgument("a raw binary request (header length 0) needs a model with exactly one input of "
                              "fixed shape")
    s = model.inputs[0]
    shape = ((1,) if model.max_batch_size > 0 else ()) + s.dims
    arr = dtypes.from_bytes(body, s.datatype, shape, f"input '{s.name}'")
    return InferRequest({s.name: arr}, {s.name: s.datatype})


def encode_response(model: ServedModel, req: InferRequest, opts: OutputOptions,
                    outputs: dict[str, np.ndarray]) -> tuple[bytes, int | None]:
    """-> (body, JSON header length when binary data follows it)."""
    types = {s.name: s.datatype for s in model.outputs}
    jouts = []
    blobs = []
    for name, a in outputs.items():
        dt = types.get(name) or dtypes.of_array(a)
        binary = opts.binary.get(name, opts.binary_default) or dt in dtypes.BINARY_ONLY
        o: dict[str, Any] = {"name": name, "datatype": dt, "shape": list(a.shape)}
        if binary:
            b = dtypes.to_bytes(a, dt)
            o["parameters"] = {"binary_data_size": len(b)}
            blobs.append(b)
        else:
            o["data"] = dtypes.to_json(a, dt)
        jouts.append(o)
    resp: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if opts.has_id:
        resp["id"] = req.id
    resp["outputs"] = jouts
    head = json.dumps(resp, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)
