"""The unmodified tritonclient.http client against the server: every endpoint, every datatype,
binary and JSON tensors, compression, request ids, statistics, repository, error codes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import tiny_model, tiny_reference
from tests.serve.conftest import NUMERIC, sample

th = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


def _infer_tiny(http, x, **kw):
    i = th.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=kw.pop("binary_in", True))
    return http.infer("tiny", [i], **kw)


def test_health_and_server_metadata(http):
    assert http.is_server_live()
    assert http.is_server_ready()
    md = http.get_server_metadata()
    assert md["name"] == "tensorkiln"
    assert "binary_tensor_data" in md["extensions"] and "statistics" in md["extensions"]


def test_model_ready_and_versions(http):
    assert http.is_model_ready("tiny")
    assert http.is_model_ready("tiny", "1") and http.is_model_ready("tiny", "2")
    assert not http.is_model_ready("tiny", "3")
    assert not http.is_model_ready("no_such_model")


def test_model_metadata_and_config(http):
    md = http.get_model_metadata("tiny")
    assert md["name"] == "tiny" and md["versions"] == ["1", "2"]
    assert md["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert md["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
    cfg = http.get_model_config("tiny")
    assert cfg["max_batch_size"] == 8
    assert cfg["input"][0]["dims"] == [4] and isinstance(cfg["input"][0]["dims"][0], int)
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == 1000
    assert http.get_model_config("tiny", "2")["name"] == "tiny"


def test_autocompleted_config(http):
    cfg = http.get_model_config("auto")  # no config.pbtxt: derived from the ONNX model like Triton
    assert cfg["max_batch_size"] == 4 and "dynamic_batching" in cfg
    assert [i["name"] for i in cfg["input"]] == ["x"] and cfg["input"][0]["data_type"] == "TYPE_FP32"
    assert cfg["instance_group"][0]["count"] == 1


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_infer_tiny_matches_reference(http, binary_in, binary_out):
    x = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    r = _infer_tiny(http, x, binary_in=binary_in,
                    outputs=[th.InferRequestedOutput("y", binary_data=binary_out)], request_id="req-42")
    np.testing.assert_allclose(r.as_numpy("y"), tiny_reference(x, tiny_model()), rtol=1e-5, atol=1e-6)
    resp = r.get_response()
    assert resp["id"] == "req-42" and resp["model_name"] == "tiny" and resp["model_version"] == "2"
    assert ("binary_data_size" in resp["outputs"][0].get("parameters", {})) == binary_out


def test_infer_specific_version(http):
    x = np.ones((1, 4), np.float32)
    i = th.InferInput("x", [1, 4], "FP32")
    i.set_data_from_numpy(x)
    assert http.infer("tiny", [i], model_version="1").get_response()["model_version"] == "1"


@pytest.mark.parametrize("algo", ["gzip", "deflate"])
def test_compressed_request_and_response(http, algo):
    x = np.random.default_rng(4).standard_normal((2, 4)).astype(np.float32)
    r = _infer_tiny(http, x, request_compression_algorithm=algo, response_compression_algorithm=algo)
    np.testing.assert_allclose(r.as_numpy("y"), tiny_reference(x, tiny_model()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("binary", [True, False])
def test_every_numeric_datatype_round_trips(http, binary):
    inputs, want = [], {}
    for t in NUMERIC:
        a = sample(t, (2, 3), seed=len(t))
        i = th.InferInput(f"in_{t}", [2, 3], t)
        i.set_data_from_numpy(a, binary_data=binary or t in ("FP16", "BF16"))
        inputs.append(i)
        want[t] = a
    outs = [th.InferRequestedOutput(f"out_{t}", binary_data=binary) for t in NUMERIC]
    r = http.infer("alltypes", inputs, outputs=outs)
    for t in NUMERIC:
        got = r.as_numpy(f"out_{t}")
        assert got.shape == (2, 3), t
        np.testing.assert_array_equal(got.astype(np.float64) if t == "BF16" else got,
                                      want[t].astype(np.float64) if t == "BF16" else want[t], err_msg=t)
        out = next(o for o in r.get_response()["outputs"] if o["name"] == f"out_{t}")
        assert out["datatype"] == t


@pytest.mark.parametrize("binary", [True, False])
def test_bytes_echo(http, binary):
    a = sample("BYTES", (2, 3))
    i = th.InferInput("in_BYTES", [2, 3], "BYTES")
    i.set_data_from_numpy(a, binary_data=binary)
    r = http.infer("bytes", [i], outputs=[th.InferRequestedOutput("out_BYTES", binary_data=binary)])
    got = r.as_numpy("out_BYTES")
    assert got.shape == (2, 3)
    assert [x if isinstance(x, bytes) else x.encode() for x in got.ravel()] == list(a.ravel())


def test_bytes_to_a_numeric_model_is_400(http):
    i = th.InferInput("x", [1, 4], "BYTES")
    i.set_data_from_numpy(np.array([[b"a", b"b", b"c", b"d"]], dtype=object))
    with pytest.raises(InferenceServerException) as e:
        http.infer("tiny", [i])
    assert e.value.status() == "400" and "data-type" in e.value.message()


def test_no_batch_model(http):
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    i = th.InferInput("x", [2, 2], "FP32")
    i.set_data_from_numpy(x)
    np.testing.assert_array_equal(http.infer("fixed", [i]).as_numpy("y"), x * 2)
    assert http.get_model_metadata("fixed")["inputs"][0]["shape"] == [2, 2]


def test_statistics(http):
    _infer_tiny(http, np.ones((2, 4), np.float32))
    st = http.get_inference_statistics("tiny")["model_stats"]
    assert {s["version"] for s in st} == {"1", "2"}
    s2 = next(s for s in st if s["version"] == "2")
    assert s2["inference_count"] >= 2 and s2["execution_count"] >= 1
    for k in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit",
              "cache_miss"):
        assert isinstance(s2["inference_stats"][k]["count"], int) and isinstance(s2["inference_stats"][k]["ns"], int)
    assert s2["batch_stats"] and isinstance(s2["batch_stats"][0]["batch_size"], int)
    one = http.get_inference_statistics("tiny", "1")["model_stats"]
    assert [s["version"] for s in one] == ["1"]
    assert len(http.get_inference_statistics()["model_stats"]) >= 6
    with pytest.raises(InferenceServerException) as e:
        http.get_inference_statistics("no_such_model")
    assert e.value.status() == "404"


def test_repository_index_load_unload(http):
    idx = {(m["name"], m.get("version")): m for m in http.get_model_repository_index()}
    assert idx[("tiny", "2")]["state"] == "READY" and idx[("conv", "1")]["state"] == "READY"
    http.unload_model("auto")
    assert not http.is_model_ready("auto")
    row = next(m for m in http.get_model_repository_index() if m["name"] == "auto")
    assert row["state"] == "UNAVAILABLE"
    with pytest.raises(InferenceServerException) as e:
        http.get_model_metadata("auto")
    assert e.value.status() in ("404", "503")
    http.load_model("auto")
    assert http.is_model_ready("auto")
    # a load with a config override (JSON) replaces the served config
    http.load_model("auto", config='{"max_batch_size": 2, "dynamic_batching": {}}')
    assert http.get_model_config("auto")["max_batch_size"] == 2
    http.load_model("auto")
    assert http.get_model_config("auto")["max_batch_size"] == 4
    with pytest.raises(InferenceServerException) as e:
        http.load_model("no_such_model")
    assert e.value.status() == "404"
    with pytest.raises(InferenceServerException) as e:
        http.load_model("..")
    assert e.value.status() == "400"


def test_errors_are_json_with_codes(http):
    with pytest.raises(InferenceServerException) as e:
        http.get_model_metadata("no_such_model")
    assert e.value.status() == "404"
    x = np.ones((1, 5), np.float32)  # wrong shape
    with pytest.raises(InferenceServerException) as e:
        _infer_tiny(http, x)
    assert e.value.status() == "400" and "shape" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        _infer_tiny(http, np.ones((9, 4), np.float32))  # over max_batch_size
    assert e.value.status() == "400"
    i = th.InferInput("x", [1, 4], "FP64")
    i.set_data_from_numpy(np.ones((1, 4), np.float64))
    with pytest.raises(InferenceServerException) as e:
        http.infer("tiny", [i])
    assert e.value.status() == "400"
    i = th.InferInput("nope", [1, 4], "FP32")
    i.set_data_from_numpy(np.ones((1, 4), np.float32))
    with pytest.raises(InferenceServerException) as e:
        http.infer("tiny", [i])
    assert e.value.status() == "400"
    with pytest.raises(InferenceServerException) as e:
        _infer_tiny(http, np.ones((1, 4), np.float32), outputs=[th.InferRequestedOutput("nope")])
    assert e.value.status() == "400"
    assert http.is_server_live()


def test_instance_group_count_gives_contexts(server, http):
    cfg = http.get_model_config("conv")
    assert cfg["instance_group"][0]["count"] == 2
    m = server.core.model("conv")
    assert m.n_instances == 2 and len({id(c) for c in m.instances}) == 2
    # two shapes at once: separate shape buckets, both answered correctly
    outs = []
    for hw in (16, 24):
        x = np.random.default_rng(hw).standard_normal((2, 3, hw, hw)).astype(np.float32)
        i = th.InferInput("x", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        outs.append(http.async_infer("conv", [i]))
    assert [o.get_result().as_numpy("y").shape for o in outs] == [(2, 4), (2, 4)]


def test_engine_file_model(http):
    md = http.get_model_metadata("engine")
    assert md["versions"] == ["3"] and md["inputs"][0]["shape"] == [-1, 4]
    x = np.random.default_rng(9).standard_normal((2, 4)).astype(np.float32)
    i = th.InferInput("x", [2, 4], "FP32")
    i.set_data_from_numpy(x)
    np.testing.assert_allclose(http.infer("engine", [i]).as_numpy("y"), tiny_reference(x, tiny_model()),
                               rtol=1e-5, atol=1e-6)


def test_padded_batches(server, http, monkeypatch):
    m = server.core.model("padded")
    assert m.pad_to == [1, 2, 4, 8]
    seen = []
    for ctx in m.instances:
        real = ctx.run
        monkeypatch.setattr(ctx, "run", lambda feeds, real=real: (seen.append(feeds["x"].shape), real(feeds))[1])
    x = np.random.default_rng(11).standard_normal((3, 4)).astype(np.float32)
    i = th.InferInput("x", [3, 4], "FP32")
    i.set_data_from_numpy(x)
    y = http.infer("padded", [i]).as_numpy("y")
    assert y.shape == (3, 3) and seen == [(4, 4)]  # ran 4 rows (one zero row), answered 3
    np.testing.assert_allclose(y, tiny_reference(x, tiny_model()), rtol=1e-5, atol=1e-6)
    st = http.get_inference_statistics("padded")["model_stats"][0]
    assert st["inference_count"] == 3 and [b["batch_size"] for b in st["batch_stats"]] == [3]
