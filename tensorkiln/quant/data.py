"""Calibration data: the user's batches re-cut into fixed-size chunks.

The user hands in any iterable of feeds (dicts input name → array, any batch size). Samples
are taken one by one along axis 0, in order; every fifth sample (index 4, 9, 14, …) is held
out for choosing methods and checking accuracy (up to ``max_held_out``), the others are
re-batched into chunks of ``chunk`` samples (consecutive samples of one shape) for collecting
statistics. Which sample goes
where, and how the network sees it, depends only on the sequence of samples, so the
calibration result is the same for any batch size the user picked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from tensorkiln.errors import OptionError

HOLD_OUT_EVERY = 5


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class Rebatcher:
    def __init__(self, input_names: Sequence[str], chunk: int = 8, max_held_out: int = 64) -> None:
        self.input_names = list(input_names)
        self.chunk = chunk
        self.max_held_out = max_held_out
        self.held_out: list[dict[str, np.ndarray]] = []  # one sample each, batch dim kept
        self.n_samples = 0
        self.n_stats = 0

    def _check(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(feed, Mapping):
            raise OptionError(f"calibration_data must yield dicts input name → array, got {type(feed).__name__}")
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise OptionError(f"calibration feed lacks input(s) {missing}; the model's inputs are {self.input_names}")
        arrs = {n: _to_numpy(feed[n]) for n in self.input_names}
        sizes = {a.shape[0] if a.ndim else None for a in arrs.values()}
        if len(sizes) != 1 or None in sizes:
            raise OptionError(f"calibration feed inputs must share a batch size along axis 0, got "
                              f"{ {n: a.shape for n, a in arrs.items()} }")
        return arrs

    def chunks(self, data: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, np.ndarray]]:
        """Statistics chunks (each ``chunk`` samples, the last may be smaller)."""
        pending: list[dict[str, np.ndarray]] = []
        for feed in data:
            arrs = self._check(feed)
            n = next(iter(arrs.values())).shape[0]
            for i in range(n):
                sample = {k: a[i:i + 1] for k, a in arrs.items()}
                idx = self.n_samples
                self.n_samples += 1
                if idx % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1 and len(self.held_out) < self.max_held_out:
                    self.held_out.append(sample)
                    continue
                if pending and any(pending[0][k].shape != a.shape for k, a in sample.items()):
                    yield _stack(pending)  # samples of another shape start a new chunk
                    pending = []
                pending.append(sample)
                self.n_stats += 1
                if len(pending) == self.chunk:
                    yield _stack(pending)
                    pending = []
        if pending:
            yield _stack(pending)


def _stack(samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(np.concatenate([s[k] for s in samples])) for k in samples[0]}


def batches_of(samples: list[dict[str, np.ndarray]], chunk: int) -> list[dict[str, np.ndarray]]:
    """Consecutive samples of one shape, at most ``chunk`` per batch."""
    out: list[dict[str, np.ndarray]] = []
    group: list[dict[str, np.ndarray]] = []
    for s in samples:
        if group and (len(group) == chunk or any(group[0][k].shape != a.shape for k, a in s.items())):
            out.append(_stack(group))
            group = []
        group.append(s)
    if group:
        out.append(_stack(group))
    return out


def load_calibration(path: str, input_names: Sequence[str], batch: int = 32) -> Iterator[dict[str, np.ndarray]]:
    """Calibration feeds from a file or directory (the CLI's ``--calib``), read without pickle.

    * ``data.npz``: one array per input name, samples along axis 0 (fed ``batch`` at a time);
    * a directory: its ``.npz`` files in name order (each one feed, as above), or, for a model
      with one input, its ``.npy`` files (each one array of samples).
    """
    import os

    def from_npz(f: str) -> Iterator[dict[str, np.ndarray]]:
        with np.load(f, allow_pickle=False) as z:
            arrs = {k: z[k] for k in z.files}
        missing = [n for n in input_names if n not in arrs]
        if missing:
            raise OptionError(f"{f}: no array for input(s) {missing} (it holds {sorted(arrs)})")
        n = next(iter(arrs.values())).shape[0] if arrs else 0
        for i in range(0, n, batch):
            yield {k: arrs[k][i:i + batch] for k in input_names}

    if os.path.isdir(path):
        files = sorted(os.listdir(path))
        npz = [os.path.join(path, f) for f in files if f.endswith(".npz")]
        npy = [os.path.join(path, f) for f in files if f.endswith(".npy")]
        if npz:
            for f in npz:
                yield from from_npz(f)
        elif npy and len(input_names) == 1:
            for f in npy:
                yield {input_names[0]: np.load(f, allow_pickle=False)}
        else:
            raise OptionError(f"calibration directory {path!r} holds no .npz files (nor .npy files for a "
                              f"one-input model); the model's inputs are {list(input_names)}")
    elif path.endswith(".npz") and os.path.isfile(path):
        yield from from_npz(path)
    else:
        raise OptionError(f"--calib expects a .npz file or a directory of .npz/.npy files, got {path!r}")
