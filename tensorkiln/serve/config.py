"""Model configuration: Triton's ``config.pbtxt`` (its ``ModelConfig`` protobuf), parsed, completed
from the model where parts are missing, checked against the engine, and printed as JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2 as mc

from tensorkiln.engine import TensorSpec
from tensorkiln.serve import dtypes
from tensorkiln.serve.status import InvalidArgument, Unsupported

ModelConfig = mc.ModelConfig
PLATFORM = "tensorkiln"
ADAPTIVE_KEY = "tensorkiln_adaptive_batching"  # parameters { key: ... value { string_value: "true" } }


def parse_pbtxt(text: str, where: str) -> Any:
    """Parse ``config.pbtxt`` exactly as Triton does (protobuf text format of ModelConfig)."""
    cfg = mc.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        raise InvalidArgument(f"{where}: {e}") from None
    return cfg


def parse_json(text: str | bytes, where: str) -> Any:
    """A ModelConfig in its JSON form (as sent by a load request's ``config`` parameter)."""
    cfg = mc.ModelConfig()
    try:
        json_format.Parse(text, cfg)
    except (json_format.ParseError, ValueError) as e:
        raise InvalidArgument(f"{where}: {e}") from None
    return cfg


_INT_TYPES = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
              FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}


def to_json(cfg: Message) -> dict[str, Any]:
    """The JSON form Triton serves: proto field names, primitive fields always printed,
    64-bit integers as numbers (json_format would quote them)."""
    d = json_format.MessageToDict(cfg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    _unquote(cfg.DESCRIPTOR, d)
    return d


def _unquote(desc: Any, d: dict[str, Any]) -> None:
    for f in desc.fields:
        if f.name not in d:
            continue
        v = d[f.name]
        if f.type in _INT_TYPES:
            d[f.name] = [int(x) for x in v] if isinstance(v, list) else int(v)
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            mt = f.message_type
            if mt.GetOptions().map_entry:
                vf = mt.fields_by_name["value"]
                if vf.type == FieldDescriptor.TYPE_MESSAGE:
                    for x in v.values():
                        _unquote(vf.message_type, x)
                elif vf.type in _INT_TYPES:
                    for k in list(v):
                        v[k] = int(v[k])
            elif isinstance(v, list):
                for x in v:
                    _unquote(mt, x)
            else:
                _unquote(mt, v)


@dataclass(frozen=True)
class IOSpec:
    name: str
    datatype: str  # protocol name (FP32, BYTES, …)
    dims: tuple[int, ...]  # without the batch dim when max_batch_size > 0; -1 = any size
    optional: bool = False


def _dims_of(spec: TensorSpec, batched: bool) -> tuple[int, ...]:
    shape = spec.shape or ()
    if batched:
        shape = shape[1:]
    return tuple(d if isinstance(d, int) else -1 for d in shape)


def supports_batching(specs: Sequence[TensorSpec]) -> bool:
    return all(s.shape is not None and len(s.shape) >= 1 and not isinstance(s.shape[0], int) for s in specs)


def complete(cfg: Any, name: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
             *, max_batch_given: bool, default_max_batch_size: int) -> Any:
    """Fill what the config leaves out from the engine (Triton's auto-complete) and check the rest."""
    where = f"model {name!r}"
    if cfg.name and cfg.name != name:
        raise InvalidArgument(f"{where}: config.pbtxt names the model {cfg.name!r}; it must match its folder")
    cfg.name = name
    if not cfg.platform and not cfg.backend:
        cfg.platform = PLATFORM
    if cfg.HasField("sequence_batching"):
        raise Unsupported(f"{where}: sequence_batching is not supported")
    if cfg.HasField("ensemble_scheduling"):
        raise Unsupported(f"{where}: ensembles are not supported")
    if cfg.model_transaction_policy.decoupled:
        raise Unsupported(f"{where}: decoupled models are not supported")
    batchable = supports_batching([*inputs, *outputs])
    if not max_batch_given and batchable and default_max_batch_size > 0:
        cfg.max_batch_size = default_max_batch_size
        if not cfg.HasField("dynamic_batching"):
            cfg.dynamic_batching.SetInParent()
    if cfg.max_batch_size < 0:
        raise InvalidArgument(f"{where}: max_batch_size must be >= 0, got {cfg.max_batch_size}")
    batched = cfg.max_batch_size > 0
    if batched and not batchable:
        fixed = [s.name for s in [*inputs, *outputs] if not (s.shape and not isinstance(s.shape[0], int))]
        raise InvalidArgument(f"{where}: max_batch_size is {cfg.max_batch_size} but {fixed} have no variable "
                              "first (batch) dimension; set max_batch_size: 0")
    _complete_io(cfg.input, inputs, batched, where, "input")
    _complete_io(cfg.output, outputs, batched, where, "output")
    if not cfg.instance_group:
        g = cfg.instance_group.add()
        g.count = 1
        g.kind = mc.ModelInstanceGroup.KIND_CPU
    for g in cfg.instance_group:
        if g.kind == mc.ModelInstanceGroup.KIND_GPU:
            raise Unsupported(f"{where}: instance_group kind KIND_GPU is not supported by the CPU engine")
        if g.count < 1:
            g.count = 1
        if g.kind == mc.ModelInstanceGroup.KIND_AUTO:
            g.kind = mc.ModelInstanceGroup.KIND_CPU
        if not g.name:
            g.name = name
    if cfg.HasField("dynamic_batching"):
        db = cfg.dynamic_batching
        if not batched:
            raise InvalidArgument(f"{where}: dynamic_batching needs max_batch_size > 0")
        for p in db.preferred_batch_size:
            if not 0 < p <= cfg.max_batch_size:
                raise InvalidArgument(f"{where}: preferred_batch_size {p} is outside 1..{cfg.max_batch_size}")
        if db.priority_levels and not db.default_priority_level:
            raise InvalidArgument(f"{where}: priority_levels needs default_priority_level (1..priority_levels)")
        if db.default_priority_level > db.priority_levels:
            raise InvalidArgument(f"{where}: default_priority_level {db.default_priority_level} exceeds "
                                  f"priority_levels {db.priority_levels}")
        for level in db.priority_queue_policy:
            if not 1 <= level <= db.priority_levels:
                raise InvalidArgument(f"{where}: priority_queue_policy for level {level} outside "
                                      f"1..{db.priority_levels}")
    if not cfg.HasField("version_policy"):
        cfg.version_policy.latest.num_versions = 1
    return cfg


def _complete_io(items: Any, specs: Sequence[TensorSpec], batched: bool, where: str, kind: str) -> None:
    by_name = {s.name: s for s in specs}
    if not len(items):
        for s in specs:
            it = items.add()
            it.name = s.name
            it.data_type = mc.DataType.Value(dtypes.to_config(_datatype(s, where)))
            it.dims.extend(_dims_of(s, batched))
        return
    seen = set()
    for it in items:
        spec = by_name.get(it.name)
        if spec is None:
            raise InvalidArgument(f"{where}: config {kind} {it.name!r} is not a model {kind}; the model's "
                                  f"{kind}s are {sorted(by_name)}")
        seen.add(it.name)
        if it.HasField("reshape"):
            raise Unsupported(f"{where}: {kind} {it.name!r}: reshape is not supported")
        if kind == "input" and it.is_shape_tensor:
            raise Unsupported(f"{where}: shape tensors are not supported")
        want = _datatype(spec, where)
        if it.data_type == mc.TYPE_INVALID:
            it.data_type = mc.DataType.Value(dtypes.to_config(want))
        got = dtypes.from_config(mc.DataType.Name(it.data_type))
        if got != want:
            raise InvalidArgument(f"{where}: {kind} {it.name!r} has data_type {mc.DataType.Name(it.data_type)} in "
                                  f"the config but the model's is {dtypes.to_config(want)}")
        model_dims = _dims_of(spec, batched)
        if not len(it.dims):
            it.dims.extend(model_dims)
        if spec.shape is not None and len(it.dims) != len(model_dims):
            raise InvalidArgument(f"{where}: {kind} {it.name!r} has dims {list(it.dims)} (without the batch dim) "
                                  f"in the config but the model's are {list(model_dims)}")
        for c, m in zip(it.dims, model_dims):
            if c != -1 and m != -1 and c != m:
                raise InvalidArgument(f"{where}: {kind} {it.name!r} has dims {list(it.dims)} in the config but the "
                                      f"model's are {list(model_dims)}")
    if kind == "input":
        missing = [s.name for s in specs if s.name not in seen]
        if missing:
            raise InvalidArgument(f"{where}: the model's inputs {missing} are missing from the config")


def _datatype(s: TensorSpec, where: str) -> str:
    if s.dtype is None or s.dtype not in dtypes.FROM_ENGINE:
        raise InvalidArgument(f"{where}: tensor {s.name!r} has element type {s.dtype!r}, which cannot be served")
    return dtypes.FROM_ENGINE[s.dtype]


def io_specs(items: Any) -> list[IOSpec]:
    return [IOSpec(it.name, dtypes.from_config(mc.DataType.Name(it.data_type)), tuple(int(d) for d in it.dims),
                   bool(getattr(it, "optional", False))) for it in items]


def adaptive(cfg: Any) -> bool:
    p = cfg.parameters.get(ADAPTIVE_KEY)
    return p is not None and p.string_value.strip().lower() in ("1", "true", "yes", "on")


PAD_KEY = "tensorkiln_pad_batch"  # "auto" or "1,2,4,8": run batches padded with zero rows to these sizes


def pad_sizes(cfg: Any, warmed: list[int]) -> list[int]:
    """Batch sizes to pad executions to (empty: no padding). ``auto``: the sizes warmed first, which the
    engine keeps exact weight packings for."""
    p = cfg.parameters.get(PAD_KEY)
    if p is None or not p.string_value.strip() or p.string_value.strip().lower() in ("0", "false", "off", "no"):
        return []
    v = p.string_value.strip().lower()
    if v in ("auto", "true", "on", "yes", "1"):
        return sorted(set(warmed))
    try:
        sizes = sorted({int(x) for x in v.split(",") if x.strip()})
    except ValueError:
        raise InvalidArgument(f"parameter {PAD_KEY}: expected 'auto' or sizes like '1,2,4,8', got {v!r}") from None
    if not sizes or sizes[0] < 1 or sizes[-1] > cfg.max_batch_size:
        raise InvalidArgument(f"parameter {PAD_KEY}: sizes must lie in 1..{cfg.max_batch_size}, got {sizes}")
    return sizes


def mentions_max_batch_size(text: str) -> bool:
    return re.search(r"(^|[\s{;,])max_batch_size\s*:", text) is not None


def dumps(cfg: Any) -> str:
    return json.dumps(to_json(cfg))
