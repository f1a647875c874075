"""The server: HTTP (uvicorn) and gRPC (grpc.aio) front ends on one event loop.

``Server(repo, options).start()`` runs it in a background thread (tests, notebooks) and returns
once every model is loaded and the ports are bound; ``serve_forever()`` runs it in the calling
thread until SIGINT/SIGTERM. Shutdown is graceful: the listeners stop, new requests are refused
with 503, and every admitted request is answered before the models are released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from typing import Any

from tensorkiln.errors import UserError
from tensorkiln.serve.core import ServerCore, ServerOptions

log = logging.getLogger("tensorkiln.serve")


class Server:
    def __init__(self, repository: str, options: ServerOptions | None = None, **kw: Any) -> None:
        self.options = options or ServerOptions(**kw)
        self.core = ServerCore(repository, self.options)
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # --------------------------------------------------------------- public
    @property
    def http_url(self) -> str:
        return f"{self.options.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.options.host}:{self.grpc_port}"

    def start(self, timeout: float = 600.0) -> Server:
        """Run in a background thread; returns when ready (models loaded, ports bound)."""
        self._thread = threading.Thread(target=self._thread_main, name="tensorkiln-serve", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("the server did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 60.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def serve_forever(self, on_ready: Any = None) -> None:
        asyncio.run(self._main(on_ready, install_signals=True))
        if self._error is not None:
            raise self._error

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------- internals
    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main(None, install_signals=False))
        except BaseException as e:
            self._error = self._error or e
        finally:
            self._started.set()

    async def _main(self, on_ready: Any, install_signals: bool) -> None:
        import grpc
        import uvicorn

        from tensorkiln.serve.grpc_service import add_to_server
        from tensorkiln.serve.http_app import make_app

        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop = asyncio.Event()
        core = self.core
        core.loop = loop
        opts = self.options
        http_server = None
        http_task = None
        grpc_server = None
        try:
            if opts.load_models:
                await core.load_all()
            if opts.grpc_port is not None:
                size = max(opts.max_body_bytes, 4 << 20) + (1 << 20)
                grpc_server = grpc.aio.server(options=[
                    ("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size),
                    ("grpc.so_reuseport", 0)])
                add_to_server(core, grpc_server)
                try:
                    self.grpc_port = grpc_server.add_insecure_port(f"{_grpc_host(opts.host)}:{opts.grpc_port}")
                except RuntimeError as e:
                    raise UserError(f"cannot listen for gRPC on {opts.host}:{opts.grpc_port}: {e}") from None
                if not self.grpc_port:
                    raise UserError(f"cannot listen for gRPC on {opts.host}:{opts.grpc_port} (port in use?)")
                await grpc_server.start()
            if opts.http_port is not None:
                sock = _bind(opts.host, opts.http_port)
                self.http_port = sock.getsockname()[1]
                cfg = uvicorn.Config(make_app(core), log_level="warning", access_log=False, lifespan="off",
                                     timeout_graceful_shutdown=int(opts.shutdown_grace_s), timeout_keep_alive=30,
                                     h11_max_incomplete_event_size=1 << 20)
                http_server = uvicorn.Server(cfg)
                http_task = loop.create_task(http_server.serve(sockets=[sock]))
                while not http_server.started and not http_task.done():
                    await asyncio.sleep(0.01)
                if http_task.done():
                    http_task.result()
                    raise OSError("the HTTP server stopped at start")
            if install_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, self._stop.set)
            self._started.set()
            if on_ready is not None:
                on_ready(self)
            await self._stop.wait()
        except BaseException as e:
            self._error = e
        finally:
            log.info("shutting down: draining in-flight requests")
            core.draining = True
            if http_server is not None:
                http_server.should_exit = True
            waits = []
            if grpc_server is not None:
                waits.append(grpc_server.stop(opts.shutdown_grace_s))
            if http_task is not None:
                waits.append(http_task)
            with contextlib.suppress(BaseException):
                await asyncio.gather(*waits, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(core.drain(), opts.shutdown_grace_s)
            core.close()
            core.live = False


def _grpc_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _bind(host: str, port: int) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # proto set: asyncio then sets TCP_NODELAY
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError as e:
        s.close()
        raise UserError(f"cannot listen for HTTP on {host}:{port}: {e.strerror or e}") from None
    s.listen(1024)
    s.setblocking(False)
    return s
