"""`snapbench validate`: the estimator against published on-device latencies, in-sample or cross-validated."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from snapbench.commands.common import JsonOpt, err, out, print_json

if TYPE_CHECKING:  # heavy (pandas, the estimator): the type only
    from snapbench.validation.run import Validation


def _fmt(v: float, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.0f}%" if pct else f"{v:.1f}%"


def _summary_table(title: str, df, key: str) -> Table:
    t = Table(title=title, title_justify="left")
    for col in (key, "n", "median |err|", "<=10%", "<=25%", "<=50%"):
        t.add_column(col, justify="left" if col == key else "right")
    for r in df.to_dict("records"):
        style = None if r["median_abs_error_pct"] <= 30 else "yellow"
        t.add_row(str(r[key]), str(r["n"]), _fmt(r["median_abs_error_pct"]), _fmt(r["within_10_pct"], True),
                  _fmt(r["within_25_pct"], True), _fmt(r["within_50_pct"], True), style=style)
    return t


def validate_command(
    corpus: Path | None = typer.Option(None, "--corpus", help="Corpus CSV (default: the one shipped; "
                                          "columns in snapbench.validation.corpus)."),
    cross: str | None = typer.Option(None, "--cross", help="source | chip: refit with each group held out "
                                        "and predict it (out-of-sample errors)."),
    convert: bool = typer.Option(True, "--convert/--no-convert", help="Convert networks whose op records are "
                                 "neither shipped nor cached (minutes each; cached after)."),
    rows: bool = typer.Option(True, "--rows/--no-rows", help="Print every row, not only the summaries."),
    as_json: bool = JsonOpt,
) -> None:
    """Published vs estimated latency on every corpus row snapbench can rebuild; errors by source, chip, family."""
    from snapbench.converters.progress import reporter
    from snapbench.errors import SnapbenchError
    from snapbench.validation.corpus import load_corpus
    from snapbench.validation.programs import distinct_networks
    from snapbench.validation.run import validate

    if cross is not None and cross not in ("source", "chip"):
        raise SnapbenchError(f"--cross {cross!r}: choose source or chip")
    corpus_rows = load_corpus(corpus)
    with reporter(len(distinct_networks(corpus_rows)), enabled=not as_json) as bar:
        def on_network(net: str, shape: str, state: str) -> None:
            (bar.start if state == "start" else bar.done)(f"{net} {shape}")

        def on_fit(group: str) -> None:
            err.print(f"refitting without {group} ...")

        v = validate(corpus_rows, cross=cross, convert=convert, on_network=on_network, on_fit=on_fit)  # type: ignore[arg-type]
    if as_json:
        print_json({"backend": "estimate", **v.to_dict()})
        return
    _render(v, cross, rows)


def _render(v: Validation, cross: str | None, rows: bool) -> None:
    """The estimates (with `rows`), the error summaries, the fits, the ranks and the rows set aside."""
    label = f"left-one-{cross}-out (each group predicted by a fit without it)" if cross else \
        f"in-sample (shipped params v{v.params_version})"
    if rows and len(v.rows):
        t = Table(title=f"Published vs estimated, {label}: estimates", title_justify="left")
        for col in ("row", "family", "network", "device", "weights", "trust", "published ms", "estimated ms",
                    "error"):
            t.add_column(col, justify="right" if col.endswith("ms") or col == "error" else "left")
        for r in v.rows.to_dict("records"):
            style = "dim" if r["trust"] == "low" else (None if abs(r["error_pct"]) <= 25 else "yellow")
            t.add_row(r["row"], r["family"], f"{r['network']} {r['input']}", r["device"], r["weights"], r["trust"],
                      f"{r['published_ms']:g}", f"{r['estimated_ms']:.3g}", f"{r['error_pct']:+.0f}%", style=style)
        out.print(t)
    for key in ("source", "chip", "family"):
        out.print(_summary_table(f"By {key} ({label}; rows graded low excluded)", v.summary(key), key))
    overall = v.summary().iloc[0]
    out.print(f"all scored rows: n={overall['n']}, median |error| {overall['median_abs_error_pct']:.1f}%, "
              f"within 10% {overall['within_10_pct']:.0f}%, within 25% {overall['within_25_pct']:.0f}%, "
              f"within 50% {overall['within_50_pct']:.0f}%  ({label})", style="bold")
    out.print("  (engine error: a row timed in an app carries that app's own per-prediction floor, one number per "
              "harness from its own rows; Xcode-timed rows carry none)")
    for f in v.fits:
        floors = "".join(f"; its app's floor from its own rows {ms:.2f} ms" for ms in f["own_floor_ms"].values())
        out.print(f"  without {f['held_out']}: {f['fitted_parameters']} parameters fitted on "
                  f"{f['fitted_points']} points; predicted {f['predicted_rows']} rows{floors}")
    ranks = v.ranks()
    if len(ranks):
        t = Table(title=f"Ranks within each source ({label})", title_justify="left")
        for col in ("source", "n", "pairs", "Kendall tau", "pairs ordered right", "ties: within the stated step",
                    "ordered right, ties apart"):
            t.add_column(col, justify="left" if col == "source" else "right")
        for r in ranks.to_dict("records"):
            style = None if r["pairs_ordered_right_pct"] >= 90 else "yellow"
            t.add_row(r["source"], str(r["n"]), str(r["pairs"]), f"{r['kendall_tau']:.2f}",
                      _fmt(r["pairs_ordered_right_pct"], True), str(r["tied_pairs"]),
                      _fmt(r["pairs_ordered_right_untied_pct"], True), style=style)
        out.print(t)
        out.print("  (ties: pairs whose published figures are one step apart or less, in sources that state the step "
                  "they print or time to)")
    unseen = v.unseen_app_summary()
    if unseen is not None:
        o = unseen.iloc[0]
        by_chip = ", ".join(f"{r['chip']} {r['median_abs_error_pct']:.1f}%"
                            for r in v.unseen_app_summary("chip").to_dict("records"))  # type: ignore[union-attr]
        out.print(f"if the app's floor is not known either (each app-timed row pays the median harness's floor: "
                  f"an app nobody timed): median |error| {o['median_abs_error_pct']:.1f}%, within 25% "
                  f"{o['within_25_pct']:.0f}%; by chip {by_chip}")
    low = v.rows[v.rows["trust"] == "low"] if len(v.rows) else v.rows
    if len(low):
        out.print(f"{len(low)} rows graded low trust: shown, not fitted, not scored")
    if len(v.skipped):
        t = Table(title=f"Skipped rows ({len(v.skipped)})", title_justify="left")
        for col in ("row", "source", "device", "reason"):
            t.add_column(col)
        for r in v.skipped.to_dict("records"):
            t.add_row(r["row"], r["source"], r["device"], r["reason"])
        out.print(t)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_command)
