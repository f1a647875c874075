"""config.pbtxt parsing/completion and the repository's path rules (no server needed)."""

from __future__ import annotations

import os

import pytest

from tensorkiln.engine import TensorSpec
from tensorkiln.serve import config as cfgmod
from tensorkiln.serve.model import batch_policy
from tensorkiln.serve.repository import ModelRepository, check_name
from tensorkiln.serve.stats import Metrics
from tensorkiln.serve.status import InvalidArgument, NotFound, Unsupported
from tests.helpers import tiny_model
from tests.serve.conftest import write_model

X = TensorSpec("x", "float32", ("batch", 4))
Y = TensorSpec("y", "float32", ("batch", 3))

FULL = """
name: "m"
max_batch_size: 16
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 500
  preserve_ordering: true
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 1000 allow_timeout_override: true
                         max_queue_size: 7 }
  priority_queue_policy { key: 1 value { max_queue_size: 3 } }
}
instance_group [ { count: 2 kind: KIND_CPU } ]
version_policy: { specific { versions: [ 1 ] } }
parameters { key: "tensorkiln_adaptive_batching" value { string_value: "true" } }
"""


def test_full_config_parses_like_triton():
    cfg = cfgmod.parse_pbtxt(FULL, "m/config.pbtxt")
    cfg = cfgmod.complete(cfg, "m", [X], [Y], max_batch_given=True, default_max_batch_size=4)
    pol = batch_policy(cfg)
    assert pol.enabled and pol.max_rows == 16 and pol.delay_s == pytest.approx(5e-4)
    assert pol.preferred == (4, 8) and pol.preserve_ordering and pol.adaptive
    assert pol.levels == 2 and pol.default_level == 2
    assert pol.default_policy.delay_on_timeout and pol.default_policy.timeout_us == 1000
    assert pol.default_policy.allow_override and pol.default_policy.max_queue_size == 7
    assert pol.policy(1).max_queue_size == 3 and pol.policy(2).max_queue_size == 7
    assert sum(g.count for g in cfg.instance_group) == 2
    j = cfgmod.to_json(cfg)
    assert j["input"][0]["dims"] == [4]  # int64 printed as numbers
    assert j["dynamic_batching"]["default_queue_policy"]["default_timeout_microseconds"] == 1000
    assert j["max_batch_size"] == 16 and j["dynamic_batching"]["preserve_ordering"] is True


def test_no_config_is_derived():
    cfg = cfgmod.complete(cfgmod.ModelConfig(), "m", [X], [Y], max_batch_given=False, default_max_batch_size=4)
    assert cfg.max_batch_size == 4 and cfg.HasField("dynamic_batching")
    assert [i.name for i in cfg.input] == ["x"] and list(cfg.input[0].dims) == [4]
    assert cfg.version_policy.latest.num_versions == 1
    fixed = TensorSpec("x", "float32", (1, 4))
    cfg = cfgmod.complete(cfgmod.ModelConfig(), "m", [fixed], [TensorSpec("y", "float32", (1, 3))],
                          max_batch_given=False, default_max_batch_size=4)
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [1, 4]


@pytest.mark.parametrize("text, err", [
    ('max_batch_size: 4 input [ { name: "q" data_type: TYPE_FP32 dims: [4] } ]', "not a model input"),
    ('max_batch_size: 4 input [ { name: "x" data_type: TYPE_INT32 dims: [4] } ]', "TYPE_FP32"),
    ('max_batch_size: 4 input [ { name: "x" data_type: TYPE_FP32 dims: [5] } ]', "dims"),
    ('max_batch_size: 4 dynamic_batching { preferred_batch_size: [ 9 ] }', "preferred_batch_size"),
    ('max_batch_size: 0 dynamic_batching { }', "needs max_batch_size"),
    ('name: "other"', "must match"),
    ('max_batch_size: 4 bogus_field: 1', "bogus_field"),
])
def test_bad_configs(text, err):
    with pytest.raises(InvalidArgument, match=err):
        cfg = cfgmod.parse_pbtxt(text, "m/config.pbtxt")
        cfgmod.complete(cfg, "m", [X], [Y], max_batch_given=True, default_max_batch_size=4)


