"""Graceful shutdown drains in-flight requests; several servers run side by side in one process."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.helpers import tiny_model
from tests.serve.conftest import write_model

th = pytest.importorskip("tritonclient.http")
tg = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402


def test_shutdown_answers_in_flight_requests(tmp_path):
    from tensorkiln.serve import Server

    write_model(tmp_path, "tiny", tiny_model(), """
        max_batch_size: 8
        dynamic_batching { max_queue_delay_microseconds: 400000 }
        """)
    s = Server(str(tmp_path), http_port=0, grpc_port=0).start()
    results: list = []

    def call_http(k: int) -> None:
        c = th.InferenceServerClient(s.http_url, network_timeout=30)
        i = th.InferInput("x", [1, 4], "FP32")
        i.set_data_from_numpy(np.full((1, 4), k, np.float32))
        try:
            results.append(("http", c.infer("tiny", [i]).as_numpy("y").shape))
        except Exception as e:
            results.append(("http", e))

    def call_grpc(k: int) -> None:
        c = tg.InferenceServerClient(s.grpc_url)
        i = tg.InferInput("x", [1, 4], "FP32")
        i.set_data_from_numpy(np.full((1, 4), k, np.float32))
        try:
            results.append(("grpc", c.infer("tiny", [i]).as_numpy("y").shape))
        except Exception as e:
            results.append(("grpc", e))

    threads = [threading.Thread(target=f, args=(k,)) for k, f in enumerate([call_http, call_http, call_grpc])]
    for t in threads:
        t.start()
    time.sleep(0.15)  # all three are queued, waiting for the 400 ms batching delay
    t0 = time.monotonic()
    s.stop()
    for t in threads:
        t.join(30)
    assert sorted(r[0] for r in results) == ["grpc", "http", "http"]
    assert all(r[1] == (1, 3) for r in results), results
    assert time.monotonic() - t0 < 20
    c = th.InferenceServerClient(s.http_url, connection_timeout=2)
    with pytest.raises((OSError, InferenceServerException)):  # the listener is gone
        c.is_server_live()


def test_two_servers_one_process(tmp_path):
    from tensorkiln.serve import Server

    write_model(tmp_path, "tiny", tiny_model())
    with Server(str(tmp_path), http_port=0, grpc_port=None) as a, \
            Server(str(tmp_path), http_port=0, grpc_port=None) as b:
        for s in (a, b):
            c = th.InferenceServerClient(s.http_url)
            i = th.InferInput("x", [2, 4], "FP32")
            i.set_data_from_numpy(np.ones((2, 4), np.float32))
            c.infer("tiny", [i])
        # per-server metrics registries: each counts only its own requests
        for s in (a, b):
            text = s.core.metrics.exposition().decode()
            assert 'nv_inference_request_success{model="tiny",version="1"} 1\n' in text


def test_broken_model_is_reported_and_others_serve(tmp_path):
    from tensorkiln.serve import Server

    write_model(tmp_path, "good", tiny_model())
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    write_model(tmp_path, "badcfg", tiny_model(), "max_batch_size: 4 input [ { name: \"nope\" } ]")
    with Server(str(tmp_path), http_port=0, grpc_port=None) as s:
        c = th.InferenceServerClient(s.http_url)
        assert c.is_model_ready("good") and not c.is_model_ready("broken")
        assert not c.is_server_ready()  # Triton's strict readiness: a model failed to load
        rows = {r["name"]: r for r in c.get_model_repository_index()}
        assert rows["broken"]["state"] == "UNAVAILABLE" and rows["broken"]["reason"]
        assert "nope" in rows["badcfg"]["reason"]
        with pytest.raises(InferenceServerException) as e:
            c.get_model_metadata("broken")
        assert e.value.status() == "503"
        i = th.InferInput("x", [1, 4], "FP32")
        i.set_data_from_numpy(np.ones((1, 4), np.float32))
        assert c.infer("good", [i]).as_numpy("y").shape == (1, 3)
        c.unload_model("broken")  # unloading what never loaded is not an error


def test_port_in_use_is_a_user_error(tmp_path, server):
    from tensorkiln.errors import UserError
    from tensorkiln.serve import Server

    write_model(tmp_path, "tiny", tiny_model())
    port = int(server.http_url.rsplit(":", 1)[1])
    with pytest.raises(UserError, match="cannot listen"):
        Server(str(tmp_path), http_port=port, grpc_port=None, load_models=False).start()
