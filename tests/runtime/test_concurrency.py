"""Many threads on one engine give bit-identical results to serial runs."""

import asyncio
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorkiln
from tensorkiln.errors import UserError

rng = np.random.default_rng(0)


def conv_model() -> onnx.ModelProto:
    rng = np.random.default_rng(42)  # the same weights every call
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B")
    w2 = numpy_helper.from_array(rng.standard_normal((8 * 6 * 6, 5)).astype(np.float32), "W2")
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "W2"], ["y"])]
    g = helper.make_graph(nodes, "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], [w, b, w2])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def engine() -> tensorkiln.Engine:
    return tensorkiln.build(conv_model())


def test_8_threads_x_500_calls_bit_identical(engine: tensorkiln.Engine) -> None:
    inputs = [rng.standard_normal((b, 3, 12, 12)).astype(np.float32) for b in (1, 2, 3, 5, 8)]
    serial = [engine.run({"x": x})["y"] for x in inputs]
    errors: list[str] = []

    def worker(k: int) -> None:
        for i in range(500):
            j = (i + k) % len(inputs)
            y = engine.run({"x": inputs[j]})["y"]
            if not np.array_equal(y, serial[j]):
                errors.append(f"thread {k} call {i}: batch {inputs[j].shape[0]} differs")
                return

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def test_streams_submit_and_async(tmp_path: object) -> None:
    eng = tensorkiln.build(conv_model(), streams=2, opt_level=0)  # same tactics as ref
    xs = [rng.standard_normal((2, 3, 12, 12)).astype(np.float32) for _ in range(6)]
    ref = tensorkiln.build(conv_model(), opt_level=0)
    futs = [eng.submit({"x": x}) for x in xs]
    for x, f in zip(xs, futs):
        np.testing.assert_array_equal(f.result(timeout=30)["y"], ref.run({"x": x})["y"])

    async def main() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(eng.run_async({"x": x}) for x in xs))

    for x, out in zip(xs, asyncio.run(main())):
        np.testing.assert_array_equal(out["y"], ref.run({"x": x})["y"])
    np.testing.assert_array_equal(eng.run({"x": xs[0]})["y"], ref.run({"x": xs[0]})["y"])
    eng.close()


def test_context_per_thread_and_misuse(engine: tensorkiln.Engine) -> None:
    ctx = engine.create_context(threads=1)
    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    np.testing.assert_array_equal(ctx.run({"x": x})["y"], engine.run({"x": x})["y"])
    ctx.context._busy.acquire()  # simulate another thread inside the context
    try:
        with pytest.raises(UserError, match="already running"):
            ctx.run({"x": x})
    finally:
        ctx.context._busy.release()


def test_outputs_into_caller_buffers(engine: tensorkiln.Engine) -> None:
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    buf = np.empty((2, 5), np.float32)
    out = engine.run({"x": x}, outputs={"y": buf})
    assert out["y"] is buf
    np.testing.assert_array_equal(buf, engine.run({"x": x})["y"])
    with pytest.raises(tensorkiln.FeedError, match="output buffer"):
        engine.run({"x": x}, outputs={"y": np.empty((3, 5), np.float32)})


def test_dlpack_and_torch_inputs(engine: tensorkiln.Engine) -> None:
    import torch

    x = torch.randn(1, 3, 12, 12)
    np.testing.assert_array_equal(engine.run({"x": x})["y"], engine.run({"x": x.numpy()})["y"])
