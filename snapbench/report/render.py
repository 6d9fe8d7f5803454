"""The report's data -> one self-contained HTML page (jinja2 with autoescape, charts inline as SVG).

The template and the charts read the JSON document (`ReportData.to_dict()`), the same one `--json` writes:
every number the page prints sits in an element carrying `data-json` (its path in that document) and
`data-value` (the unformatted number), so a test or a reader's script can check page against data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from snapbench.formatting import fmt_count as format_count
from snapbench.report import charts
from snapbench.report.data import ReportData

_DASH = "\u2014"


def fmt_ms(x: float | None) -> str:
    if x is None:
        return _DASH
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def fmt_count(x: float | None) -> str:
    return format_count(x, missing=_DASH)


def fmt_pct(x: float | None) -> str:
    if x is None:
        return _DASH
    return f"{100 * x:.1f}%" if abs(x) >= 0.001 else f"{100 * x:.2f}%"


def fmt_s(x: float | None) -> str:
    return _DASH if x is None else f"{x:.2f}"


def fmt_x(x: float | None) -> str:
    return _DASH if x is None else f"{x:.2f}x"


def fmt_tflops(x: float | None) -> str:
    if x is None:
        return _DASH
    return f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def fmt_plain(x: object) -> str:
    if x is None:
        return _DASH
    if isinstance(x, float) and x.is_integer():
        return f"{x:,.0f}"
    return f"{x:,}" if isinstance(x, (int, float)) else str(x)


def raw(x: object) -> str:
    """The exact value for data-value: repr of a float round-trips; None is empty."""
    if x is None:
        return ""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return repr(x) if isinstance(x, float) else str(x)


# Number formats by name: templates use them as filters and `data-fmt` names them for checkers.
FORMATTERS = {"ms": fmt_ms, "count": fmt_count, "pct": fmt_pct, "s": fmt_s, "x": fmt_x, "tflops": fmt_tflops,
              "plain": fmt_plain}


def breakable(text: str) -> Markup:
    """Escape, then allow line breaks after a signature's separators instead of in the middle of a shape."""
    out = str(escape(text))
    for sep in ("|", ","):
        out = out.replace(sep, sep + "<wbr>")
    return Markup(out)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("snapbench.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,  # a typo in the template fails the render instead of printing nothing
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FORMATTERS, raw=raw, breakable=breakable)
    env.globals["fmt"] = lambda value, name: FORMATTERS[name](value)
    return env


@dataclass(frozen=True)
class Charts:
    """The page's SVGs (the template reads them as `charts.fig2[device id]`, `charts.trajectory[model key]`)."""

    fig2: dict[str, Markup]
    budget: Markup | None
    trajectory: dict[str, Markup]
    trust: Markup | None


def build_charts(data: ReportData) -> Charts:
    """The SVGs, marked safe: matplotlib escapes the text it writes into them (model names included)."""
    fig2 = {d.id: Markup(charts.fig2_chart(data, d.id, f"fig2-{i}")) for i, d in enumerate(data.devices)}
    budget = charts.budget_chart(data, "budget")
    trajectory = {}
    for i, m in enumerate(data.models):
        svg = charts.trajectory_chart(m, f"traj-{i}", data.denoiser.name)
        if svg:
            trajectory[m.key] = Markup(svg)
    trust = charts.trust_chart(data.trust, "trust") if data.trust else None
    return Charts(fig2, Markup(budget) if budget else None, trajectory, Markup(trust) if trust else None)


def render_html(report: ReportData) -> str:
    env = _environment()
    template = env.get_template("report.html.j2")
    # the template reads the JSON document (what --json writes), so the page shows what the data says
    models = {m.key: m.to_dict() for m in report.models}
    devices = {d.id: doc for d, doc in zip(report.devices, report.device_dicts())}
    return template.render(d=report.to_dict(), charts=build_charts(report), models=models, devices=devices)
