"""Tensor memory planning: lifetimes → offsets in one arena."""

from tensorkiln.planner.memory import MemoryPlan, plan_memory

__all__ = ["MemoryPlan", "plan_memory"]
