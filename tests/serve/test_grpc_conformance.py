"""The unmodified tritonclient.grpc client against the server."""

from __future__ import annotations

import queue

import numpy as np
import pytest

from tests.helpers import tiny_model, tiny_reference
from tests.serve.conftest import NUMERIC, sample

tg = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402


def _tiny_input(x):
    i = tg.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return i


def test_health_and_metadata(grpc_client):
    c = grpc_client
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("tiny") and c.is_model_ready("tiny", "1")
    assert not c.is_model_ready("no_such_model")
    md = c.get_server_metadata(as_json=True)
    assert md["name"] == "tensorkiln" and "statistics" in md["extensions"]
    mm = c.get_model_metadata("tiny", as_json=True)
    assert mm["versions"] == ["1", "2"]
    assert mm["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}]  # int64 as JSON strings
    cfg = c.get_model_config("tiny").config
    assert cfg.max_batch_size == 8 and cfg.dynamic_batching.max_queue_delay_microseconds == 1000
    assert list(cfg.input[0].dims) == [4]


def test_infer_matches_reference(grpc_client):
    x = np.random.default_rng(5).standard_normal((4, 4)).astype(np.float32)
    r = grpc_client.infer("tiny", [_tiny_input(x)], request_id="g-1",
                          outputs=[tg.InferRequestedOutput("y")])
    np.testing.assert_allclose(r.as_numpy("y"), tiny_reference(x, tiny_model()), rtol=1e-5, atol=1e-6)
    assert r.get_response().id == "g-1" and r.get_response().model_version == "2"


@pytest.mark.parametrize("algo", [None, "gzip", "deflate"])
def test_every_datatype(grpc_client, algo):
    inputs, want = [], {}
    for t in NUMERIC:
        a = sample(t, (3, 3), seed=7 + len(t))
        i = tg.InferInput(f"in_{t}", [3, 3], t)
        i.set_data_from_numpy(a)
        inputs.append(i)
        want[t] = a
    r = grpc_client.infer("alltypes", inputs, compression_algorithm=algo)
    for t in NUMERIC:
        got = r.as_numpy(f"out_{t}")
        if t == "BF16":
            got, w = got.astype(np.float64), want[t].astype(np.float64)
        else:
            w = want[t]
        np.testing.assert_array_equal(got, w, err_msg=t)


def test_bytes_echo(grpc_client):
    a = sample("BYTES", (2, 3))
    i = tg.InferInput("in_BYTES", [2, 3], "BYTES")
    i.set_data_from_numpy(a)
    got = grpc_client.infer("bytes", [i]).as_numpy("out_BYTES")
    assert list(got.ravel()) == list(a.ravel())


def test_typed_contents_request(server):
    """A request with typed `contents` instead of raw bytes (KServe clients other than tritonclient)."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pbg

    with grpc.insecure_channel(server.grpc_url) as ch:
        stub = pbg.GRPCInferenceServiceStub(ch)
        req = pb.ModelInferRequest(model_name="tiny", id="typed")
        t = req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        t.contents.fp32_contents.extend([0.5, -1.0, 2.0, 0.0])
        resp = stub.ModelInfer(req)
        y = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(1, 3)
        x = np.array([[0.5, -1.0, 2.0, 0.0]], np.float32)
        np.testing.assert_allclose(y, tiny_reference(x, tiny_model()), rtol=1e-5, atol=1e-6)
        with pytest.raises(grpc.RpcError) as e:
            bad = pb.ModelInferRequest(model_name="tiny")
            bad.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1.0])
            stub.ModelInfer(bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_large_message_over_4mib(grpc_client):
    x = np.zeros((8, 3, 256, 256), np.float32)  # 6 MiB: above grpcio's default 4 MiB cap
    i = tg.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    assert grpc_client.infer("conv", [i]).as_numpy("y").shape == (8, 4)
    x = np.zeros((8, 3, 512, 384), np.float32)  # 18 MiB: over the test server's 8 MiB limit
    i = tg.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as e:
        grpc_client.infer("conv", [i])
    assert "RESOURCE_EXHAUSTED" in str(e.value.status())
    assert grpc_client.is_server_live()


def test_stream_infer(grpc_client):
    results: queue.Queue = queue.Queue()
    grpc_client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        xs = [np.full((1, 4), k, np.float32) for k in range(5)]
        for k, x in enumerate(xs):
            grpc_client.async_stream_infer("tiny", [_tiny_input(x)], request_id=str(k))
        bad = tg.InferInput("x", [1, 5], "FP32")
        bad.set_data_from_numpy(np.ones((1, 5), np.float32))
        grpc_client.async_stream_infer("tiny", [bad], request_id="bad")
        got = {}
        errors = []
        for _ in range(6):
            res, err = results.get(timeout=30)
            if err is not None:
                errors.append(err)
            else:
                got[res.get_response().id] = res.as_numpy("y")
    finally:
        grpc_client.stop_stream()
    assert len(errors) == 1 and "shape" in str(errors[0])
    for k, x in enumerate(xs):
        np.testing.assert_allclose(got[str(k)], tiny_reference(x, tiny_model()), rtol=1e-5, atol=1e-6)


def test_statistics_and_repository(grpc_client):
    grpc_client.infer("tiny", [_tiny_input(np.ones((2, 4), np.float32))])
    st = grpc_client.get_inference_statistics("tiny", as_json=True)["model_stats"]
    assert {s["version"] for s in st} == {"1", "2"}
    idx = grpc_client.get_model_repository_index(as_json=True)["models"]
    assert any(m["name"] == "conv" and m["state"] == "READY" for m in idx)
    grpc_client.unload_model("fixed")
    assert not grpc_client.is_model_ready("fixed")
    grpc_client.load_model("fixed")
    assert grpc_client.is_model_ready("fixed")


def test_error_codes(grpc_client):
    with pytest.raises(InferenceServerException) as e:
        grpc_client.get_model_metadata("no_such_model")
    assert "NOT_FOUND" in str(e.value.status())
    with pytest.raises(InferenceServerException) as e:
        grpc_client.infer("no_such_model", [_tiny_input(np.ones((1, 4), np.float32))])
    assert "NOT_FOUND" in str(e.value.status())
    i = tg.InferInput("x", [1, 4], "INT32")
    i.set_data_from_numpy(np.ones((1, 4), np.int32))
    with pytest.raises(InferenceServerException) as e:
        grpc_client.infer("tiny", [i])
    assert "INVALID_ARGUMENT" in str(e.value.status())
    with pytest.raises(InferenceServerException) as e:
        grpc_client.load_model("../etc")
    assert "INVALID_ARGUMENT" in str(e.value.status())
    assert grpc_client.is_server_live()
