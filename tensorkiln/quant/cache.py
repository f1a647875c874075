"""Calibration cache: readable JSON, tensor name → range and method (never pickle).

    {"format": "tensorkiln-calibration", "version": 1,
     "samples": 1437,
     "tensors": {"conv1_out": {"lo": 0.0, "hi": 3.52, "method": "entropy"}, ...}}

A cache written for one model and read for another that lacks some tensors is rejected
with the missing names; extra entries are ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tensorkiln.errors import OptionError
from tensorkiln.quant.calibrate import TensorRange

FORMAT = "tensorkiln-calibration"
VERSION = 1


def save(path: str | os.PathLike[str], ranges: dict[str, TensorRange], samples: int = 0) -> None:
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "samples": samples,
        "tensors": {k: {"lo": r.lo, "hi": r.hi, "method": r.method} for k, r in sorted(ranges.items())},
    }
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


def load(path: str | os.PathLike[str]) -> dict[str, TensorRange]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise OptionError(f"cannot read calibration cache {str(path)!r}: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise OptionError(f"{str(path)!r} is not a tensorkiln calibration cache (format {FORMAT!r} v{VERSION})")
    out: dict[str, TensorRange] = {}
    for k, entry in doc.get("tensors", {}).items():
        try:
            out[k] = TensorRange(float(entry["lo"]), float(entry["hi"]), str(entry.get("method", "?")))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise OptionError(f"calibration cache {str(path)!r}: bad entry for tensor {k!r}: {entry!r}") from None
    return out
