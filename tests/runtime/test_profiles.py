import numpy as np
import pytest

import tensorkiln
from tensorkiln.errors import FeedError, OptionError
from tests.runtime.test_concurrency import conv_model

PROFILE = {"x": {"min": (1, 3, 12, 12), "opt": (4, 3, 12, 12), "max": (8, 3, 12, 12)}}


def test_shapes_inside_profile_run() -> None:
    eng = tensorkiln.build(conv_model(), shapes=PROFILE)
    for b in (1, 3, 8):
        assert eng.run({"x": np.zeros((b, 3, 12, 12), np.float32)})["y"].shape == (b, 5)


def test_shape_outside_profile_names_input_and_ranges() -> None:
    eng = tensorkiln.build(conv_model(), shapes=PROFILE)
    with pytest.raises(FeedError, match=r"input 'x' has shape \[9, 3, 12, 12\], outside every optimization "
                                        r"profile \(profile 0: min \[1, 3, 12, 12\] … max \[8, 3, 12, 12\]"):
        eng.run({"x": np.zeros((9, 3, 12, 12), np.float32)})


def test_several_profiles() -> None:
    big = {"x": {"min": (16, 3, 12, 12), "opt": (32, 3, 12, 12), "max": (32, 3, 12, 12)}}
    eng = tensorkiln.build(conv_model(), shapes=[PROFILE, big])
    eng.run({"x": np.zeros((20, 3, 12, 12), np.float32)})
    with pytest.raises(FeedError, match="profile 1"):
        eng.run({"x": np.zeros((12, 3, 12, 12), np.float32)})


def test_bad_profiles_rejected_at_build() -> None:
    with pytest.raises(OptionError, match="min <= opt <= max"):
        tensorkiln.build(conv_model(), shapes={"x": {"min": (4, 3, 12, 12), "opt": (2, 3, 12, 12),
                                                     "max": (8, 3, 12, 12)}})
    with pytest.raises(OptionError, match="unknown input"):
        tensorkiln.build(conv_model(), shapes={"nope": {"min": (1,), "opt": (1,), "max": (1,)}})


def test_profiles_survive_save_load(tmp_path: object) -> None:
    import pathlib

    p = pathlib.Path(str(tmp_path)) / "e.tkengine"
    tensorkiln.build(conv_model(), shapes=PROFILE).save(p)
    eng = tensorkiln.load(p, streams=1)
    with pytest.raises(FeedError, match="outside every"):
        eng.run({"x": np.zeros((9, 3, 12, 12), np.float32)})
