"""The report's charts: matplotlib (Agg, no pyplot state) to inline SVG strings.

Charts are drawn from the report's data only (`ReportData`, which the JSON document is written from), so
a chart can never show a figure the tables and the JSON do not. Text stays text in the SVG (svg.fonttype "none"): crisp when printed, searchable, and drawn
with the reader's own sans-serif font, so the page never needs a web font.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # no display here or on CI; the report only needs files
from matplotlib.figure import Figure  # noqa: E402

if TYPE_CHECKING:
    from snapbench.report.data import ModelSummary, ReportData, TrustSection

# Colours: cross-attention vs ResNet as in the paper's Fig. 2, auxiliary blocks in grey.
KIND_COLOURS = {"CA": "#2f6db5", "RB": "#e08a2c", "TB": "#2a9d80", "aux": "#a7adb5"}
KIND_NAMES = {"CA": "cross-attention (CA)", "RB": "ResNet (RB)", "TB": "transformer (TB)",
              "aux": "auxiliary (conv in/out, time emb., samplers)"}
AUX_NAMES = {"dit": "auxiliary (patch, time and caption embeddings, final layer)"}
BUDGET_COLOURS = {"text_encoder_ms": "#4e9a5a", "unet_ms": "#2f6db5", "vae_decoder_ms": "#8a5bb0"}
_RC = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["Helvetica", "Arial", "DejaVu Sans", "Liberation Sans"],
    "font.size": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "svg.hashsalt": "snapbench",  # stable output; ids are made unique per chart below
}


def _svg(fig: Figure, chart_id: str) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: the SVG goes inline in HTML
    # Several SVGs share one HTML document, and matplotlib numbers ids per figure: prefix them per chart.
    text = re.sub(r'id="([^"]+)"', lambda m: f'id="{chart_id}-{m.group(1)}"', text)
    text = re.sub(r'url\(#([^)]+)\)', lambda m: f"url(#{chart_id}-{m.group(1)})", text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{chart_id}-{m.group(1)}"', text)
    # Let CSS size it: keep the viewBox, drop the fixed point size.
    text = re.sub(r'<svg([^>]*?) width="[^"]+" height="[^"]+"', r'<svg\1', text, count=1)
    return text


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(_RC):
        return Figure(figsize=(width, height), layout="constrained")


def _scale(values: Sequence[float]) -> tuple[float, str]:
    top = max([abs(v) for v in values] + [0])
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if top >= div:
            return div, suffix
    return 1.0, ""


def _short_ms(ms: float) -> str:
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 1 else f"{ms:.2f}"


def fig2_chart(data: ReportData, device_id: str, chart_id: str) -> str:
    """The paper's Fig. 2 for every model side by side: per stage params (top) and latency (bottom),
    each bar split into CA, RB and auxiliary blocks. Rows share their y axis so models compare by eye."""
    models = data.models
    stages = data.stages
    denoiser = data.denoiser
    kinds = [*denoiser.kinds, "aux"]
    names = {**KIND_NAMES, "aux": AUX_NAMES.get(denoiser.family, KIND_NAMES["aux"])}
    results = {r.model: r for r in data.results if r.device == device_id}
    any_latency = any(m.key in results and results[m.key].available for m in models)
    n = len(models)
    with matplotlib.rc_context(_RC):
        fig = _figure(max(10.0, 5.0 * n), 6.4 if any_latency else 3.4)
        axes = fig.subplots(2 if any_latency else 1, n, sharey="row", squeeze=False)
        all_params = [p.params for m in models for p in m.stage_params]
        div, suffix = _scale(all_params)
        x = range(len(stages))
        for col, m in enumerate(models):
            ax = axes[0][col]
            bottom = [0.0] * len(stages)
            for kind in kinds:
                vals = [getattr(p, f"{kind.lower()}_params") / div for p in m.stage_params]
                ax.bar(x, vals, bottom=bottom, color=KIND_COLOURS[kind], label=names[kind], width=0.7)
                bottom = [b + v for b, v in zip(bottom, vals)]
            ax.set_title(f"{m.key}: parameters")
            ax.set_xticks(list(x), stages, rotation=35, ha="right")
            if col == 0:
                ax.set_ylabel(f"parameters ({suffix})" if suffix else "parameters")
            ax.grid(axis="y", alpha=0.3)
            if not any_latency:
                continue
            ax = axes[1][col]
            r = results.get(m.key)
            if not r or not r.available:
                ax.text(0.5, 0.5, "latency not available", ha="center", va="center", transform=ax.transAxes,
                        color="#7a2020")
                ax.set_xticks(list(x), stages, rotation=35, ha="right")
                continue
            bottom = [0.0] * len(stages)
            for kind in kinds:
                vals = [getattr(s, f"{kind.lower()}_ms") or 0.0 for s in r.stages]
                ax.bar(x, vals, bottom=bottom, color=KIND_COLOURS[kind], width=0.7)
                bottom = [b + v for b, v in zip(bottom, vals)]
            # Rows share their axis (honest comparison), so a fast model's bars can be slivers: print totals.
            for xi, st in zip(x, r.stages):
                ax.annotate(_short_ms(st.ms), (xi, st.ms), textcoords="offset points", xytext=(0, 2),
                            ha="center", va="bottom", fontsize=7.5, color="#394150")
            label = "/".join(r.labels) or "unlabelled"
            ax.set_title(f"{m.key}: latency per step ({label})")
            ax.set_xticks(list(x), stages, rotation=35, ha="right")
            if col == 0:
                ax.set_ylabel(f"latency (ms per {denoiser.name} step)")
            ax.grid(axis="y", alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
        return _svg(fig, chart_id)


def budget_chart(data: ReportData, chart_id: str) -> str | None:
    """End-to-end seconds per image, per model and device: 2 x text encoder + steps x UNet + decoder.

    Left, seconds on one axis (the honest comparison); right, each image's own split in percent, which
    stays readable when one model is fifty times faster than the other."""
    names = {m.key: m for m in data.models}
    devices = {d.id: d.name for d in data.devices}
    rows = [(r, r.budget) for r in data.results if r.budget is not None]
    if not rows:
        return None
    with matplotlib.rc_context(_RC):
        fig = _figure(10.5, 1.4 + 0.62 * len(rows))
        ax, share = fig.subplots(1, 2, sharey=True, width_ratios=[3, 1.3])
        labels = [f"{r.model} ({names[r.model].steps} steps)\n{devices[r.device]}" for r, _ in rows]
        y = list(range(len(rows)))[::-1]
        left = [0.0] * len(rows)
        left_pct = [0.0] * len(rows)
        parts = (("text_encoder_ms", f"text encoder x {data.text_encoder_runs}"),
                 ("unet_ms", "UNet x steps"), ("vae_decoder_ms", "VAE decoder"))
        for field, name in parts:
            vals = [getattr(b, field) / 1000 for _, b in rows]
            pct = [100 * getattr(b, field) / b.total_ms for _, b in rows]
            ax.barh(y, vals, left=left, color=BUDGET_COLOURS[field], label=name, height=0.6)
            share.barh(y, pct, left=left_pct, color=BUDGET_COLOURS[field], height=0.6)
            left = [a + b for a, b in zip(left, vals)]
            left_pct = [a + b for a, b in zip(left_pct, pct)]
        top = max(left)
        for yy, (r, _), total in zip(y, rows, left):
            text = f"{total:.2f} s" + (f"  ({r.speedup_e2e:.1f}x faster)" if r.speedup_e2e else "")
            ax.text(total + top * 0.01, yy, text, va="center", fontsize=9)
        ax.set_yticks(y, labels)
        ax.set_xlim(0, top * 1.3)
        ax.set_xlabel("seconds per image (" + "/".join(data.latency_labels) + ")")
        ax.grid(axis="x", alpha=0.3)
        share.set_xlim(0, 100)
        share.set_xlabel("share of the image's time (%)")
        share.grid(axis="x", alpha=0.3)
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, frameon=False)
        return _svg(fig, chart_id)


PHASE_COLOURS = {"start": "#1d2430", "remove": "#b5452f", "add": "#2f8a4e", "train": "#a7adb5", "final": "#1d2430"}


def trajectory_chart(model: ModelSummary, chart_id: str, denoiser: str = "UNet") -> str | None:
    """Evolution trajectory: quality against the denoiser's latency (`denoiser`: "UNet" or "transformer"),
    step by step; removals red, additions green."""
    traj = model.trajectory
    points = [(r, r.latency_ms, r.quality) for r in (traj.rows if traj else [])]
    rows = [(r, ms, q) for r, ms, q in points if ms is not None and q is not None]
    if not rows:
        return None
    with matplotlib.rc_context(_RC):
        fig = _figure(9.0, 4.2)
        ax = fig.subplots()
        xs = [ms for _, ms, _ in rows]
        ys = [q for _, _, q in rows]
        ax.plot(xs, ys, "-", color="#8b93a1", linewidth=1.0, zorder=1)
        for phase in dict.fromkeys(r.phase for r, _, _ in rows):
            pts = [(ms, q) for r, ms, q in rows if r.phase == phase]
            px, py = zip(*pts)
            ax.scatter(px, py, s=22, color=PHASE_COLOURS.get(phase, "#2f6db5"), label=phase or "step", zorder=2)
        ax.annotate("start", (xs[0], ys[0]), textcoords="offset points", xytext=(6, 6), fontsize=9)
        ax.annotate("end", (xs[-1], ys[-1]), textcoords="offset points", xytext=(6, -12), fontsize=9)
        labels = sorted({r.label for r, _, _ in rows})
        ax.set_xlabel(f"{denoiser} latency (ms per step, {'/'.join(labels)})")
        ax.set_ylabel("quality")
        ax.set_title(f"{model.key}: evolution trajectory ({len(rows)} evaluated steps)")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8.5)
        return _svg(fig, chart_id)


def trust_chart(trust: TrustSection, chart_id: str) -> str | None:
    """Log-log: estimated (out of sample) against published, one dot per corpus row, the reported chips
    highlighted; the diagonal and a +-25% band."""
    rows = [r for r in trust.get("rows") or [] if r["published_ms"] > 0 and r["estimated_ms"] > 0]
    if not rows:
        return None
    chips = set(trust.get("highlight_chips") or [])
    fig = _figure(5.4, 4.2)
    ax = fig.add_subplot()
    lo = min(min(r["published_ms"], r["estimated_ms"]) for r in rows) / 1.5
    hi = max(max(r["published_ms"], r["estimated_ms"]) for r in rows) * 1.5
    ax.plot([lo, hi], [lo, hi], color="#555", lw=0.8)
    ax.fill_between([lo, hi], [lo * 0.75, hi * 0.75], [lo * 1.25, hi * 1.25], color="#999", alpha=0.15, lw=0)
    for group, colour, marker in ((False, "#a7adb5", "o"), (True, "#2f6db5", "o")):
        pts = [r for r in rows if (r["chip"] in chips) == group]
        low = [r for r in pts if r["trust"] == "low"]
        scored = [r for r in pts if r["trust"] != "low"]
        label = ("reported chip" if group else "other chips")
        if scored:
            ax.scatter([r["published_ms"] for r in scored], [r["estimated_ms"] for r in scored], s=14,
                       color=colour, marker=marker, label=f"{label} ({len(scored)} rows)", zorder=3)
        if low:
            ax.scatter([r["published_ms"] for r in low], [r["estimated_ms"] for r in low], s=14,
                       facecolors="none", edgecolors=colour, label=f"{label}, low trust (not scored)", zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("published latency (ms)")
    ax.set_ylabel("estimated, out of sample (ms)")
    ax.set_title("Estimator vs published Core ML latencies (leave one source out)")
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    return _svg(fig, chart_id)
