"""Energy counters: RAPL on CPUs (Intel, and AMD on newer kernels), NVML on NVIDIA GPUs.

A meter reads a cumulative energy counter before and after a timed window; the difference
over the window's duration is the average power. Where no counter can be read the meter says
why, and the bench reports that sentence instead of a number — it never estimates power.

RAPL counts the whole package (every process on it), so on a shared machine the figure
includes the neighbours' work; the report says so.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass, field

POWERCAP = "/sys/class/powercap"


@dataclass
class EnergyReading:
    joules: float | None
    seconds: float
    source: str  # "rapl:package-0+package-1", "nvml:0", or "" when unreadable
    note: str = ""  # why there is no figure, or what the figure covers

    @property
    def watts(self) -> float | None:
        return self.joules / self.seconds if self.joules is not None and self.seconds > 0 else None


@dataclass
class _RaplZone:
    name: str
    path: str
    max_uj: int


@dataclass
class EnergyMeter:
    """``m = EnergyMeter.open(); tok = m.start(); ...; reading = m.stop(tok)``."""

    zones: list[_RaplZone] = field(default_factory=list)
    nvml_handles: list[object] = field(default_factory=list)
    unreadable: str = ""

    @staticmethod
    def open(device: str = "cpu", root: str = POWERCAP) -> EnergyMeter:
        if device.startswith("cuda"):
            return _open_nvml()
        return _open_rapl(root)

    @property
    def readable(self) -> bool:
        return not self.unreadable

    @property
    def source(self) -> str:
        if self.zones:
            return "rapl:" + "+".join(z.name for z in self.zones)
        if self.nvml_handles:
            return "nvml:" + ",".join(str(i) for i in range(len(self.nvml_handles)))
        return ""

    def _read(self) -> list[int]:
        if self.zones:
            out = []
            for z in self.zones:
                with open(z.path) as f:
                    out.append(int(f.read().strip()))
            return out
        import pynvml  # type: ignore[import-not-found]

        return [int(pynvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self.nvml_handles]  # mJ

    def start(self) -> tuple[float, list[int]]:
        return time.perf_counter(), (self._read() if self.readable else [])

    def stop(self, token: tuple[float, list[int]]) -> EnergyReading:
        t0, before = token
        if not self.readable:
            return EnergyReading(None, time.perf_counter() - t0, "", self.unreadable)
        after = self._read()
        dt = time.perf_counter() - t0
        if self.zones:
            uj = 0
            for z, a, b in zip(self.zones, before, after):
                d = b - a
                if d < 0:  # the counter wrapped
                    d += z.max_uj
                uj += d
            return EnergyReading(uj * 1e-6, dt, self.source,
                                 "RAPL package energy: includes every process on the package")
        mj = sum(b - a for a, b in zip(before, after))
        return EnergyReading(mj * 1e-3, dt, self.source, "NVML total energy of the GPU board")


def _open_rapl(root: str) -> EnergyMeter:
    if not os.path.isdir(root):
        return EnergyMeter(unreadable=f"not readable (no RAPL energy counters under {root}: it does not exist)")
    # top-level zones only (intel-rapl:0, amd-rapl... :0); sub-zones (intel-rapl:0:0) are parts of them
    cands = sorted(p for p in glob.glob(os.path.join(root, "*rapl:*"))
                   if os.path.basename(p).count(":") == 1)
    if not cands:
        return EnergyMeter(unreadable=f"not readable (no RAPL energy counters under {root})")
    zones: list[_RaplZone] = []
    denied: list[str] = []
    for d in cands:
        path = os.path.join(d, "energy_uj")
        if not os.path.exists(path):
            continue
        try:
            with open(path) as f:
                int(f.read().strip())
        except PermissionError:
            denied.append(path)
            continue
        except (OSError, ValueError):
            continue
        name = _read_text(os.path.join(d, "name")) or os.path.basename(d)
        max_uj = int(_read_text(os.path.join(d, "max_energy_range_uj")) or 2**32)
        zones.append(_RaplZone(name, path, max_uj))
    if zones:
        return EnergyMeter(zones=zones)
    if denied:
        return EnergyMeter(unreadable=f"not readable (RAPL counters exist but {denied[0]} is root-only: run as "
                                      "root or make energy_uj readable)")
    return EnergyMeter(unreadable=f"not readable (no RAPL energy_uj counters under {root})")


def _open_nvml() -> EnergyMeter:
    try:
        import pynvml
    except ImportError:
        return EnergyMeter(unreadable="not readable (pynvml is not installed: pip install nvidia-ml-py)")
    try:
        pynvml.nvmlInit()
        n = pynvml.nvmlDeviceGetCount()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
        for h in handles:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
    except Exception as e:  # NVMLError subclasses: not supported, no permission, no driver
        return EnergyMeter(unreadable=f"not readable (NVML: {e})")
    if not handles:
        return EnergyMeter(unreadable="not readable (NVML sees no GPU)")
    return EnergyMeter(nvml_handles=handles)


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def efficiency(samples: int, reading: EnergyReading) -> dict[str, float | str | None]:
    """samples/s per watt and joules per sample for a window, or the reason there are none."""
    if reading.joules is None or reading.joules <= 0 or samples <= 0:
        return {"watts": None, "samples_per_s_per_w": None, "joules_per_sample": None,
                "source": reading.source, "note": reading.note or "no energy was counted"}
    return {
        "watts": reading.watts,
        "samples_per_s_per_w": samples / reading.joules,  # (samples/s) / (J/s)
        "joules_per_sample": reading.joules / samples,
        "source": reading.source,
        "note": reading.note,
    }
