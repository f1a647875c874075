"""Optimization profiles: per input min/opt/max shapes, like TensorRT's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tensorkiln.errors import FeedError, OptionError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    min: dict[str, Shape]
    opt: dict[str, Shape]
    max: dict[str, Shape]

    def contains(self, shapes: Mapping[str, Sequence[int]]) -> bool:
        for name, lo in self.min.items():
            s = shapes.get(name)
            hi = self.max[name]
            if s is None or len(s) != len(lo) or any(not (a <= d <= b) for a, d, b in zip(lo, s, hi)):
                return False
        return True

    def describe(self, name: str) -> str:
        return f"min {list(self.min[name])} … max {list(self.max[name])} (opt {list(self.opt[name])})"

    def to_json(self) -> dict[str, Any]:
        return {k: {n: list(s) for n, s in getattr(self, k).items()} for k in ("min", "opt", "max")}


class ProfileSet:
    """Several profiles; a call must fit at least one of them."""

    def __init__(self, profiles: list[Profile]) -> None:
        self.profiles = profiles
        self._ok: set[tuple[tuple[int, ...], ...]] = set()  # shape signatures already checked

    @staticmethod
    def parse(spec: Any, input_names: Sequence[str]) -> ProfileSet | None:
        """``{"x": {"min": (1, 8), "opt": (8, 128), "max": (32, 512)}}`` or a list of such dicts."""
        if spec is None or spec == {} or spec == []:
            return None
        items = spec if isinstance(spec, list) else [spec]
        profiles = []
        for k, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise OptionError(f"shapes profile #{k} must be a mapping of input name to min/opt/max")
            mins, opts, maxs = {}, {}, {}
            for name, r in item.items():
                if name not in input_names:
                    raise OptionError(f"shapes profile names unknown input {name!r}; inputs are {list(input_names)}")
                try:
                    lo, op, hi = (tuple(int(d) for d in r[key]) for key in ("min", "opt", "max"))
                except (KeyError, TypeError, ValueError):
                    raise OptionError(f"shapes[{name!r}] needs 'min', 'opt' and 'max' integer shapes, got {r!r}") \
                        from None
                if not (len(lo) == len(op) == len(hi)) or any(not (a <= b <= c) for a, b, c in zip(lo, op, hi)):
                    raise OptionError(f"shapes[{name!r}]: need min <= opt <= max per dim, got {lo}, {op}, {hi}")
                mins[name], opts[name], maxs[name] = lo, op, hi
            profiles.append(Profile(mins, opts, maxs))
        return ProfileSet(profiles)

    def check(self, names: Sequence[str], shapes: Sequence[Sequence[int]]) -> int:
        """Index of the first profile that fits; raises FeedError naming the input otherwise."""
        sig = tuple(tuple(s) for s in shapes)
        if sig in self._ok:
            return 0
        by_name = dict(zip(names, shapes))
        for i, p in enumerate(self.profiles):
            if p.contains(by_name):
                if len(self._ok) < 4096:
                    self._ok.add(sig)
                return i
        # name the first input that is outside the (first) profile
        p = self.profiles[0]
        for name in p.min:
            s = by_name.get(name)
            if s is None or not p.contains({**{n: p.opt[n] for n in p.min}, name: s}):
                ranges = "; ".join(f"profile {k}: {q.describe(name)}" for k, q in enumerate(self.profiles))
                raise FeedError(f"input {name!r} has shape {list(s) if s is not None else None}, outside every "
                                f"optimization profile ({ranges}); rebuild with wider shapes")
        raise FeedError("the input shapes fit no optimization profile together")

    def to_json(self) -> list[dict[str, Any]]:
        return [p.to_json() for p in self.profiles]
