"""Autotuning inside build(): inputs at the tuning shapes, timing cache, pinned tactics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tensorkiln.autotune import TimingCache, default_cache_path, tune_graph
from tensorkiln.backends.cpu.ops_fused import tactics_for
from tensorkiln.backends.cpu.registry import REGISTRY
from tensorkiln.errors import OptionError
from tensorkiln.ir import DType

if TYPE_CHECKING:
    from tensorkiln.engine.engine import Engine


def tuning_inputs(engine: Engine) -> list[torch.Tensor]:
    """Random inputs at the first profile's opt shapes, else with every unknown dim = 1."""
    rng = np.random.default_rng(0)
    opt = engine.profiles.profiles[0].opt if engine.profiles is not None else {}
    out = []
    for s in engine.inputs:
        if s.name in opt:
            shape = tuple(opt[s.name])
        else:
            shape = tuple(d if isinstance(d, int) else 1 for d in (s.shape or ()))
        dt = DType.from_name(s.dtype) if s.dtype else DType.FLOAT32
        if dt.is_float:
            arr = rng.standard_normal(shape).astype(dt.to_numpy())
        elif dt == DType.BOOL:
            arr = np.ones(shape, bool)
        else:
            arr = np.ones(shape, dt.to_numpy()) if "mask" in s.name.lower() else \
                rng.integers(0, 100, shape).astype(dt.to_numpy())
        out.append(torch.from_numpy(arr))
    return out


def load_pinned(path: str) -> dict[str, str]:
    """``{node: tactic}``, or a build report (``tensorkiln build --report``) to replay."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise OptionError(f"tactics file {path!r} is unreadable: {e}") from None
    if isinstance(doc, dict) and "tuning" in doc:
        return {r["node"]: r["chosen"] for r in doc["tuning"]}
    if isinstance(doc, dict) and all(isinstance(v, str) for v in doc.values()):
        return {str(k): v for k, v in doc.items()}
    raise OptionError(f"tactics file {path!r}: expected {{node: tactic}} or a build report")


def autotune(engine: Engine) -> list[dict[str, Any]]:
    cfg = engine.config
    if not any(len(tactics_for(s.node)) > 1 for s in engine._program.steps):
        return []
    pinned = load_pinned(cfg.tactics_file) if cfg.tactics_file else {}
    if cfg.opt_level == 0 and not pinned:
        return []
    path = None if cfg.timing_cache == "" else Path(cfg.timing_cache) if cfg.timing_cache else \
        default_cache_path(engine.target)
    cache = TimingCache(path, engine.target)
    level = max(cfg.opt_level, 1)
    inputs = tuning_inputs(engine)
    try:
        engine._program(inputs)  # the model must run at the tuning shapes (unknown dims are 1)
    except Exception as e:
        engine.tuning_stats = {"skipped": f"the model does not run at the tuning shapes ({type(e).__name__}: "
                                          f"{str(e)[:200]}); give an optimization profile (shapes=) to tune"}
        return []
    if cfg.progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("timing tactics", total=None)

            def progress(done: int, total: int, name: str) -> None:
                bar.update(task, completed=done, total=total, description=f"timing tactics ({name[-30:]})")

            records = tune_graph(engine._program, inputs, REGISTRY, cache, level, cfg.tune_budget_s, pinned, progress)
    else:
        records = tune_graph(engine._program, inputs, REGISTRY, cache, level, cfg.tune_budget_s, pinned)
    cache.save()
    engine._lower()  # kernels with the chosen tactics
    out = [r.to_json() for r in records]
    for r in out:
        r.pop("signature", None)
    engine.tuning_stats = {"cache_path": str(path) if path else None, "cache_hits": cache.hits,
                           "cache_misses": cache.misses}
    return out
