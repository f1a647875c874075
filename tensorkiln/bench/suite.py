"""The seed's benchmark suite: zoo AlexNet, GoogLeNet, ResNet-50, VGG-19 and the LSTM translator.

Each network runs over the seed's batch sizes that fit this machine (the seed used 1, 2, 4,
8, 64, 128; a 2-core machine stops at 16, and at 4 for VGG-19, whose batch 4 already takes
seconds), one stream, trtexec-style timing. A row has the seed's columns: batch, samples/s
(images/s, or sentences/s for the translator), power, samples/s per watt and latency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tensorkiln.bench.inputs import resolve_model
from tensorkiln.bench.measure import ConfigResult
from tensorkiln.bench.session import Bench, BenchSettings


@dataclass(frozen=True)
class SuiteModel:
    name: str
    batches: tuple[int, ...]
    unit: str  # what one sample is


SEED_SUITE: tuple[SuiteModel, ...] = (
    SuiteModel("alexnet", (1, 2, 4, 8, 16), "images"),
    SuiteModel("googlenet", (1, 2, 4, 8, 16), "images"),
    SuiteModel("resnet50", (1, 2, 4, 8, 16), "images"),
    SuiteModel("vgg19", (1, 2, 4), "images"),
    SuiteModel("lstm_nmt", (1, 2, 4, 8, 16), "sentences"),
)
SUITES = {"seed": SEED_SUITE}


@dataclass
class SuiteRow:
    model: str
    unit: str
    result: ConfigResult

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "unit": self.unit, **self.result.to_json(raw=False)}


def run_suite(name: str = "seed", *, models: list[str] | None = None, max_batch: int | None = None,
              duration_s: float = 2.0, iterations: int = 3, warmup_s: float = 0.3, threads: int | None = None,
              on_row: Callable[[SuiteRow], None] | None = None,
              on_model: Callable[[str], None] | None = None) -> list[SuiteRow]:
    if name not in SUITES:
        from tensorkiln.errors import OptionError

        raise OptionError(f"unknown suite {name!r}; suites: {', '.join(SUITES)}")
    rows: list[SuiteRow] = []
    for m in SUITES[name]:
        if models and m.name not in models:
            continue
        if on_model:
            on_model(m.name)
        batches = [b for b in m.batches if max_batch is None or b <= max_batch]
        bench = Bench(resolve_model(m.name), BenchSettings(batches=batches, duration_s=duration_s,
                                                           iterations=iterations, warmup_s=warmup_s,
                                                           threads=threads, overhead_pairs=0))
        for b in batches:
            r = bench.measure(b, 1, overhead=False)
            row = SuiteRow(m.name, m.unit, r)
            rows.append(row)
            if on_row:
                on_row(row)
        del bench
    return rows
