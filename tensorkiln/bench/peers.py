"""Peer runtimes run in the same process on the same inputs: onnxruntime, OpenVINO, torch eager.

Each peer gets the same intra-op thread count as the engine. A peer that cannot run (package
missing, model not from the zoo for torch eager, the peer rejects the model) is skipped with a
sentence saying why; the bench goes on without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PEERS = ("ort", "openvino", "torch")
LABELS = {"ort": "onnxruntime", "openvino": "OpenVINO", "torch": "torch eager", "tensorkiln": "tensorkiln"}


@dataclass
class Peer:
    name: str
    version: str
    run: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)


class PeerSkipped(Exception):
    """A peer cannot run here; the message says why."""


def parse_peers(spec: str) -> list[str]:
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    alias = {"onnxruntime": "ort", "ov": "openvino", "torch-eager": "torch", "eager": "torch"}
    names = [alias.get(n, n) for n in names]
    bad = [n for n in names if n not in PEERS]
    if bad:
        from tensorkiln.errors import OptionError

        raise OptionError(f"--compare: unknown peer(s) {bad}; peers are {', '.join(PEERS)}")
    return list(dict.fromkeys(names))


def open_peer(name: str, onnx_path: Path | None, zoo_name: str | None, threads: int) -> Peer:
    """Make peer ``name`` ready to run, or raise PeerSkipped with the reason."""
    if name == "torch":
        return _torch_peer(zoo_name, threads)
    if onnx_path is None:
        raise PeerSkipped(f"{LABELS[name]} needs the ONNX model, and this engine's source model is not on disk")
    if name == "ort":
        return _ort_peer(onnx_path, threads)
    if name == "openvino":
        return _openvino_peer(onnx_path, threads)
    raise PeerSkipped(f"unknown peer {name!r}")


def _ort_peer(path: Path, threads: int) -> Peer:
    try:
        import onnxruntime as ort
    except ImportError:
        raise PeerSkipped("onnxruntime is not installed (pip install 'tensorkiln[compare]')") from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise PeerSkipped(f"onnxruntime cannot load the model: {str(e).splitlines()[0][:200]}") from None
    names = [o.name for o in sess.get_outputs()]

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, sess.run(names, dict(feeds))))

    return Peer("ort", ort.__version__, run)


def _openvino_peer(path: Path, threads: int) -> Peer:
    try:
        import openvino as ov
    except ImportError:
        raise PeerSkipped("openvino is not installed (pip install 'tensorkiln[compare]')") from None
    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except Exception as e:
        raise PeerSkipped(f"OpenVINO cannot read the model: {str(e).splitlines()[0][:200]}") from None
    compiled: dict[tuple[tuple[str, tuple[int, ...]], ...], Any] = {}
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        key = tuple(sorted((k, tuple(np.shape(v))) for k, v in feeds.items()))
        req = compiled.get(key)
        if req is None:  # one static-shape compile per input shape (what a user would deploy)
            m = model.clone()
            m.reshape({k: ov.PartialShape(list(s)) for k, s in key})
            req = core.compile_model(m, "CPU", config).create_infer_request()
            compiled[key] = req
        res = req.infer(dict(feeds))
        return {o.get_any_name(): np.asarray(res[o]) for o in req.model_outputs}

    return Peer("openvino", ov.__version__ if hasattr(ov, "__version__") else ov.get_version(), run)


def _torch_peer(zoo_name: str | None, threads: int) -> Peer:
    if zoo_name is None:
        raise PeerSkipped("torch eager runs only zoo models (tensorkiln.zoo.module); this model is not one")
    import torch

    from tensorkiln import zoo

    module = zoo.module(zoo_name).eval()
    in_names = [s.name for s in zoo.info(zoo_name).inputs]
    out_names = [s.name for s in zoo.info(zoo_name).outputs]

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            r = module(*[torch.from_numpy(np.asarray(feeds[n])) for n in in_names])
        rs = r if isinstance(r, (tuple, list)) else (r,)
        return {n: t.detach().numpy() for n, t in zip(out_names, rs)}

    return Peer("torch", torch.__version__, run)


def agreement(ours: Mapping[str, np.ndarray], theirs: Mapping[str, np.ndarray]) -> float | None:
    """Largest abs difference over the outputs both produce, relative to our largest value."""
    worst: float | None = None
    for k, a in ours.items():
        b = theirs.get(k)
        if b is None or np.shape(a) != np.shape(b) or np.asarray(a).dtype.kind not in "fc":
            continue
        scale = float(np.max(np.abs(a))) or 1.0
        d = float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) / scale
        worst = d if worst is None else max(worst, d)
    return worst
