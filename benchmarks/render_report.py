"""Re-render a bench report from its JSON, and screenshot it with headless Chromium.

    python benchmarks/render_report.py bench.json [-o report.html] [--screenshot report.png]

``tensorkiln bench ... --json bench.json`` keeps every number; this script turns it into the
same self-contained HTML page that ``--report`` writes, and (with --screenshot) checks that
the page opens and its plots render by taking a full-page screenshot in headless Chromium
(``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from tensorkiln.bench.report import write_report


def screenshot(html: Path, png: Path, width: int = 1400, height: int = 3000) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        raise SystemExit("no chromium found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={width},{height}",
                        html.resolve().as_uri()], check=True, capture_output=True, timeout=120)


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json_file")
    p.add_argument("-o", "--output", help="HTML to write (default: next to the JSON)")
    p.add_argument("--screenshot", help="PNG to write with headless Chromium")
    p.add_argument("--height", type=int, default=3000)
    a = p.parse_args()
    data = json.loads(Path(a.json_file).read_text())
    out = Path(a.output or Path(a.json_file).with_suffix(".html"))
    write_report(data, str(out))
    print(f"report: {out}")
    if a.screenshot:
        screenshot(out, Path(a.screenshot), height=a.height)
        print(f"screenshot: {a.screenshot}")


if __name__ == "__main__":
    cli()
