"""Argument parsing and the command registry (one line per command)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from rich.console import Console

from tensorkiln.cli import cmd_bench, cmd_build, cmd_compare, cmd_demo, cmd_inspect, cmd_run, cmd_serve, cmd_zoo
from tensorkiln.errors import TensorkilnError, UserError

Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

COMMANDS: list[Command] = [
    ("build", "build an engine from an ONNX model", cmd_build.add_args, cmd_build.run),
    ("run", "run a model or engine on given or random inputs", cmd_run.add_args, cmd_run.run),
    ("inspect", "show inputs, outputs, ops and steps", cmd_inspect.add_args, cmd_inspect.run),
    ("zoo", "list or export the model zoo's networks", cmd_zoo.add_args, cmd_zoo.run),
    ("demo", "build zoo ResNet-50, check it against onnxruntime, time it", cmd_demo.add_args, cmd_demo.run),
    ("serve", "serve a model repository over KServe v2 HTTP and gRPC", cmd_serve.add_args, cmd_serve.run),
    ("bench", "measure throughput, latency, budgets and peers (trtexec-like)", cmd_bench.add_args, cmd_bench.run),
    ("compare", "check outputs vs a reference; find the first divergent layer", cmd_compare.add_args, cmd_compare.run),
]


def make_parser() -> argparse.ArgumentParser:
    from tensorkiln import __version__

    p = argparse.ArgumentParser(
        prog="tensorkiln",
        description="Build fast inference engines from ONNX models, run, inspect and benchmark them.",
    )
    p.add_argument("--version", action="version", version=f"tensorkiln {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, helptext, add_args, func in COMMANDS:
        sp = sub.add_parser(name, help=helptext, description=helptext)
        add_args(sp)
        sp.set_defaults(func=func)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    err = Console(stderr=True)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        err.print(f"[bold red]error:[/] {e}", markup=True, highlight=False)
        return 2
    except TensorkilnError as e:
        err.print(f"[bold red]internal error:[/] {e}", markup=True, highlight=False)
        return 3
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0
