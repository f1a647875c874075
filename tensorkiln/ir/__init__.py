"""tensorkiln's intermediate representation."""

from tensorkiln.ir.dtypes import DType
from tensorkiln.ir.graph import Dim, Graph, Node, Shape, Value
from tensorkiln.ir.printer import format_graph
from tensorkiln.ir.verify import verify

__all__ = ["DType", "Dim", "Graph", "Node", "Shape", "Value", "format_graph", "verify"]
