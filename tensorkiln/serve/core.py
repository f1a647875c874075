"""What the HTTP and gRPC front ends share: the repository, requests, statistics, metadata."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from tensorkiln.serve import config as cfgmod
from tensorkiln.serve.model import InferRequest, ServedModel
from tensorkiln.serve.repository import ModelRepository, check_name
from tensorkiln.serve.stats import Metrics
from tensorkiln.serve.status import InvalidArgument, NotFound, Unavailable, Unsupported

log = logging.getLogger("tensorkiln.serve")

EXTENSIONS = ["binary_tensor_data", "statistics", "model_repository", "model_repository(unload_dependents)",
              "schedule_policy", "model_configuration"]


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    http_port: int | None = 8000  # None: no HTTP server; 0: pick a free port
    grpc_port: int | None = 8001
    max_body_bytes: int = 256 << 20  # HTTP request body (after decompression) and gRPC message size
    max_tensor_bytes: int = 256 << 20  # all input tensors of one request together
    default_max_batch_size: int = 4  # Triton's auto-complete default for batchable models
    load_models: bool = True  # load every model in the repository at start
    shutdown_grace_s: float = 30.0
    build_options: dict[str, Any] | None = None


class ServerCore:
    def __init__(self, repo_path: str, options: ServerOptions) -> None:
        self.options = options
        self.metrics = Metrics(lambda: [m.stats for m in self.repository.ready_models()])
        self.repository = ModelRepository(repo_path, self.metrics,
                                          default_max_batch_size=options.default_max_batch_size,
                                          max_tensor_bytes=options.max_tensor_bytes,
                                          build_options=options.build_options)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.live = True
        self.draining = False
        self._inflight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    # ---------------------------------------------------------------- health
    def ready(self) -> bool:
        return self.live and not self.draining and self.repository.all_ready()

    def model_ready(self, name: str, version: str = "") -> bool:
        try:
            self.repository.get(name, version)
            return True
        except (NotFound, Unavailable, InvalidArgument):
            return False

    def server_metadata(self) -> dict[str, Any]:
        from tensorkiln import __version__

        return {"name": "tensorkiln", "version": __version__, "extensions": EXTENSIONS}

    def model(self, name: str, version: str = "") -> ServedModel:
        return self.repository.get(name, version)

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        m = self.model(name, version)
        e = self.repository.entries[name]
        return m.metadata(sorted(e.versions, key=int))

    def model_config(self, name: str, version: str = "") -> dict[str, Any]:
        return cfgmod.to_json(self.model(name, version).config)

    # ---------------------------------------------------------------- infer
    async def infer(self, model: ServedModel, req: InferRequest) -> dict[str, Any]:
        if self.draining:
            raise Unavailable("the server is shutting down")
        self._inflight += 1
        self._quiet.clear()
        try:
            return await model.infer(req)
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._quiet.set()

    # ------------------------------------------------------------ statistics
    def statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        if not name:
            if version:
                raise InvalidArgument("a model version needs a model name")
            return {"model_stats": [m.stats.to_json() for m in self.repository.ready_models()]}
        if name not in self.repository.entries or not self.repository.entries[name].versions:
            raise NotFound(f"requested model '{name}' is not found or not ready")
        e = self.repository.entries[name]
        if version:
            m = e.versions.get(version)
            if m is None:
                raise NotFound(f"requested model '{name}' version {version} is not found or not ready")
            return {"model_stats": [m.stats.to_json()]}
        return {"model_stats": [e.versions[v].stats.to_json() for v in sorted(e.versions, key=int)]}

    # ------------------------------------------------------------ repository
    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        rows = self.repository.index()
        return [r for r in rows if r["state"] == "READY"] if ready_only else rows

    async def load_model(self, name: str, parameters: dict[str, Any] | None = None) -> None:
        check_name(name)
        params = dict(parameters or {})
        override = params.pop("config", None)
        if any(k.startswith("file:") for k in params):
            raise Unsupported("loading model files sent in the request is not supported; put them in the repository")
        if isinstance(override, bytes):
            override = override.decode("utf-8", errors="replace")
        if override is not None and not isinstance(override, str):
            raise InvalidArgument("load parameter 'config' must be a JSON string")
        assert self.loop is not None
        await asyncio.to_thread(self.repository.load, name, self.loop, override)

    async def unload_model(self, name: str) -> None:
        check_name(name)
        if name not in self.repository.entries and name not in self.repository.names():
            raise InvalidArgument(f"failed to unload '{name}', no version is available")
        for m in self.repository.unload(name):
            await m.drain()
            m.close()

    async def load_all(self) -> None:
        for name in self.repository.names():
            try:
                await self.load_model(name)
            except Exception as e:  # keep serving the models that load
                log.error("model %s failed to load: %s", name, e)

    async def drain(self) -> None:
        """Refuse new requests, then wait until every request already admitted is answered."""
        self.draining = True
        for m in self.repository.ready_models():
            await m.drain()
        await self._quiet.wait()

    def close(self) -> None:
        for m in self.repository.ready_models():
            m.close()
