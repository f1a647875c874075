"""ONNX's own backend node tests, run through ``tensorkiln.build(...).run(...)``.

The test list is ``ort_passing.txt``: the node tests of the installed onnx whose
tensors are all float32/float16/int8/uint8/int32/int64/bool and that
onnxruntime passes (regenerate with ``python tools/conformance_baseline.py``).
Tests listed in ``excluded.txt`` are skipped with the reason given there.
Outputs are compared the way ``onnx.backend.test.runner`` does: by graph
output position, equal shape and dtype, ``np.testing.assert_allclose`` with
the test's rtol/atol.

The node tests are generated in memory by
``onnx.backend.test.loader.load_node_model_tests()`` (~15 s); the ones this
suite needs are cached (a JSON index plus raw tensor bytes) in pytest's cache
directory, keyed by the onnx version and the test list.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

HERE = Path(__file__).resolve().parent
PASSING_FILE = HERE / "ort_passing.txt"
EXCLUDED_FILE = HERE / "excluded.txt"
EXCLUDED_PREFIX = "excluded: "  # the summary in conftest.py counts skips by this prefix

_CACHE_FORMAT = 1  # bump when the cache file layout changes
_NAME_RE = re.compile(r"^test_\w+$")


def read_test_list(path: Path = PASSING_FILE) -> list[str]:
    names = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            names.append(line)
    return names


def read_excluded(path: Path = EXCLUDED_FILE) -> dict[str, str]:
    """``test_name  # reason`` per line; a line without a reason is an error."""
    excluded: dict[str, str] = {}
    if not path.exists():
        return excluded
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, reason = line.partition("#")
        name, reason = name.strip(), reason.strip()
        if not sep or not reason:
            raise ValueError(f"{path}:{lineno}: excluded test {name!r} has no '# reason'")
        if not _NAME_RE.match(name):
            raise ValueError(f"{path}:{lineno}: {name!r} is not a test name")
        if name in excluded:
            raise ValueError(f"{path}:{lineno}: {name!r} is listed twice")
        excluded[name] = reason
    return excluded


TEST_NAMES = read_test_list()
EXCLUDED = read_excluded()


# --------------------------------------------------------------------------
# loading the node tests (with an on-disk cache)


@dataclass
class NodeCase:
    name: str
    model_bytes: bytes
    data_sets: list[tuple[list[np.ndarray], list[np.ndarray]]]
    rtol: float
    atol: float


def _to_array(x: Any) -> np.ndarray:
    if isinstance(x, onnx.TensorProto):
        x = onnx.numpy_helper.to_array(x)
    return np.array(x)  # a writable copy


def _load_from_onnx(names: set[str]) -> dict[str, NodeCase]:
    from onnx.backend.test.loader import load_node_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = load_node_model_tests()
    out = {}
    for c in cases:
        if c.name not in names or c.model is None:
            continue
        ds = [
            ([_to_array(x) for x in inputs], [_to_array(y) for y in outputs])
            for inputs, outputs in c.data_sets
        ]
        out[c.name] = NodeCase(c.name, c.model.SerializeToString(), ds, c.rtol, c.atol)
    return out


def _save_cache(path: Path, cases: dict[str, NodeCase]) -> None:
    """One file: 8-byte little-endian index length, JSON index, raw tensor bytes."""
    chunks: list[bytes] = []
    pos = 0

    def put(b: bytes) -> list[int]:
        nonlocal pos
        chunks.append(b)
        pos += len(b)
        return [pos - len(b), len(b)]

    def put_array(x: np.ndarray) -> list[Any]:
        return [*put(x.tobytes(order="C")), x.dtype.str, list(x.shape)]

    index = {
        name: {
            "model": put(c.model_bytes),
            "rtol": c.rtol,
            "atol": c.atol,
            "data_sets": [
                [[put_array(x) for x in ins], [put_array(y) for y in outs]]
                for ins, outs in c.data_sets
            ],
        }
        for name, c in cases.items()
    }
    head = json.dumps(index).encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(len(head).to_bytes(8, "little"))
            f.write(head)
            for b in chunks:
                f.write(b)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    for stale in path.parent.glob("node_tests_*.bin"):
        if stale != path:
            stale.unlink(missing_ok=True)


