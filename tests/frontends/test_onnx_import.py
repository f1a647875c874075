from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tensorkiln.errors import ModelError
from tensorkiln.frontends import import_onnx
from tests.helpers import tiny_model


def test_initializers_and_constant_nodes_become_constants() -> None:
    g = import_onnx(tiny_model())
    assert set(g.constants) == {"W", "b", "one"}
    assert [n.op_type for n in g.nodes] == ["MatMul", "Add", "Relu", "Add"]
    assert g.inputs[0].shape == ("batch", 4)


def test_unused_domains_in_opset_import_are_ignored() -> None:
    m = tiny_model()
    m.opset_import.append(helper.make_opsetid("com.example.unused", 3))
    g = import_onnx(m)
    assert g.opset_imports[""] == 17


def test_external_data_is_loaded(tmp_path: Path) -> None:
    m = tiny_model()
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.onnx.data", size_threshold=0)
    assert (tmp_path / "m.onnx.data").exists()
    g = import_onnx(path)
    want = numpy_helper.to_array(tiny_model().graph.initializer[0])
    np.testing.assert_array_equal(g.constants["W"].const, want)


def test_missing_external_data_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(tiny_model(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelError, match=r"external data file\(s\) missing.*'weights.bin'.*'W'"):
        import_onnx(path)


def test_malformed_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf \xff\xff\xff")
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        import_onnx(bad)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        import_onnx(tmp_path / "nope.onnx")


def test_undefined_tensor_names_the_node() -> None:
    g = helper.make_graph(
        [helper.make_node("Relu", ["ghost"], ["y"], name="r1")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    with pytest.raises(ModelError, match="node 'r1' \\(Relu\\) reads tensor 'ghost'"):
        import_onnx(helper.make_model(g))


def test_subgraph_captures_are_explicit_inputs() -> None:
    then_g = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["t"])], "then", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="if")], "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    ir = import_onnx(helper.make_model(g))
    node = ir.nodes[0]
    assert [v.name for v in node.inputs] == ["c", "x"]
    assert node.attrs["_n_onnx_inputs"] == 1
    assert [v.name for v in node.subgraphs["then_branch"].captures] == ["x"]
    assert node.subgraphs["then_branch"].captures[0] is ir.inputs[1]


def test_declared_output_shapes_are_not_trusted() -> None:
    m = tiny_model()
    # declare a wrong output shape; import must still succeed (shapes are display only)
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 99
    g = import_onnx(m)
    assert g.outputs[0].name == "y"
