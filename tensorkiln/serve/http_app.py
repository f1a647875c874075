"""KServe v2 over HTTP/REST: a Starlette ASGI app (served by uvicorn, mountable elsewhere)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tensorkiln.serve import codec_http
from tensorkiln.serve.core import ServerCore
from tensorkiln.serve.status import InvalidArgument, PayloadTooLarge, ServeError

log = logging.getLogger("tensorkiln.serve")
Handler = Callable[[Request], Awaitable[Response]]
_EMPTY = b""


def _error(status: int, msg: str) -> Response:
    return Response(json.dumps({"error": msg}), status_code=status, media_type="application/json")


def _json(obj: Any) -> Response:
    return Response(json.dumps(obj, separators=(",", ":")), media_type="application/json")


def _guard(fn: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except ServeError as e:
            return _error(e.http_status, str(e))
        except ClientDisconnect:  # the client went away mid-body: nobody to answer
            return _error(400, "client disconnected")
        except Exception as e:  # never answer with a non-JSON error
            log.exception("internal error on %s", request.url.path)
            return _error(500, f"internal error: {type(e).__name__}: {e}")

    return wrapped


def make_app(core: ServerCore) -> Starlette:
    limit = core.options.max_body_bytes

    async def read_body(request: Request) -> bytes:
        cl = request.headers.get("content-length")
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                raise InvalidArgument(f"bad Content-Length {cl!r}") from None
            if n > limit:
                raise PayloadTooLarge(f"request body of {n} bytes is over the limit of {limit} bytes")
        chunks = []
        size = 0
        async for c in request.stream():
            size += len(c)
            if size > limit:
                raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
            chunks.append(c)
        body = b"".join(chunks)
        enc = request.headers.get("content-encoding")
        return codec_http.decompress(body, enc, limit) if enc else body

    def version_of(request: Request) -> str:
        v = request.path_params.get("version")
        return "" if v is None else str(v)

    async def live(request: Request) -> Response:
        return Response(_EMPTY, status_code=200 if core.live else 400)

    async def ready(request: Request) -> Response:
        return Response(_EMPTY, status_code=200 if core.ready() else 400)

    async def server_metadata(request: Request) -> Response:
        return _json(core.server_metadata())

    async def model_ready(request: Request) -> Response:
        ok = core.model_ready(request.path_params["model"], version_of(request))
        return Response(_EMPTY, status_code=200) if ok else _error(400, "model is not ready")

    async def model_metadata(request: Request) -> Response:
        return _json(core.model_metadata(request.path_params["model"], version_of(request)))

    async def model_config(request: Request) -> Response:
        return _json(core.model_config(request.path_params["model"], version_of(request)))

    async def model_stats(request: Request) -> Response:
        return _json(core.statistics(request.path_params.get("model", ""), version_of(request)))

    async def infer(request: Request) -> Response:
        t0 = time.perf_counter_ns()
        model = core.model(request.path_params["model"], version_of(request))
        body = await read_body(request)
        model.reject_if_full(t0)  # before decoding the body
        req, opts = codec_http.parse_infer(body, request.headers.get("inference-header-content-length"), model)
        outputs = await core.infer(model, req)
        payload, header_len = codec_http.encode_response(model, req, opts, outputs)
        headers = {}
        if header_len is not None:
            headers["Inference-Header-Content-Length"] = str(header_len)
        accept = request.headers.get("accept-encoding")
        if accept:
            payload, enc = codec_http.compress(payload, accept)
            if enc:
                headers["Content-Encoding"] = enc
        media = "application/octet-stream" if header_len is not None else "application/json"
        return Response(payload, headers=headers, media_type=media)

    async def repo_index(request: Request) -> Response:
        body = await read_body(request)
        ready_only = False
        if body.strip():
            try:
                j = json.loads(body)
            except ValueError as e:
                raise InvalidArgument(f"failed to parse the request JSON buffer: {e}") from None
            ready_only = bool(isinstance(j, dict) and j.get("ready", False))
        return _json(core.repository_index(ready_only))

    async def repo_load(request: Request) -> Response:
        params = _params(await read_body(request))
        await core.load_model(request.path_params["model"], params)
        return Response(_EMPTY)

    async def repo_unload(request: Request) -> Response:
        _params(await read_body(request))
        await core.unload_model(request.path_params["model"])
        return Response(_EMPTY)

    async def metrics(request: Request) -> Response:
        return Response(core.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    m = "/v2/models/{model}"
    mv = "/v2/models/{model}/versions/{version:int}"
    get, post = ["GET"], ["POST"]
    routes = [
        Route("/v2/health/live", _guard(live), methods=get),
        Route("/v2/health/ready", _guard(ready), methods=get),
        Route("/v2", _guard(server_metadata), methods=get),
        Route("/v2/models/stats", _guard(model_stats), methods=get),
        Route("/v2/repository/index", _guard(repo_index), methods=post),
        Route("/v2/repository/models/{model}/load", _guard(repo_load), methods=post),
        Route("/v2/repository/models/{model}/unload", _guard(repo_unload), methods=post),
        Route("/metrics", _guard(metrics), methods=get),
    ]
    for base in (m, mv):
        routes += [
            Route(base, _guard(model_metadata), methods=get),
            Route(base + "/ready", _guard(model_ready), methods=get),
            Route(base + "/config", _guard(model_config), methods=get),
            Route(base + "/stats", _guard(model_stats), methods=get),
            Route(base + "/infer", _guard(infer), methods=post),
        ]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return JSONResponse({"error": str(detail)}, status_code=status)

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: http_error})


def _params(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        j = json.loads(body)
    except ValueError as e:
        raise InvalidArgument(f"failed to parse the request JSON buffer: {e}") from None
    if not isinstance(j, dict):
        raise InvalidArgument("the request body must be a JSON object")
    p = j.get("parameters") or {}
    if not isinstance(p, dict):
        raise InvalidArgument("'parameters' must be a JSON object")
    return p