def _load_cache(path: Path) -> dict[str, NodeCase]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    index = json.loads(raw[8 : 8 + n])
    blob = memoryview(raw)[8 + n :]

    def get_array(spec: list[Any]) -> np.ndarray:
        off, size, dtype, shape = spec
        dt = np.dtype(dtype)
        a = np.frombuffer(blob, dt, size // dt.itemsize, off)
        return np.reshape(a, tuple(shape)).copy()

    return {
        name: NodeCase(
            name,
            bytes(blob[e["model"][0] : e["model"][0] + e["model"][1]]),
            [([get_array(s) for s in ins], [get_array(s) for s in outs])
             for ins, outs in e["data_sets"]],
            e["rtol"],
            e["atol"],
        )
        for name, e in index.items()
    }


def load_cases(cache_dir: Path | None) -> dict[str, NodeCase]:
    """The node tests named in the test list, by name (missing ones are absent)."""
    names = set(TEST_NAMES)
    key = hashlib.sha1(
        f"{_CACHE_FORMAT}\n{onnx.__version__}\n{np.__version__}\n{sorted(names)}".encode()
    ).hexdigest()[:16]
    path = cache_dir / f"node_tests_{key}.bin" if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            return _load_cache(path)
        except Exception:  # a broken cache file is simply rebuilt
            pass
    cases = _load_from_onnx(names)
    if path is not None:
        try:
            _save_cache(path, cases)
        except OSError:
            pass
    return cases


@pytest.fixture(scope="module")
def node_cases(request: pytest.FixtureRequest) -> dict[str, NodeCase]:
    cache = getattr(request.config, "cache", None)
    cache_dir = Path(cache.mkdir("tensorkiln_onnx_node")) if cache is not None else None
    return load_cases(cache_dir)


# --------------------------------------------------------------------------
# comparison (mirrors onnx.backend.test.runner.Runner.assert_similar_outputs)


def assert_similar_outputs(
    ref_outputs: list[np.ndarray], outputs: list[Any], rtol: float, atol: float
) -> None:
    np.testing.assert_equal(len(outputs), len(ref_outputs))
    for i, (out, ref) in enumerate(zip(outputs, ref_outputs)):
        assert isinstance(out, np.ndarray), (
            f"output {i}: engine returned {type(out).__name__}, expected np.ndarray"
        )
        np.testing.assert_array_equal(
            out.shape, ref.shape, err_msg=f"Output {i} has incorrect shape"
        )
        if ref.dtype == object:
            np.testing.assert_array_equal(out, ref)
        else:
            np.testing.assert_equal(out.dtype, ref.dtype, err_msg=f"Output {i} has wrong dtype")
            np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol, err_msg=f"Output {i}")


def _params() -> list[Any]:
    params = []
    for name in TEST_NAMES:
        marks = []
        if name in EXCLUDED:
            marks.append(pytest.mark.skip(reason=EXCLUDED_PREFIX + EXCLUDED[name]))
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.mark.parametrize("name", _params())
def test_onnx_node(name: str, node_cases: dict[str, NodeCase]) -> None:
    case = node_cases.get(name)
    if case is None:
        pytest.skip(f"not among the node tests of the installed onnx {onnx.__version__}")

    import tensorkiln

    model = onnx.load_model_from_string(case.model_bytes)
    inits = {t.name for t in model.graph.initializer}
    input_names = [vi.name for vi in model.graph.input if vi.name not in inits]
    output_names = [vi.name for vi in model.graph.output]

    eng = tensorkiln.build(model)
    for inputs, ref_outputs in case.data_sets:
        feeds = dict(zip(input_names, inputs))
        outs = eng.run(feeds)
        missing = [n for n in output_names if n not in outs]
        assert not missing, f"engine did not return outputs {missing} (got {sorted(outs)})"
        actual = [outs[n] for n in output_names]
        assert_similar_outputs(ref_outputs, actual, case.rtol, case.atol)


def test_excluded_file_names_known() -> None:
    """Every test named in excluded.txt is in the ORT-passing list (catches typos)."""
    unknown = sorted(set(EXCLUDED) - set(TEST_NAMES))
    assert not unknown, f"excluded.txt names tests not in ort_passing.txt: {unknown}"


def test_excluded_loader_requires_reason(tmp_path: Path) -> None:
    f = tmp_path / "excluded.txt"
    f.write_text("# header\n\ntest_abs  # not yet\ntest_add\n")
    with pytest.raises(ValueError, match="no '# reason'"):
        read_excluded(f)
    f.write_text("test_abs  #   \n")
    with pytest.raises(ValueError, match="no '# reason'"):
        read_excluded(f)
    f.write_text("# header\ntest_abs  # not yet  \n  test_add#fp16 rounding\n")
    assert read_excluded(f) == {"test_abs": "not yet", "test_add": "fp16 rounding"}
