"""The model repository, in Triton's layout::

    REPO/<model>/config.pbtxt              optional
    REPO/<model>/<version>/model.onnx      or model.tkengine (a tensorkiln engine file)

Model names and file names are checked so that no path leaves the repository (no ``..``, no
separators, symlinks resolved). Loading builds (or loads) each version's engine, completes and
checks the config, warms every instance up at the batch sizes the batcher will use, and only
then marks the model ready.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tensorkiln.engine import Engine, build, load_engine
from tensorkiln.engine.fileformat import is_engine_file
from tensorkiln.errors import UserError
from tensorkiln.serve import config as cfgmod
from tensorkiln.serve.model import EchoEngine, ServedModel, echo_engine_for
from tensorkiln.serve.stats import Metrics
from tensorkiln.serve.status import InvalidArgument, NotFound, ServeError, Unavailable

log = logging.getLogger("tensorkiln.serve")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_VERSION = re.compile(r"^[0-9]{1,18}$")
FILENAMES = ("model.tkengine", "model.onnx")


@dataclass
class ModelEntry:
    name: str
    state: str = "UNAVAILABLE"  # READY, LOADING, UNLOADING, UNAVAILABLE
    reason: str = ""
    versions: dict[str, ServedModel] = field(default_factory=dict)  # version -> served model
    lock: threading.Lock = field(default_factory=threading.Lock)

    def latest(self) -> ServedModel:
        return self.versions[max(self.versions, key=int)]


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise InvalidArgument(f"invalid model name {name!r}: use letters, digits, '_', '-' and '.' "
                              "(not starting with '.')")
    return name


class ModelRepository:
    def __init__(self, root: str | Path, metrics: Metrics, *, default_max_batch_size: int = 4,
                 max_tensor_bytes: int = 256 << 20, build_options: dict[str, Any] | None = None) -> None:
        self.root = Path(root).resolve(strict=False)
        if not self.root.is_dir():
            raise UserError(f"model repository {str(root)!r} is not a directory")
        self.metrics = metrics
        self.default_max_batch_size = default_max_batch_size
        self.max_tensor_bytes = max_tensor_bytes
        self.build_options = dict(build_options or {})
        self.entries: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ paths
    def _inside(self, p: Path) -> Path:
        real = p.resolve(strict=False)
        if real != self.root and self.root not in real.parents:
            raise InvalidArgument(f"path {str(p)!r} leaves the model repository")
        return real

    def model_dir(self, name: str) -> Path:
        d = self._inside(self.root / check_name(name))
        if not d.is_dir():
            raise NotFound(f"model '{name}' is not in the model repository")
        return d

    def names(self) -> list[str]:
        out = []
        for d in sorted(self.root.iterdir()):
            if _NAME.match(d.name) and d.is_dir():
                try:
                    self._inside(d)
                except ServeError:
                    continue
                out.append(d.name)
        return out

    def entry(self, name: str) -> ModelEntry:
        with self._lock:
            e = self.entries.get(name)
            if e is None:
                check_name(name)
                e = self.entries[name] = ModelEntry(name)
            return e

    # ------------------------------------------------------------ lookup
    def get(self, name: str, version: str = "") -> ServedModel:
        e = self.entries.get(name)
        if e is None or (e.state != "READY" and not e.versions):
            if e is not None and e.state in ("LOADING", "UNLOADING"):
                raise Unavailable(f"model '{name}' is {e.state.lower()}")
            if e is not None and e.reason:
                raise Unavailable(f"model '{name}' is not available: {e.reason}")
            raise NotFound(f"Request for unknown model: '{name}' is not found")
        if e.state != "READY":
            raise Unavailable(f"model '{name}' is not ready ({e.state}{': ' + e.reason if e.reason else ''})")
        if version:
            m = e.versions.get(str(int(version)) if version.isdigit() else version)
            if m is None:
                raise NotFound(f"Request for unknown model: '{name}' version {version} is not found")
            return m
        return e.latest()

    def ready_models(self) -> list[ServedModel]:
        return [m for e in list(self.entries.values()) if e.state == "READY" for m in e.versions.values()]

    def all_ready(self) -> bool:
        """Triton's strict readiness: nothing loading, and no model that failed to load."""
        for e in list(self.entries.values()):
            if e.state in ("LOADING", "UNLOADING"):
                return False
            if e.state == "UNAVAILABLE" and e.reason not in ("", "unloaded"):
                return False
        return True

    def index(self) -> list[dict[str, str]]:
        out = []
        for name in sorted(set(self.names()) | set(self.entries)):
            e = self.entries.get(name)
            if e is None or not e.versions:
                out.append({"name": name, "state": e.state if e else "UNAVAILABLE", "reason": e.reason if e else ""})
                continue
            for v in sorted(e.versions, key=int):
                out.append({"name": name, "version": v, "state": e.state, "reason": e.reason})
        return out

    # ------------------------------------------------------------ loading
    def read_config(self, name: str, override: str | None = None) -> tuple[Any, bool]:
        """The model's ModelConfig and whether it sets max_batch_size."""
        d = self.model_dir(name)
        if override is not None:
            return cfgmod.parse_json(override, f"model '{name}': load config"), '"max_batch_size"' in override
        path = self._inside(d / "config.pbtxt")
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            return cfgmod.parse_pbtxt(text, str(path.relative_to(self.root))), cfgmod.mentions_max_batch_size(text)
        return cfgmod.ModelConfig(), False

    def versions_to_load(self, name: str, cfg: Any) -> list[str]:
        d = self.model_dir(name)
        found = sorted(int(p.name) for p in d.iterdir() if _VERSION.match(p.name) and p.is_dir())
        if not found:
            raise InvalidArgument(f"model '{name}' has no numeric version folder (e.g. {name}/1/model.onnx)")
        vp = cfg.version_policy
        which = vp.WhichOneof("policy_choice") if vp.ListFields() else "latest"
        if which == "all":
            chosen = found
        elif which == "specific":
            missing = [v for v in vp.specific.versions if v not in found]
            if missing:
                raise InvalidArgument(f"model '{name}': version_policy names versions {missing} that do not exist")
            chosen = sorted(set(vp.specific.versions))
        else:
            n = max(1, vp.latest.num_versions)
            chosen = found[-n:]
        return [str(v) for v in chosen]

    def model_file(self, name: str, version: str, cfg: Any) -> Path:
        vdir = self._inside(self.model_dir(name) / version)
        names = (cfg.default_model_filename,) if cfg.default_model_filename else FILENAMES
        for fn in names:
            if "/" in fn or "\\" in fn or fn in (".", "..") or not fn:
                raise InvalidArgument(f"model '{name}': default_model_filename {fn!r} must be a plain file name")
            p = self._inside(vdir / fn)
            if p.is_file():
                return p
        raise InvalidArgument(f"model '{name}' version {version}: none of {list(names)} found in "
                              f"{vdir.relative_to(self.root)}")

    def open_engine(self, path: Path) -> Engine | EchoEngine:
        if is_engine_file(str(path)):
            return load_engine(str(path))
        echo = echo_engine_for(str(path))  # BYTES pass-through models need no kernels
        return echo if echo is not None else build(str(path), **self.build_options)

    def load(self, name: str, loop: asyncio.AbstractEventLoop, config_override: str | None = None) -> None:
        """Build, warm up and publish every version of ``name`` (blocking: call it off the loop).

        Serving an earlier load goes on until the new one is ready (a reload swaps atomically)."""
        self.model_dir(name)  # NotFound for names the repository does not hold (and no entry for them)
        e = self.entry(name)
        with e.lock:
            old = dict(e.versions)
            prev_state = e.state
            e.state, e.reason = ("LOADING", "") if not old else (e.state, e.reason)
            try:
                models = self._build(name, config_override)
            except Exception as err:
                msg = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
                log.error("failed to load model %s: %s", name, msg)
                if not old:
                    e.state, e.reason = "UNAVAILABLE", msg
                else:
                    e.state = prev_state
                raise err if isinstance(err, ServeError) else InvalidArgument(
                    f"failed to load '{name}': {msg}") from None
            for m in models.values():
                m.start(loop)  # the batcher is used only on the loop from here on
            e.versions = models
            e.state, e.reason = "READY", ""
        for m in old.values():
            asyncio.run_coroutine_threadsafe(_retire(m), loop)

    def _build(self, name: str, config_override: str | None) -> dict[str, ServedModel]:
        cfg, mbs_given = self.read_config(name, config_override)
        versions = self.versions_to_load(name, cfg)
        models: dict[str, ServedModel] = {}
        done_cfg = None
        for v in versions:
            path = self.model_file(name, v, cfg)
            eng = self.open_engine(path)
            vcfg = cfgmod.ModelConfig()
            vcfg.CopyFrom(cfg)
            vcfg = cfgmod.complete(vcfg, name, eng.inputs, eng.outputs, max_batch_given=mbs_given,
                                   default_max_batch_size=self.default_max_batch_size)
            if done_cfg is None:
                done_cfg = vcfg
            m = ServedModel(name, v, vcfg, eng, self.metrics, self.max_tensor_bytes)
            m.warmup()
            models[v] = m
        return models

    def unload(self, name: str) -> list[ServedModel]:
        e = self.entries.get(name)
        if e is None or not e.versions:
            check_name(name)
            if e is not None:
                e.state, e.reason = "UNAVAILABLE", "unloaded"
            return []
        with e.lock:
            old = list(e.versions.values())
            e.versions = {}
            e.state, e.reason = "UNAVAILABLE", "unloaded"
        return old


async def _retire(m: ServedModel) -> None:
    await m.drain()
    m.close()
