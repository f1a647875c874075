"""The engine file: one self-checking file, never unpickled.

Layout (little endian)::

    magic      12 bytes  b"\\x89TKENGINE\\r\\n\\x1a\\n"
    version    u32       FORMAT_VERSION
    header_len u64       then the JSON header (utf-8)
    weights_len u64      then the weights (safetensors)
    sha256     32 bytes  over everything before it
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tensorkiln.errors import EngineFileError
from tensorkiln.ir.serialize import graph_from_dict, graph_to_dict

if TYPE_CHECKING:
    from tensorkiln.engine.engine import Engine

MAGIC = b"\x89TKENGINE\r\n\x1a\n"
FORMAT_VERSION = 1
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def _version() -> str:
    from tensorkiln import __version__

    return __version__


def engine_to_bytes(engine: Engine) -> bytes:
    from safetensors.numpy import save

    doc, weights = graph_to_dict(engine.graph)
    header = {
        "format": "tensorkiln-engine",
        "format_version": FORMAT_VERSION,
        "tensorkiln_version": _version(),
        "target": engine.target,
        "build_config": engine.config.to_json(),
        "source": engine.source,
        "inputs": [_spec(s) for s in engine.inputs],
        "outputs": [_spec(s) for s in engine.outputs],
        "steps": engine.steps(),
        "build_reports": engine.build_reports,
        "ir": doc,
    }
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # safetensors needs unique, non-empty keys; zero-dim arrays are fine
    wbytes = save({k: np.require(v, requirements="C") for k, v in weights.items()}) if weights else b""
    body = b"".join([
        MAGIC, _U32.pack(FORMAT_VERSION), _U64.pack(len(hbytes)), hbytes,
        _U64.pack(len(wbytes)), wbytes,
    ])
    return body + hashlib.sha256(body).digest()


def _spec(s: Any) -> dict[str, Any]:
    return {"name": s.name, "dtype": s.dtype, "shape": list(s.shape) if s.shape is not None else None}


def save_engine(engine: Engine, path: str | os.PathLike[str]) -> None:
    data = engine_to_bytes(engine)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tkengine-", dir=str(p.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)  # atomic: a crash never leaves a half-written engine
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_header(data: bytes, where: str) -> tuple[dict[str, Any], bytes]:
    """Check magic, version, lengths and checksum; return (header, weight bytes)."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise EngineFileError(
            f"{where} is not a tensorkiln engine file (bad magic bytes); build one with "
            "`tensorkiln build MODEL -o ENGINE`"
        )
    pos = len(MAGIC)
    fixed = pos + _U32.size + _U64.size
    if len(data) < fixed:
        raise EngineFileError(f"{where} is truncated ({len(data)} bytes): the header is cut off")
    (version,) = _U32.unpack_from(data, pos)
    if version != FORMAT_VERSION:
        raise EngineFileError(
            f"{where} has engine format version {version}; this tensorkiln ({_version()}) "
            f"reads version {FORMAT_VERSION}. Rebuild the engine from the model."
        )
    pos += _U32.size
    (hlen,) = _U64.unpack_from(data, pos)
    pos += _U64.size
    if pos + hlen + _U64.size > len(data):
        raise EngineFileError(
            f"{where} is truncated: header says {hlen} header bytes, file has {len(data)} in all"
        )
    hbytes = data[pos : pos + hlen]
    pos += hlen
    (wlen,) = _U64.unpack_from(data, pos)
    pos += _U64.size
    if pos + wlen + 32 != len(data):
        raise EngineFileError(
            f"{where} is truncated or has trailing bytes: expected {pos + wlen + 32} bytes, "
            f"found {len(data)}"
        )
    wbytes = data[pos : pos + wlen]
    digest = data[pos + wlen :]
    if hashlib.sha256(data[: pos + wlen]).digest() != digest:
        raise EngineFileError(f"{where} is corrupt: its sha256 checksum does not match its contents")
    try:
        header = json.loads(hbytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EngineFileError(f"{where}: engine header is not valid JSON: {e}") from None
    if not isinstance(header, dict) or header.get("format") != "tensorkiln-engine":
        raise EngineFileError(f"{where}: engine header lacks the tensorkiln-engine format tag")
    return header, wbytes


def engine_from_bytes(data: bytes, where: str = "engine", **overrides: Any) -> Engine:
    from safetensors.numpy import load

    from tensorkiln.engine.engine import BuildConfig, Engine

    header, wbytes = read_header(data, where)
    try:
        weights = load(wbytes) if wbytes else {}
        # own, writable copies: the kernels share them instead of copying again
        weights = {k: np.require(v, requirements=["C", "W", "A"]) for k, v in weights.items()}
    except Exception as e:
        raise EngineFileError(f"{where}: the weights section is unreadable: {e}") from None
    graph = graph_from_dict(header["ir"], weights)
    try:
        cfg = BuildConfig(**header.get("build_config", {}))
    except TypeError as e:
        raise EngineFileError(f"{where}: unknown build option in the header: {e}") from None
    allowed = {"threads", "streams"}
    bad = set(overrides) - allowed
    if bad:
        from tensorkiln.errors import OptionError

        raise OptionError(f"load() takes only {sorted(allowed)} as run-time options, got {sorted(bad)}")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    cfg = BuildConfig.from_options(vars(cfg))
    engine = Engine(graph, cfg, header.get("target", {}), header.get("source", {}))
    reports = header.get("build_reports", {})
    engine.build_reports = reports if isinstance(reports, dict) else {}
    return engine


def load_engine(path: str | os.PathLike[str], **overrides: Any) -> Engine:
    """Load an engine file; ``threads=`` and ``streams=`` may be set for this process."""
    p = Path(path)
    if not p.is_file():
        raise EngineFileError(f"engine file {str(p)!r} does not exist")
    return engine_from_bytes(p.read_bytes(), repr(str(p)), **overrides)


def is_engine_file(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False
