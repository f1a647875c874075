"""The timing cache: tactic timings persisted on disk, keyed by machine and op signature.

File format (JSON, never pickled)::

    {"format": "tensorkiln-timing-cache", "version": 1,
     "machine": {fingerprint…}, "entries": {"<op signature>|<tactic>@<version>": ms, …}}

One file per machine fingerprint (CPU model, ISA flags, thread count, torch and tensorkiln
versions), so a cache copied to another machine is simply not used. Entries from any model
are reused by any other with the same layer signature. A read-only cache is used but never
written; ``merge_caches`` combines caches of the same machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tensorkiln.errors import OptionError, UserError

FORMAT = "tensorkiln-timing-cache"
VERSION = 1


def machine_key(fingerprint: dict[str, Any]) -> str:
    keys = ("cpu", "isa", "machine", "threads", "torch", "tensorkiln", "device")
    blob = json.dumps({k: fingerprint.get(k) for k in keys}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_path(fingerprint: dict[str, Any]) -> Path:
    base = os.environ.get("TENSORKILN_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "tensorkiln"
    return root / "timing" / f"{machine_key(fingerprint)}.json"


class TimingCache:
    def __init__(self, path: Path | None, fingerprint: dict[str, Any]) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.entries: dict[str, float] = {}
        self.hits = 0
        self.misses = 0
        self._dirty = False
        if path is not None and path.is_file():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"timing cache {str(path)!r} is unreadable ({e}); delete it or pass another path") \
                from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise UserError(f"{str(path)!r} is not a tensorkiln timing cache")
        if doc.get("version") != VERSION:
            return  # another format version: start fresh, never misread
        if machine_key(doc.get("machine", {})) != machine_key(self.fingerprint):
            return  # timings from another machine do not apply here
        entries = doc.get("entries", {})
        if isinstance(entries, dict):
            self.entries = {str(k): float(v) for k, v in entries.items() if isinstance(v, (int, float))}

    def get(self, key: str) -> float | None:
        v = self.entries.get(key)
        if v is None:
            self.misses += 1
        else:
            self.hits += 1
        return v

    def put(self, key: str, ms: float) -> None:
        self.entries[key] = float(ms)
        self._dirty = True

    def save(self) -> bool:
        """Write atomically; a read-only location is left alone. Returns whether it wrote."""
        if self.path is None or not self._dirty:
            return False
        doc = {"format": FORMAT, "version": VERSION, "machine": self.fingerprint,
               "entries": dict(sorted(self.entries.items()))}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".timing-", dir=str(self.path.parent))
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1)
            os.replace(tmp, self.path)
        except OSError:
            return False  # shared read-only cache: use it, never write it
        self._dirty = False
        return True


def merge_caches(paths: list[str | os.PathLike[str]], out: str | os.PathLike[str]) -> int:
    """Merge caches of the same machine into ``out``; returns the number of entries."""
    machine: dict[str, Any] | None = None
    entries: dict[str, float] = {}
    for p in paths:
        doc = json.loads(Path(p).read_text())
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise OptionError(f"{str(p)!r} is not a version-{VERSION} tensorkiln timing cache")
        if machine is not None and machine_key(doc["machine"]) != machine_key(machine):
            raise OptionError(f"{str(p)!r} was made on another machine; caches of different machines don't merge")
        machine = doc["machine"]
        entries.update(doc.get("entries", {}))
    cache = TimingCache(None, machine or {})
    cache.entries = entries
    cache.path = Path(out)
    cache._dirty = True
    cache.save()
    return len(entries)
