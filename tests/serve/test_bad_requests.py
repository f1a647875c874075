"""Malformed and hostile requests get the right 4xx with a JSON error, and the server keeps serving."""

from __future__ import annotations

import gzip
import http.client
import json

import numpy as np
import pytest


def _post(server, path, body: bytes, headers=None):
    host, port = server.http_url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def _get(server, path):
    host, port = server.http_url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _json_req(x: list, shape=(1, 4), datatype="FP32", name="x", **extra):
    return json.dumps({"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": x}],
                       **extra}).encode()


def _binary_req(raw: bytes, shape=(1, 4), size=None, datatype="FP32"):
    head = json.dumps({"inputs": [{"name": "x", "shape": list(shape), "datatype": datatype,
                                   "parameters": {"binary_data_size": len(raw) if size is None else size}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


def _assert_error(status, body, want):
    assert status == want, body
    err = json.loads(body)
    assert isinstance(err["error"], str) and err["error"]


def _still_serving(server):
    status, _, body = _post(server, "/v2/models/tiny/infer", _json_req([1.0, 2.0, 3.0, 4.0]))
    assert status == 200, body
    assert json.loads(body)["outputs"][0]["shape"] == [1, 3]


CASES = {
    "wrong shape": (lambda: _json_req([1.0] * 5, shape=(1, 5)), None, 400),
    "data count != shape": (lambda: _json_req([1.0] * 3), None, 400),
    "wrong dtype": (lambda: _json_req([1, 2, 3, 4], datatype="INT32"), None, 400),
    "unknown dtype": (lambda: _json_req([1, 2, 3, 4], datatype="FP8"), None, 400),
    "string in FP32 data": (lambda: _json_req(["a", 2, 3, 4]), None, 400),
    "bool in FP32 data": (lambda: _json_req([True, 2, 3, 4]), None, 400),
    "fp16 as JSON": (lambda: _json_req([1, 2, 3, 4], datatype="FP16"), None, 400),
    "negative dim": (lambda: _json_req([1.0] * 4, shape=(-1, 4)), None, 400),
    "malformed JSON": (lambda: b'{"inputs": [', None, 400),
    "JSON not an object": (lambda: b"[1, 2]", None, 400),
    "no inputs": (lambda: b'{"inputs": []}', None, 400),
    "unknown input": (lambda: _json_req([1.0] * 4, name="nope"), None, 400),
    "id not a string": (lambda: _json_req([1.0] * 4, id=5), None, 400),
    "priority not an int": (lambda: _json_req([1.0] * 4, parameters={"priority": "high"}), None, 400),
    "over max_batch_size": (lambda: _json_req([1.0] * 36, shape=(9, 4)), None, 400),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_json_requests(server, case):
    make, headers, want = CASES[case]
    status, _, body = _post(server, "/v2/models/tiny/infer", make(), headers)
    _assert_error(status, body, want)
    _still_serving(server)


def test_binary_byte_size_mismatch(server):
    raw = np.ones((1, 4), np.float32).tobytes()
    body, headers = _binary_req(raw[:12], size=12)  # 12 bytes for a [1, 4] FP32 tensor
    _assert_error(*_post(server, "/v2/models/tiny/infer", body, headers)[::2], 400)
    body, headers = _binary_req(raw, size=64)  # claims more than the body holds
    _assert_error(*_post(server, "/v2/models/tiny/infer", body, headers)[::2], 400)
    body, headers = _binary_req(raw + b"extra", size=16)  # trailing bytes nobody claims
    _assert_error(*_post(server, "/v2/models/tiny/infer", body, headers)[::2], 400)
    body, headers = _binary_req(raw)
    status, h, resp = _post(server, "/v2/models/tiny/infer", body, headers)
    assert status == 200
    hl = int(h["inference-header-content-length"])
    assert np.frombuffer(resp[hl:], np.float32).shape == (3,)
    _still_serving(server)


@pytest.mark.parametrize("value", ["abc", "-1", "999999", "1e3"])
def test_bad_header_length(server, value):
    body, headers = _binary_req(np.ones((1, 4), np.float32).tobytes())
    headers["Inference-Header-Content-Length"] = value
    _assert_error(*_post(server, "/v2/models/tiny/infer", body, headers)[::2], 400)
    _still_serving(server)


def test_raw_body_with_zero_header_length(server):
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    status, h, resp = _post(server, "/v2/models/tiny/infer", x.tobytes(), {"Inference-Header-Content-Length": "0"})
    assert status == 200, resp
    hl = int(h["inference-header-content-length"])
    assert json.loads(resp[:hl])["outputs"][0]["shape"] == [1, 3]


def test_huge_body_is_413(server):
    body = b" " * (9 << 20)  # over the test server's 8 MiB limit
    _assert_error(*_post(server, "/v2/models/tiny/infer", body)[::2], 413)
    _still_serving(server)


def test_compression_bomb_and_bad_gzip(server):
    bomb = gzip.compress(b" " * (20 << 20))  # 20 MiB of spaces in about 20 KiB
    _assert_error(*_post(server, "/v2/models/tiny/infer", bomb, {"Content-Encoding": "gzip"})[::2], 413)
    _assert_error(*_post(server, "/v2/models/tiny/infer", b"not gzip", {"Content-Encoding": "gzip"})[::2], 400)
    _assert_error(*_post(server, "/v2/models/tiny/infer", b"x", {"Content-Encoding": "br"})[::2], 501)
    good = gzip.compress(_json_req([1.0, 2.0, 3.0, 4.0]))
    assert _post(server, "/v2/models/tiny/infer", good, {"Content-Encoding": "gzip"})[0] == 200


def test_unknown_model_route_and_escape(server):
    _assert_error(*_post(server, "/v2/models/no_such_model/infer", _json_req([1.0] * 4))[::2], 404)
    _assert_error(*_get(server, "/v2/models/no_such_model/config"), 404)
    _assert_error(*_get(server, "/v2/nothing/here"), 404)
    _assert_error(*_get(server, "/v2/models/tiny/versions/abc/config"), 404)  # versions are digits only
    _assert_error(*_get(server, "/v2/models/tiny/versions/7/config"), 404)
    for name in ("..", "..%2F..%2Fetc", "%2E%2E", ".hidden"):
        status, body = _get(server, f"/v2/models/{name}/config")
        assert status in (400, 404), (name, status)
        json.loads(body)
        status, _, body = _post(server, f"/v2/repository/models/{name}/load", b"{}")
        assert status in (400, 404), (name, status)
    status, body = _get(server, "/v2/models/tiny/ready")
    assert status == 200 and body == b""
    _assert_error(*_get(server, "/v2/models/no_such_model/ready"), 400)
    _still_serving(server)


def test_load_with_files_is_refused(server):
    body = json.dumps({"parameters": {"config": "{}", "file:1/model.onnx": "AAAA"}}).encode()
    _assert_error(*_post(server, "/v2/repository/models/auto/load", body)[::2], 501)
    _assert_error(*_post(server, "/v2/repository/models/auto/load", b"{bad json")[::2], 400)


def test_metrics_have_triton_names(server):
    _still_serving(server)
    status, body = _get(server, "/metrics")
    assert status == 200
    text = body.decode()
    for name in ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
                 "nv_inference_exec_count", "nv_inference_pending_request_count",
                 "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                 "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
                 "nv_inference_compute_output_duration_us", "tensorkiln_batch_size_bucket",
                 "tensorkiln_queue_duration_seconds_bucket"):
        assert f"\n{name}{{" in text, name
    assert "# TYPE nv_inference_request_success counter" in text
    key = 'nv_inference_request_success{model="tiny",version="2"}'
    line = next(ln for ln in text.splitlines() if ln.startswith(key))
    assert float(line.rsplit(" ", 1)[1]) >= 1
    assert 'nv_inference_request_failure{model="tiny",version="2",reason="OTHER"}' in text


def test_bytes_element_count_is_checked_before_allocating(server):
    head = json.dumps({"inputs": [{"name": "in_BYTES", "shape": [1, 1 << 40], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": 8}}]}).encode()
    body = head + b"\x01\x00\x00\x00a\x00\x00\x00"
    status, _, resp = _post(server, "/v2/models/bytes/infer", body, {"Inference-Header-Content-Length": str(len(head))})
    _assert_error(status, resp, 400)
    _still_serving(server)
