"""tensorkiln's own C kernels, compiled on first use with the system C compiler.

Each source file here is compiled once per machine into a shared library cached under
``~/.cache/tensorkiln/native`` (named by the hash of the source, compiler, flags and CPU), and
loaded with ctypes. The library is built with ``-fopenmp`` and links ``libgomp.so.1`` by its
soname, so in a process where torch already loaded its own ``libgomp.so.1`` the kernels share
torch's OpenMP threads (and ``torch.set_num_threads``) instead of starting a second pool.

A cached library is code that will run in this process: it is only loaded from a directory
and file owned by the current user and writable by nobody else; otherwise the source is
compiled into a private temporary directory. ``TENSORKILN_NATIVE=0`` turns native kernels off;
without a C compiler they are simply unavailable and the autotuner never offers them.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ACT_CODES = {"": 0, "Relu": 1, "Clip": 2}  # activations the kernels apply on their way out
_SRC_DIR = Path(__file__).resolve().parent
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c99"]
_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL | None] = {}
_why: dict[str, str] = {}


def _compiler() -> str | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    return cc


@functools.lru_cache(maxsize=4)
def _compiler_version(cc: str) -> str:
    return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout


def _cpu_fingerprint() -> str:
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                flags += line
            if line.startswith("flags"):
                break
    except OSError:
        pass
    return f"{platform.machine()} {flags}"


def _private(path: Path) -> bool:
    """Owned by this user and writable by nobody else."""
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.getuid() and not (st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _cache_dir() -> Path | None:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tensorkiln" / "native"
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return None
    return root if _private(root) else None


def _compile(src: Path, out: Path, cc: str) -> str | None:
    """Compile ``src`` to ``out`` atomically; returns an error text or None."""
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    cmd = [cc, *_FLAGS, str(src), "-o", str(tmp)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{' '.join(cmd)}: {e}"
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        return f"{' '.join(cmd)} failed: {r.stderr.strip()[:500]}"
    os.chmod(tmp, 0o700)
    os.replace(tmp, out)
    return None


Signatures = dict[str, list[Any]]  # C function name → its ctypes argument types (all return void)


def load(name: str, signatures: Signatures) -> ctypes.CDLL | None:
    """The compiled library for ``native/<name>.c`` with ``signatures`` declared, or None (see
    ``why_unavailable``)."""
    with _lock:
        if name in _libs:
            return _libs[name]
        lib = None
        try:
            lib = _load(name)
            if lib is not None:
                for fn, argtypes in signatures.items():
                    f = getattr(lib, fn)
                    f.argtypes, f.restype = argtypes, None
        except (OSError, AttributeError) as e:
            lib = None
            _why[name] = f"loading the compiled {name} kernels failed: {e}"
        _libs[name] = lib
        return lib


def loaded() -> list[ctypes.CDLL]:
    """The libraries loaded so far."""
    with _lock:
        return [lib for lib in _libs.values() if lib is not None]


def why_unavailable(name: str) -> str:
    """Why ``load(name, …)`` returned None ("" when it did not, or was not called yet)."""
    return _why.get(name, "")


def _load(name: str) -> ctypes.CDLL | None:
    if os.environ.get("TENSORKILN_NATIVE", "1") == "0":
        _why[name] = "native kernels are switched off (TENSORKILN_NATIVE=0)"
        return None
    if not sys.platform.startswith("linux"):
        _why[name] = f"native kernels are built on Linux only (this is {sys.platform})"
        return None
    cc = _compiler()
    if cc is None:
        _why[name] = "no C compiler found (cc, gcc or clang; or set CC)"
        return None
    src = _SRC_DIR / f"{name}.c"
    try:
        version = _compiler_version(cc)
    except (OSError, subprocess.TimeoutExpired) as e:
        _why[name] = f"the C compiler {cc} does not run: {e}"
        return None
    h = hashlib.sha256()
    for part in (src.read_bytes(), version.encode(), " ".join(_FLAGS).encode(), _cpu_fingerprint().encode()):
        h.update(part)
        h.update(b"\0")
    so_name = f"{name}-{h.hexdigest()[:20]}.so"
    cache = _cache_dir()
    if cache is not None:
        so = cache / so_name
        if not (so.is_file() and _private(so)):
            err = _compile(src, so, cc)
            if err:
                _why[name] = err
                return None
        return ctypes.CDLL(str(so))
    with tempfile.TemporaryDirectory(prefix="tensorkiln-native-") as d:
        so = Path(d) / so_name
        err = _compile(src, so, cc)
        if err:
            _why[name] = err
            return None
        return ctypes.CDLL(str(so))  # stays mapped after the directory is removed