def test_unsupported_configs():
    for text in ('sequence_batching { }', 'instance_group [ { kind: KIND_GPU } ]'):
        with pytest.raises(Unsupported):
            cfgmod.complete(cfgmod.parse_pbtxt(text, "c"), "m", [X], [Y], max_batch_given=False,
                            default_max_batch_size=4)


def test_batching_needs_a_batch_dim():
    fixed = TensorSpec("x", "float32", (1, 4))
    with pytest.raises(InvalidArgument, match="max_batch_size"):
        cfgmod.complete(cfgmod.parse_pbtxt("max_batch_size: 8", "c"), "m", [fixed], [Y], max_batch_given=True,
                        default_max_batch_size=4)


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "a\\b", "", "x" * 200, "../etc"])
def test_bad_model_names(name):
    with pytest.raises(InvalidArgument):
        check_name(name)


def test_repository_paths_stay_inside(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    write_model(root, "ok", tiny_model(), versions=(1, 3, 2))
    outside = tmp_path / "outside"
    write_model(outside, "m", tiny_model())
    os.symlink(outside / "m", root / "link")  # a symlinked model folder that leaves the repository
    write_model(root, "badfile", tiny_model(), 'default_model_filename: "../../outside/m/1/model.onnx"')
    repo = ModelRepository(root, Metrics(lambda: []))
    assert "link" not in repo.names() and "ok" in repo.names()
    with pytest.raises(InvalidArgument, match="leaves"):
        repo.model_dir("link")
    with pytest.raises(NotFound):
        repo.model_dir("missing")
    cfg, _ = repo.read_config("badfile")
    with pytest.raises(InvalidArgument, match="plain file name"):
        repo.model_file("badfile", "1", cfg)
    cfg, _ = repo.read_config("ok")
    assert repo.versions_to_load("ok", cfg) == ["3"]
    cfg.version_policy.latest.num_versions = 2
    assert repo.versions_to_load("ok", cfg) == ["2", "3"]
    cfg.version_policy.all.SetInParent()
    assert repo.versions_to_load("ok", cfg) == ["1", "2", "3"]
    cfg.version_policy.specific.versions.append(7)
    with pytest.raises(InvalidArgument, match="do not exist"):
        repo.versions_to_load("ok", cfg)


def test_warmup_batch_sizes(tmp_path):
    from tensorkiln import build
    from tensorkiln.serve.model import ServedModel

    eng = build(tiny_model())
    cfg = cfgmod.parse_pbtxt("max_batch_size: 32 dynamic_batching { preferred_batch_size: [ 12 ] }", "c")
    cfg = cfgmod.complete(cfg, "m", eng.inputs, eng.outputs, max_batch_given=True, default_max_batch_size=4)
    m = ServedModel("m", "1", cfg, eng, Metrics(lambda: []), 1 << 20)
    assert m.warmup_batch_sizes() == [1, 32, 12, 16, 8, 4, 2, 3, 5, 6, 7]
    m.warmup()
    m.close()


def test_pad_sizes_parameter():
    def cfg(v):
        c = cfgmod.parse_pbtxt(f'max_batch_size: 8 parameters {{ key: "tensorkiln_pad_batch" value {{ '
                               f'string_value: "{v}" }} }}', "c")
        return c
    assert cfgmod.pad_sizes(cfg("auto"), [1, 8, 4, 2]) == [1, 2, 4, 8]
    assert cfgmod.pad_sizes(cfg("2, 8"), []) == [2, 8]
    assert cfgmod.pad_sizes(cfg("off"), [1, 8]) == []
    assert cfgmod.pad_sizes(cfgmod.parse_pbtxt("max_batch_size: 8", "c"), [1, 8]) == []
    for bad in ("1,16", "0,4", "x"):
        with pytest.raises(InvalidArgument, match="tensorkiln_pad_batch"):
            cfgmod.pad_sizes(cfg(bad), [])
