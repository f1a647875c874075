"""Serving: KServe v2 over HTTP and gRPC, dynamic batching, a Triton-layout model repository,
instances and Prometheus metrics.

::

    from tensorkiln.serve import Server
    with Server("models/", http_port=0, grpc_port=0) as s:
        print(s.http_url, s.grpc_url)

Needs the ``serve`` extra (starlette, uvicorn, grpcio, protobuf, prometheus-client, tritonclient[grpc]
for the generated protobuf modules).
"""

from tensorkiln.serve.core import ServerCore, ServerOptions
from tensorkiln.serve.server import Server

__all__ = ["Server", "ServerCore", "ServerOptions"]
