import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorkiln
from tensorkiln.planner.memory import Block, MemoryPlan, _peak, assign_offsets
from tests.runtime.test_concurrency import conv_model

blocks_st = st.lists(
    st.tuples(st.integers(1, 10_000), st.integers(0, 30), st.integers(0, 10)), min_size=1, max_size=40
)


@settings(max_examples=200, deadline=None)
@given(blocks_st)
def test_no_two_live_tensors_overlap(spec: list[tuple[int, int, int]]) -> None:
    blocks = [Block(i, size, first, first + length) for i, (size, first, length) in enumerate(spec)]
    arena = assign_offsets(blocks)
    plan = MemoryPlan(0, _peak(blocks, 50), arena, blocks)
    assert plan.overlaps() == []
    assert arena >= plan.peak_bytes  # an arena can never be smaller than the live peak
    assert all(b.offset >= 0 and b.offset + b.size <= arena for b in blocks)


def test_plan_of_a_real_engine() -> None:
    eng = tensorkiln.build(conv_model())
    plan = eng.memory_plan({"x": np.zeros((4, 3, 12, 12), np.float32)})
    assert plan.overlaps() == []
    assert 0 < plan.peak_bytes <= plan.naive_bytes
    keep_all = tensorkiln.build(conv_model(), planner=False)
    plan_all = keep_all.memory_plan({"x": np.zeros((4, 3, 12, 12), np.float32)})
    assert plan_all.peak_bytes >= plan.peak_bytes  # without release at last use nothing is reused
