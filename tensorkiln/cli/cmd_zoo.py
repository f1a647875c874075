"""tensorkiln zoo list | export NAME -o FILE"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table


def add_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="zoo_command", metavar="list|export", required=True)
    sub.add_parser("list", help="list the zoo's networks")
    ex = sub.add_parser("export", help="export a network to ONNX (random weights, fixed seed)")
    ex.add_argument("name")
    ex.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    ex.add_argument("--opset", type=int, default=17)


def run(args: argparse.Namespace) -> int:
    from tensorkiln import zoo

    con = Console()
    if args.zoo_command == "list":
        t = Table(title="tensorkiln model zoo")
        for col in ("name", "task", "inputs", "description"):
            t.add_column(col)
        for m in zoo.list_models():
            ins = "; ".join(f"{i.name}: {i.dtype}{list(i.shape)}" for i in m.inputs)
            t.add_row(m.name, m.task, ins, m.description)
        con.print(t)
        return 0
    with con.status(f"exporting {args.name} …"):
        path = zoo.export(args.name, args.output, opset=args.opset)
    con.print(f"wrote {path}")
    return 0
