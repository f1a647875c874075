import os
from pathlib import Path

import numpy as np
import pytest

from tensorkiln.bench.power import EnergyMeter, EnergyReading, efficiency
from tensorkiln.bench.stats import LatencyStats


def test_latency_stats_match_numpy() -> None:
    t = np.random.default_rng(0).gamma(4.0, 2.0, 500)
    s = LatencyStats.of(t)
    assert s.n == 500 and s.min == t.min() and s.max == t.max()
    assert s.median == pytest.approx(np.median(t)) and s.mean == pytest.approx(t.mean())
    for q, v in ((90, s.p90), (95, s.p95), (99, s.p99)):
        assert v == pytest.approx(np.percentile(t, q))
    assert s.cv == pytest.approx(t.std(ddof=1) / t.mean())
    assert s.min <= s.median <= s.p90 <= s.p95 <= s.p99 <= s.max


def test_noise_warning_only_for_noisy_runs() -> None:
    steady = LatencyStats.of([10.0 + 0.01 * (i % 7) for i in range(100)])
    assert steady.noise_warning() is None
    stalls = LatencyStats.of([10.0] * 90 + [40.0] * 10)
    w = stalls.noise_warning()
    assert w is not None and "too noisy" in w and "coefficient of variation" in w
    assert "only 3 timed runs" in (LatencyStats.of([1.0, 1.0, 1.0]).noise_warning() or "")
    with pytest.raises(ValueError):
        LatencyStats.of([])


def _zone(root: Path, name: str, uj: int, max_uj: int = 1000, label: str = "package-0") -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "energy_uj").write_text(f"{uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (d / "name").write_text(label + "\n")
    return d


def test_rapl_counts_top_level_zones_and_wraps(tmp_path: Path) -> None:
    z0 = _zone(tmp_path, "intel-rapl:0", 900, 1000, "package-0")
    _zone(tmp_path, "intel-rapl:0:0", 5, 1000, "core")  # part of package-0: not added again
    z1 = _zone(tmp_path, "intel-rapl:1", 100, 10**6, "package-1")
    m = EnergyMeter.open("cpu", root=str(tmp_path))
    assert m.readable and m.source == "rapl:package-0+package-1"
    tok = m.start()
    (z0 / "energy_uj").write_text("150\n")  # wrapped: 900 -> 1000 -> 150 is 250 uJ
    (z1 / "energy_uj").write_text("1100\n")  # 1000 uJ
    r = m.stop(tok)
    assert r.joules == pytest.approx(1250e-6)
    assert r.watts is not None and r.watts > 0


def test_missing_powercap_says_not_readable(tmp_path: Path) -> None:
    m = EnergyMeter.open("cpu", root=str(tmp_path / "nope"))
    assert not m.readable
    assert m.unreadable.startswith("not readable (no RAPL energy counters under")
    r = m.stop(m.start())
    assert r.joules is None and r.watts is None
    eff = efficiency(100, r)
    assert eff["samples_per_s_per_w"] is None and eff["joules_per_sample"] is None
    assert "not readable" in str(eff["note"])
    empty = EnergyMeter.open("cpu", root=str(tmp_path))  # exists, no rapl zones
    assert not empty.readable and "no RAPL" in empty.unreadable


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: cannot simulate a root-only counter")
def test_root_only_counter_is_reported(tmp_path: Path) -> None:
    d = _zone(tmp_path, "intel-rapl:0", 1)
    (d / "energy_uj").chmod(0)
    m = EnergyMeter.open("cpu", root=str(tmp_path))
    assert not m.readable and "root-only" in m.unreadable


def test_efficiency_math() -> None:
    r = EnergyReading(joules=20.0, seconds=2.0, source="rapl:package-0")
    e = efficiency(50, r)
    assert e["watts"] == pytest.approx(10.0)
    assert e["joules_per_sample"] == pytest.approx(0.4)
    assert e["samples_per_s_per_w"] == pytest.approx(2.5)  # 25 samples/s / 10 W


def test_nvml_meter_without_pynvml_or_gpu_says_why() -> None:
    m = EnergyMeter.open("cuda")
    if m.readable:
        pytest.skip("an NVIDIA GPU with NVML energy counters is present")
    assert m.unreadable.startswith("not readable (")
