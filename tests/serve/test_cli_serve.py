"""`tensorkiln serve` as a user starts it: ephemeral ports printed, serving, Ctrl-C exits cleanly."""

from __future__ import annotations

import http.client
import json

from tensorkiln.serve.loadgen import ServerProcess
from tests.helpers import tiny_model
from tests.serve.conftest import write_model


def test_cli_serve_ephemeral_ports_and_sigint(tmp_path):
    write_model(tmp_path, "tiny", tiny_model())
    s = ServerProcess(str(tmp_path), start_timeout=120)
    try:
        assert s.http_url.startswith("127.0.0.1:") and s.grpc_url.startswith("127.0.0.1:")
        assert any("tiny" in line and "READY" in line for line in s.log)
        host, port = s.http_url.rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=30)
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
        c.request("POST", "/v2/models/tiny/infer", body=body)
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["outputs"][0]["shape"] == [1, 3]
        c.close()
    finally:
        code = s.stop()
    assert code == 0
