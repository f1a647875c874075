"""A small CNN trained on scikit-learn's bundled digits (8x8 upscaled to 28x28), fixed seed.

Used by the INT8 tests: train (≈20 s on one core), export to ONNX (opset 17, BatchNorm kept
so the builder folds it), calibrate on training images, compare test accuracy.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np


@dataclass
class Digits:
    model: bytes  # ONNX model (input "x" [N, 1, 28, 28] float32, output "logits" [N, 10])
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def accuracy(self, logits: np.ndarray) -> float:
        return float((np.asarray(logits).argmax(axis=1) == self.y_test).mean())


def load_images() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32))[:, None]
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    x = ((x - 0.5) / 0.5).numpy()
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    n_test = len(y) // 5
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], y[tr], x[te], y[te]


def train(epochs: int = 12, seed: int = 0) -> Digits:
    import torch
    from torch import nn

    x_tr, y_tr, x_te, y_te = load_images()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10),
        )
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(y_tr) + 63) // 64))
        xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
        g = torch.Generator().manual_seed(seed)
        net.train()
        for _ in range(epochs):
            perm = torch.randperm(len(yt), generator=g)
            for i in range(0, len(yt), 64):
                idx = perm[i:i + 64]
                # small random shifts: a little augmentation
                xb = torch.roll(xt[idx], shifts=(int(torch.randint(-1, 2, (), generator=g)),
                                                 int(torch.randint(-1, 2, (), generator=g))), dims=(2, 3))
                loss = nn.functional.cross_entropy(net(xb), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
        buf = io.BytesIO()
        torch.onnx.export(net, (torch.zeros(1, 1, 28, 28),), buf, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"], do_constant_folding=False,
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    finally:
        torch.set_num_threads(threads)
    return Digits(buf.getvalue(), x_tr, y_tr, x_te, y_te)
