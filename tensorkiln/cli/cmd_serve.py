"""tensorkiln serve REPO [--http-port 8000] [--grpc-port 8001] [--host 127.0.0.1]"""

from __future__ import annotations

import argparse
import logging

from rich.console import Console


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("repository", help="a Triton-layout model repository: REPO/<model>/[config.pbtxt] and "
                                      "REPO/<model>/<version>/model.onnx or model.tkengine")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP port (0 picks a free one; -1 turns HTTP off)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (0 picks a free one; -1 turns gRPC off)")
    p.add_argument("--max-body-mb", type=float, default=256, help="largest request body / gRPC message (MiB)")
    p.add_argument("--max-tensor-mb", type=float, default=256, help="largest total input size of a request (MiB)")
    p.add_argument("--default-max-batch-size", type=int, default=4,
                   help="max_batch_size given to batchable models without one in config.pbtxt (Triton's default 4)")
    p.add_argument("--no-load", action="store_true", help="start with no model loaded (load them via the API)")
    p.add_argument("--verbose", action="store_true", help="log loading and shutdown steps")


def run(args: argparse.Namespace) -> int:
    from tensorkiln.serve import Server, ServerOptions

    con = Console()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    opts = ServerOptions(
        host=args.host,
        http_port=None if args.http_port < 0 else args.http_port,
        grpc_port=None if args.grpc_port < 0 else args.grpc_port,
        max_body_bytes=int(args.max_body_mb * (1 << 20)),
        max_tensor_bytes=int(args.max_tensor_mb * (1 << 20)),
        default_max_batch_size=args.default_max_batch_size,
        load_models=not args.no_load,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        con.print(f"[yellow]warning:[/] listening on {args.host}: reachable from other machines")
    server = Server(args.repository, opts)

    def ready(s: Server) -> None:
        for row in s.core.repository_index():
            state = row["state"]
            color = "green" if state == "READY" else "red"
            con.print(f"model [bold]{row['name']}[/] {row.get('version', '')} [{color}]{state}[/] "
                      f"{row.get('reason', '')}", highlight=False)
        if s.http_port is not None:
            con.print(f"HTTP on {s.http_url}", highlight=False)
        if s.grpc_port is not None:
            con.print(f"gRPC on {s.grpc_url}", highlight=False)
        con.print("metrics on /metrics; Ctrl-C stops (in-flight requests are answered first)")

    server.serve_forever(on_ready=ready)
    return 0
