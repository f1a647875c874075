"""A self-contained HTML report of a bench run: tables, and PNG plots embedded as base64.

Plots (matplotlib, Agg backend): throughput vs batch, latency vs batch, the throughput–latency
curve with the latency budget line, per-layer profile bars, and the peers side by side. The
page reads only the JSON that ``Bench.to_json`` writes, so a saved JSON can be re-rendered.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

COLORS = {"tensorkiln": "#d62728", "ort": "#1f77b4", "openvino": "#9467bd", "torch": "#ff7f0e"}


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        from tensorkiln.errors import OptionError

        raise OptionError("--report needs matplotlib: pip install matplotlib (or tensorkiln[dev])") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _by_streams(configs: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for c in configs:
        out.setdefault(int(c["streams"]), []).append(c)
    return {k: sorted(v, key=lambda c: c["batch"]) for k, v in sorted(out.items())}


def plot_throughput(data: dict[str, Any]) -> str | None:
    configs = data.get("configs") or []
    peers = (data.get("peers") or {}).get("batches") or []
    if not configs and not peers:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for st, cs in _by_streams(configs).items():
        ax.plot([c["batch"] for c in cs], [c["samples_per_s"] for c in cs], "o-", color=COLORS["tensorkiln"],
                alpha=1.0 if st == 1 else 0.55, label=f"tensorkiln, {st} stream{'s' if st > 1 else ''} (timed loop)")
    for name, pts in _peer_series(peers, "samples_per_s").items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "s--", color=COLORS.get(name, "gray"),
                alpha=0.6 if name == "tensorkiln" else 1.0, label=f"{_label(data, name)} (side by side)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("samples / s")
    ax.set_title("Throughput vs batch")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_latency(data: dict[str, Any]) -> str | None:
    configs = data.get("configs") or []
    if not configs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for st, cs in _by_streams(configs).items():
        b = [c["batch"] for c in cs]
        ax.plot(b, [c["latency_ms"]["median"] for c in cs], "o-", label=f"median, {st} stream(s)")
        ax.plot(b, [c["latency_ms"]["p99"] for c in cs], "v:", label=f"p99, {st} stream(s)")
        ax.fill_between(b, [c["latency_ms"]["min"] for c in cs], [c["latency_ms"]["max"] for c in cs], alpha=0.12)
    budget = (data.get("latency_budget") or {}).get("budget_ms")
    if budget:
        ax.axhline(budget, color="k", ls="--", lw=1, label=f"budget {budget:g} ms")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("latency per request (ms)")
    ax.set_title("Latency vs batch (band: min to max)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_tradeoff(data: dict[str, Any]) -> str | None:
    configs = data.get("configs") or []
    bud = data.get("latency_budget") or {}
    pts = [(c["streams"], c["batch"], c["latency_ms"]["p99"], c["samples_per_s"]) for c in configs]
    pts += [(p["streams"], p["batch"], p["p99_ms"], p["samples_per_s"]) for p in bud.get("curve", [])]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for st in sorted({p[0] for p in pts}):
        sel = sorted({(p[1], p[2], p[3]) for p in pts if p[0] == st})
        ax.plot([p[1] for p in sel], [p[2] for p in sel], "o-", label=f"{st} stream(s)")
        for b, x, y in sel:
            ax.annotate(f"b{b}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if bud.get("budget_ms"):
        ax.axvline(bud["budget_ms"], color="k", ls="--", lw=1, label=f"p99 budget {bud['budget_ms']:g} ms")
        if bud.get("best"):
            b = bud["best"]
            ax.plot([b["p99_ms"]], [b["samples_per_s"]], "*", ms=16, color="gold", mec="k",
                    label=f"best within budget: batch {b['batch']}, {b['streams']} stream(s)")
    ax.set_xscale("log")
    ax.set_xlabel("p99 latency (ms)")
    ax.set_ylabel("samples / s")
    ax.set_title("Throughput–latency curve")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_profile(data: dict[str, Any], top: int = 30) -> str | None:
    prof = data.get("profile") or {}
    steps = prof.get("steps") or []
    if not steps:
        return None
    plt = _plt()
    rows = sorted(steps, key=lambda r: -r["ms"])[:top][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.25 * len(rows) + 1.2))
    labels = []
    for r in rows:
        origin = r.get("origin") or []
        o = origin[0] if origin else r["name"]
        more = f" +{len(origin) - 1}" if len(origin) > 1 else ""
        labels.append(f"#{r['index']} {r['op'].split('::')[-1]} ({o}{more})"[:60])
    ax.barh(range(len(rows)), [r["ms"] for r in rows], color=COLORS["tensorkiln"])
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    total = sum(r["ms"] for r in steps)
    ax.set_xlabel("ms (median)")
    ax.set_title(f"Per-layer profile, batch {prof.get('batch')}: {min(top, len(steps))} slowest of "
                 f"{len(steps)} steps, total {total:.1f} ms")
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)


def plot_peers(data: dict[str, Any]) -> str | None:
    batches = (data.get("peers") or {}).get("batches") or []
    if not batches:
        return None
    plt = _plt()
    names: list[str] = []
    for pb in batches:
        for r in pb["runtimes"]:
            if r["runtime"] not in names:
                names.append(r["runtime"])
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(names))
    for i, n in enumerate(names):
        xs, ys, sp = [], [], []
        for j, pb in enumerate(batches):
            r = next((r for r in pb["runtimes"] if r["runtime"] == n), None)
            if r:
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                ys.append(r["median_ms"])
                sp.append(r["tensorkiln_speedup"])
        bars = ax.bar(xs, ys, width, label=_label(data, n), color=COLORS.get(n, "gray"))
        if n != "tensorkiln":
            for bar, s in zip(bars, sp):
                ax.annotate(f"{s:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(batches)), [f"batch {pb['batch']}" for pb in batches])
    ax.set_yscale("log")
    ax.set_ylabel("median latency (ms), interleaved")
    ax.set_title("Side by side (label: peer time / tensorkiln time; > 1 = tensorkiln faster)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _peer_series(peers: list[dict[str, Any]], key: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for pb in peers:
        for r in pb["runtimes"]:
            out.setdefault(r["runtime"], []).append((pb["batch"], r[key]))
    return out


def _label(data: dict[str, Any], name: str) -> str:
    return ((data.get("peers") or {}).get("labels") or {}).get(name, name)


def _e(x: Any) -> str:
    return html.escape(str(x))


def _table(head: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _f(x: Any, fmt: str = ".2f") -> str:
    return "—" if x is None else format(x, fmt)


def render_html(data: dict[str, Any]) -> str:
    """The report page for a ``Bench.to_json()`` dict."""
    parts = [f"<h1>tensorkiln bench: {_e(data.get('model'))}</h1>"]
    fp = data.get("fingerprint") or {}
    parts.append(f"<p class='meta'>{_e(fp.get('cpu'))} ({_e(', '.join(fp.get('isa') or []))}), "
                 f"{_e((data.get('settings') or {}).get('threads'))} threads · load average "
                 f"{_e(data.get('load_average'))} · {_e(data.get('created'))} · "
                 f"{_e(', '.join(f'{k} {v}' for k, v in (data.get('versions') or {}).items() if v))}</p>")
    if data.get("power_note"):
        parts.append(f"<p class='warn'>{_e(data['power_note'])}</p>")
    configs = data.get("configs") or []
    if configs:
        rows = []
        for c in configs:
            lat = c["latency_ms"]
            ov = c.get("host_overhead") or {}
            pw = c.get("power") or {}
            rows.append([c["batch"], c["streams"], c["iterations"], _f(c["inferences_per_s"]),
                         _f(c["samples_per_s"]), *(_f(lat[k]) for k in ("min", "mean", "median", "p90", "p95",
                                                                          "p99", "max")),
                         f"{100 * lat['cv']:.1f} %", _f(ov.get("host_ms"), ".3f"), _f(ov.get("compute_ms")),
                         _f(pw.get("samples_per_s_per_w"), ".3f"), _f(pw.get("joules_per_sample"), ".3f"),
                         "noisy" if c.get("noise_warning") else "", _e(c.get("load_average"))])
        parts.append("<h2>Configurations</h2>" + _table(
            ["batch", "streams", "runs", "inf/s", "samples/s", "min ms", "mean", "median", "p90", "p95", "p99",
             "max", "CV", "host ms", "compute ms", "samples/s/W", "J/sample", "", "load"], rows))
        warns = [f"batch {c['batch']}, {c['streams']} stream(s): {c['noise_warning']}"
                 for c in configs if c.get("noise_warning")]
        if warns:
            parts.append("<ul class='warn'>" + "".join(f"<li>{_e(w)}</li>" for w in warns) + "</ul>")
    for title, fn in (("Throughput vs batch", plot_throughput), ("Latency vs batch", plot_latency),
                      ("Throughput–latency curve", plot_tradeoff), ("Peers side by side", plot_peers),
                      ("Per-layer profile", plot_profile)):
        png = fn(data)
        if png:
            parts.append(f"<h2>{_e(title)}</h2><img alt='{_e(title)}' src='data:image/png;base64,{png}'>")
        if title == "Throughput–latency curve" and data.get("latency_budget"):
            parts.append(_budget_table(data["latency_budget"]))
        if title == "Peers side by side" and data.get("peers"):
            parts.append(_peers_table(data))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>tensorkiln bench report</title><style>"
        "body{font-family:sans-serif;margin:24px;max-width:1300px}table{border-collapse:collapse;font-size:12px;"
        "margin:8px 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}.meta{color:#555;"
        "font-size:12px}.warn{color:#a40}img{max-width:100%;border:1px solid #eee}</style></head><body>"
        + "\n".join(parts) + "</body></html>"
    )


def _budget_table(bud: dict[str, Any]) -> str:
    rows = [[p["streams"], p["batch"], _f(p["median_ms"]), _f(p["p99_ms"]), _f(p["samples_per_s"]),
             "yes" if p["within"] else "no"] for p in bud["curve"]]
    best = bud.get("best")
    head = (f"<p>Best within {bud['budget_ms']:g} ms p99: batch {best['batch']}, {best['streams']} stream(s), "
            f"{best['samples_per_s']:.1f} samples/s</p>" if best else
            f"<p class='warn'>No configuration keeps p99 within {bud['budget_ms']:g} ms.</p>")
    return head + _table(["streams", "batch", "median ms", "p99 ms", "samples/s", "within budget"], rows)


def _peers_table(data: dict[str, Any]) -> str:
    peers = data["peers"]
    rows = []
    for pb in peers.get("batches", []):
        for r in pb["runtimes"]:
            rows.append([pb["batch"], r["label"], _f(r["median_ms"]), _f(r["p99_ms"]), _f(r["samples_per_s"]),
                         _f(r["tensorkiln_speedup"], ".3f"), _f(r["max_rel_diff_vs_tensorkiln"], ".1e"),
                         pb["rounds"], _e(pb.get("load_average"))])
    out = _table(["batch", "runtime", "median ms", "p99 ms", "samples/s", "peer/tensorkiln time", "max rel diff",
                  "rounds", "load"], rows)
    skipped = peers.get("skipped") or {}
    if skipped:
        out += "<ul class='warn'>" + "".join(f"<li>{_e(k)} skipped: {_e(v)}</li>" for k, v in skipped.items()) \
            + "</ul>"
    return out


def write_report(data: dict[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_html(data))
