"""Published vs estimated for every corpus row the estimator can rebuild, in-sample or cross-validated.

    v = validate()                        # the shipped parameters on every row
    v = validate(cross="source")          # each source predicted by a fit that never saw it
    v.summary("chip")                     # n, median |error| %, share within 10 / 25 / 50 %

Errors are stated on the engine: a row timed in an app is scored with that app harness's own
per-prediction floor, one number per harness taken from its own rows (`own_floors`), so what is judged is
the engine model, not a guess at someone's app. Out of sample (`cross`), the engine is priced by a fit
that never saw the row's source (or chip); `unseen_app_error_pct` keeps what the same rows miss by when
the app's floor is not known either (the median harness's floor), the case of an app nobody timed.

Fitting (`fit_corpus`) uses every row that is rebuildable and not graded low, plus the four reference
points of `calibration.csv`. Each row's weight is its trust (high 1, medium 0.5) divided by the square root
of its source's row count, so a source with 40 near-identical rows does not outvote one with 5; the SD
reference points weigh `REFERENCE_WEIGHT` each: they are the figures snapbench exists to estimate.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, TypedDict

import numpy as np
import pandas as pd

from snapbench.calibration.fit import (
    CalibrationPoint,
    fit_knobs,
    fit_params,
    load_points,
    point_ms,
    reading_ms,
)
from snapbench.errors import SnapbenchError
from snapbench.json_types import JSONObject
from snapbench.profilers.estimate.cost_model import PreparedOps, prepare
from snapbench.profilers.estimate.params import PARAMS_VERSION, AneParams, default_priors_path, load_params
from snapbench.profilers.estimate.stored_weights import with_stored_weights
from snapbench.validation.corpus import CorpusRow, load_corpus
from snapbench.validation.programs import records_by_network, require_bundle

Cross = Literal["source", "chip"]
TRUST_WEIGHT = {"high": 1.0, "medium": 0.5, "low": 0.0}
REFERENCE_WEIGHT = 2.0
THRESHOLDS = (10, 25, 50)


class HeldOutFit(TypedDict):
    """How one held-out group was fitted (cross-validation)."""

    held_out: str
    predicted_rows: int
    fitted_points: int
    fitted_parameters: int
    own_floor_ms: dict[str, float]  # app harness -> its per-prediction floor from its own held-out rows


class HeldOutInfo(HeldOutFit, total=False):
    """`predict_held_out`'s account: the fit, and the held-out rows' estimates (taken out by `validate`)."""

    own_floor_estimates: dict[str, float]  # with each harness's own floor
    engine_estimates: dict[str, float]  # the engine alone


@dataclass
class Validation:
    """One validation run: a row per priced corpus row, the skipped rows with reasons, and how it was fitted."""

    rows: pd.DataFrame
    skipped: pd.DataFrame
    cross: str | None
    params_version: int
    fits: list[HeldOutFit] = field(default_factory=list)  # per held-out group: rows, params, points

    def scored(self) -> pd.DataFrame:
        """Rows the goal figures count: priced and not graded low."""
        return self.rows[self.rows["trust"] != "low"]

    def summary(self, by: str | None = None) -> pd.DataFrame:
        return summarise(self.scored(), by)

    def unseen_app_summary(self, by: str | None = None) -> pd.DataFrame | None:
        """The cross-validated errors when the app's floor is unknown too (the median harness's floor), the
        case of an app nobody timed; None in-sample."""
        df = self.scored()
        if self.cross is None or not len(df) or "unseen_app_error_pct" not in df:
            return None
        return summarise(df.assign(error_pct=df["unseen_app_error_pct"]), by)

    def ranks(self) -> pd.DataFrame:
        """Per source: Kendall's tau between estimated and published latency, and the share of its pairs of
        rows (different published figures) the estimates order the same way, with and without the pairs
        within the source's stated step (`rank_summary`); what evolution relies on."""
        return rank_summary(self.scored())

    def to_dict(self) -> JSONObject:
        overall = self.summary().iloc[0].to_dict() if len(self.scored()) else {}
        unseen, unseen_by_chip = self.unseen_app_summary(), self.unseen_app_summary("chip")
        return {
            "cross": self.cross, "params_version": self.params_version,
            "what": "engine error: app-timed rows carry their harness's own floor, fitted on its own rows",
            "overall": overall,
            "by_source": self.summary("source").to_dict("records"),
            "by_chip": self.summary("chip").to_dict("records"),
            "by_family": self.summary("family").to_dict("records"),
            "ranks": self.ranks().to_dict("records"),
            "unseen_app": None if unseen is None or unseen_by_chip is None else {
                "what": "held-out errors when the app's floor is not known either: each app-timed row pays the "
                        "median harness's floor (an app nobody timed)",
                "overall": unseen.iloc[0].to_dict(),
                "by_chip": unseen_by_chip.to_dict("records")},
            "rows": self.rows.to_dict("records"), "skipped": self.skipped.to_dict("records"), "fits": self.fits,
        }


def summarise(df: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """n, median |error| % and the share of rows within each threshold, overall or per `by`."""

    def stats(g: pd.DataFrame) -> dict[str, int | float]:
        err = g["error_pct"].abs()
        out: dict[str, int | float] = {"n": int(len(g)), "median_abs_error_pct": float(err.median()) if len(g) else math.nan}
        for t in THRESHOLDS:
            out[f"within_{t}_pct"] = float(100.0 * (err <= t).mean()) if len(g) else math.nan
        return out

    if by is None:
        return pd.DataFrame([{"group": "all", **stats(df)}])
    return pd.DataFrame([{by: k, **stats(g)} for k, g in df.groupby(by, sort=True)])


def rank_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Kendall's tau (tau-b) and the share of same-source pairs ordered right (pairs whose published figures
    differ; a tie in the estimates counts half), per source with at least 2 rows.

    Also the same share over the pairs that differ by more than the source's stated step (`resolution_ms`,
    where the source states one): two figures one printed step apart or less have no order the source can
    vouch for (0.3 and 0.4 ms from a 0.1 ms timer may be 0.349 and 0.351), so they are counted as ties
    (`tied_pairs`) and left out of `pairs_ordered_right_untied_pct`. Sources stating no step keep every pair:
    the two shares are equal there."""
    from scipy.stats import kendalltau

    out = []
    for source, g in df.groupby("source", sort=True):
        pub, est = g["published_ms"].to_numpy(), g["estimated_ms"].to_numpy()
        step = g["resolution_ms"].fillna(0.0).to_numpy() if "resolution_ms" in g else np.zeros(len(g))
        if len(g) < 2:
            continue
        i, j = np.triu_indices(len(g), 1)
        dp, de = np.sign(pub[i] - pub[j]), np.sign(est[i] - est[j])
        keep = dp != 0
        score = (dp == de) + 0.5 * (de == 0)  # right 1, a tie in the estimates 1/2, wrong 0
        # one step apart or less (a small tolerance: 0.4 - 0.3 is not exactly 0.1 in binary)
        untied = keep & (np.abs(pub[i] - pub[j]) > np.maximum(step[i], step[j]) * (1 + 1e-6))
        tau = kendalltau(est, pub).statistic if keep.any() else math.nan
        out.append({"source": source, "n": int(len(g)), "pairs": int(keep.sum()),
                    "kendall_tau": float(tau) if tau == tau else math.nan,
                    "pairs_ordered_right_pct": 100.0 * score[keep].sum() / keep.sum() if keep.any() else math.nan,
                    "tied_pairs": int(keep.sum() - untied.sum()),
                    "pairs_ordered_right_untied_pct": (100.0 * score[untied].sum() / untied.sum()
                                                       if untied.any() else math.nan)})
    return pd.DataFrame(out, columns=["source", "n", "pairs", "kendall_tau", "pairs_ordered_right_pct",
                                      "tied_pairs", "pairs_ordered_right_untied_pct"])


def corpus_points(rows: Sequence[CorpusRow], *, convert: bool = False,
                  on_network: Callable[[str, str, str], None] | None = None,
                  ) -> tuple[dict[str, CalibrationPoint], dict[str, str]]:
    """A calibration point per priceable row (keyed by row id), and the reason for every other row."""
    require_bundle()
    skipped: dict[str, str] = {}
    for r in rows:
        if r.skip or not r.network:
            skipped[r.row] = r.skip or "no network to rebuild"
    records, missing = records_by_network(rows, convert=convert, on_network=on_network)
    n_source = Counter(r.source for r in rows if r.fitted)
    prepared: dict[tuple[str, str, str], PreparedOps] = {}
    points: dict[str, CalibrationPoint] = {}
    for r in rows:
        if r.row in skipped:
            continue
        key = (r.network, r.input)
        if key not in records:
            skipped[r.row] = missing.get(key, "no records")
            continue
        pk = r.program_key()
        if pk not in prepared:
            prepared[pk] = prepare(with_stored_weights(records[key], r.weights))
        weight = TRUST_WEIGHT[r.trust] / math.sqrt(max(n_source[r.source], 1)) if r.fitted else 0.0
        points[r.row] = CalibrationPoint(
            label=f"{r.source}: {r.row} {r.network} {r.input} {r.weights} on {r.device}", source=r.source,
            device=r.device, component="network", model=r.network, settings=f"{r.input} {r.weights}",
            measured_ms=r.latency_ms, programs=((prepared[pk], 1),), weight=weight,
            calls=0 if r.harness == "xcode" else 1, harness=r.source, resolution_ms=r.resolution_ms)
    return points, skipped


def reference_points() -> list[CalibrationPoint]:
    """The shipped SD reference points (their op records ship with snapbench), weighted for the fit."""
    return [replace(p, weight=REFERENCE_WEIGHT) for p in load_points(convert=False)]


def fit_corpus(points: Sequence[CalibrationPoint], *, prior: AneParams | None = None,
               version: int = PARAMS_VERSION) -> AneParams:
    """Fit on corpus points (weight > 0) plus the reference points."""
    train = [p for p in points if p.weight > 0] + reference_points()
    return fit_params(train, prior or load_params(default_priors_path()), version=version)


def _frame(rows: Sequence[CorpusRow], engine: dict[str, float], floor: dict[str, float],
           group_of: dict[str, str], unseen: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per priced corpus row: the engine estimate, the app floor it carries (its harness's own; 0
    for Xcode-timed rows), their sum against the published figure (the nearest value that prints as it,
    where the source states its resolution), and (cross-validated) the error with the median harness's
    floor instead."""

    def error(est: float, r: CorpusRow) -> float:
        target = float(reading_ms(est, r.latency_ms, r.resolution_ms))
        return 100.0 * (est - target) / target

    out = []
    for r in rows:
        if r.row not in engine:
            continue
        est = engine[r.row] + floor[r.row]
        out.append({"row": r.row, "source": r.source, "family": r.family, "network": r.network, "input": r.input,
                    "device": r.device, "chip": r.chip, "compute_units": r.compute_units, "weights": r.weights,
                    "statistic": r.statistic, "harness": r.harness, "trust": r.trust, "fitted": r.fitted,
                    "published_ms": r.latency_ms, "resolution_ms": r.resolution_ms, "engine_ms": engine[r.row],
                    "app_floor_ms": floor[r.row], "estimated_ms": est, "error_pct": error(est, r),
                    "held_out": group_of.get(r.row, ""),
                    "unseen_app_error_pct": (error(unseen[r.row], r) if unseen and r.row in unseen else math.nan)})
    return pd.DataFrame(out)


def validate(rows: Sequence[CorpusRow] | None = None, *, cross: Cross | None = None,
             params: AneParams | None = None, convert: bool = False,
             on_network: Callable[[str, str, str], None] | None = None,
             on_fit: Callable[[str], None] | None = None) -> Validation:
    """Estimate every priceable row; with `cross`, each group is predicted by a fit without it."""
    rows = list(rows) if rows is not None else load_corpus()
    points, skipped_map = corpus_points(rows, convert=convert, on_network=on_network)
    by_id = {r.row: r for r in rows}
    skipped = pd.DataFrame([{"row": k, "source": by_id[k].source, "family": by_id[k].family,
                             "device": by_id[k].device, "published_ms": by_id[k].latency_ms, "reason": why}
                            for k, why in skipped_map.items()], columns=["row", "source", "family", "device",
                                                                         "published_ms", "reason"])
    engine: dict[str, float] = {}
    floor: dict[str, float] = {}
    unseen: dict[str, float] = {}
    group_of: dict[str, str] = {}
    fits: list[HeldOutFit] = []
    if cross is None:
        p = params or load_params()
        # in-sample, each fitted harness's floor is its own; a harness the fit did not use (rows graded low)
        # gets its own from its rows too, so its rows still show what the engine misses
        unfitted = [pt for pt in points.values() if pt.calls and pt.harness not in p.call_factor]
        with_own = _with_floors(p, own_floors(unfitted, p))
        for k, pt in points.items():
            engine[k] = point_ms(replace(pt, calls=0), p)
            floor[k] = point_ms(pt, with_own) - engine[k]
        version = p.version
    else:
        if cross not in ("source", "chip"):
            raise SnapbenchError(f"--cross {cross!r}: choose source or chip")
        attr = "source" if cross == "source" else "chip"
        groups = sorted({getattr(by_id[k], attr) for k in points})
        fit_cache: dict[tuple[str, ...], AneParams] = {}  # a group of low rows only leaves the same points
        for g in groups:
            if on_fit:
                on_fit(g)
            predicted, info = predict_held_out(points, by_id, cross, g, fits=fit_cache)
            unseen.update(predicted)
            own = info.pop("own_floor_estimates")
            engine.update(info.pop("engine_estimates"))
            floor.update({k: own[k] - engine[k] for k in own})
            group_of.update({k: g for k in predicted})
            fits.append(info)
        version = PARAMS_VERSION
    frame = _frame(rows, engine, floor, group_of, unseen)
    return Validation(frame, skipped, cross, version, fits)


def predict_held_out(points: dict[str, CalibrationPoint], by_id: dict[str, CorpusRow], cross: Cross, group: str,
                     fits: dict[tuple[str, ...], AneParams] | None = None,
                     ) -> tuple[dict[str, float], HeldOutInfo]:
    """Fit from the priors on every point outside `group` (plus the reference points, less those on the
    held-out chip), then estimate the rows inside it. Returns the estimates with the median harness's
    floor (an app nobody timed) and what the fit used.

    `info["engine_estimates"]` are the engine alone; `info["own_floor_estimates"]` add each held-out app
    harness's per-prediction floor taken from its own rows (one number per harness, `info["own_floor_ms"]`),
    the engine still out of sample: what the validation goal is stated on."""
    attr = "source" if cross == "source" else "chip"
    held = [k for k in points if getattr(by_id[k], attr) == group]
    train = [pt for k, pt in points.items() if getattr(by_id[k], attr) != group and pt.weight > 0]
    train += [p for p in reference_points() if not (cross == "chip" and _chip(p.device) == group)]
    key = tuple(p.label for p in train)
    if fits is not None and key in fits:
        fitted = fits[key]
    else:
        fitted = fit_params(train, load_params(default_priors_path()), version=PARAMS_VERSION)
        if fits is not None:
            fits[key] = fitted
    scored = [points[k] for k in held if by_id[k].trust != "low"]
    # a harness's floor from its scored rows; a source graded low throughout (shown, never scored) from all
    floors = own_floors(scored, fitted)
    floors.update({h: f for h, f in own_floors([points[k] for k in held], fitted).items() if h not in floors})
    info = HeldOutInfo(held_out=group, predicted_rows=len(held), fitted_points=len(train),
                       fitted_parameters=len(fit_knobs(train)), own_floor_ms=floors,
                       own_floor_estimates={k: point_ms(points[k], _with_floors(fitted, floors)) for k in held},
                       engine_estimates={k: point_ms(replace(points[k], calls=0), fitted) for k in held})
    return {k: point_ms(points[k], fitted) for k in held}, info


def own_floors(points: Sequence[CalibrationPoint], params: AneParams) -> dict[str, float]:
    """Each app harness's per-prediction floor that best fits its own points, the engine priced by `params`
    (a one-dimensional fit per harness, same robust loss as calibration)."""
    from scipy.optimize import minimize_scalar

    from snapbench.calibration.fit import point_loss
    from snapbench.latency.app_floor import MAX_FLOOR_MS

    # wider than the fit's bound on the shared floor: a Vision request in a live-camera app costs ~10 ms
    lo, hi = 0.0, MAX_FLOOR_MS
    found: dict[str, float] = {}
    for harness in sorted({p.harness for p in points if p.calls}):
        mine = [p for p in points if p.calls and p.harness == harness]
        engine = np.array([point_ms(replace(p, calls=0), params) for p in mine])
        calls = np.array([p.calls for p in mine], dtype=float)
        published = np.array([p.measured_ms for p in mine])
        resolution = np.array([p.resolution_ms for p in mine])

        def loss(floor: float) -> float:
            return float(np.sum(point_loss(engine + calls * floor, published, resolution)))

        found[harness] = float(minimize_scalar(loss, bounds=(lo, hi), method="bounded").x)
    return found


def _with_floors(params: AneParams, floors: dict[str, float]) -> AneParams:
    base = params.call_ms()
    if not floors or base <= 0:
        return params
    return replace(params, call_factor={**params.call_factor, **{h: f / base for h, f in floors.items()}})


def _chip(device: str) -> str:
    from snapbench.devices.catalog import resolve_device

    return resolve_device(device).chip


def headline_band(v: Validation, chip: str | None = None) -> tuple[float, float, str]:
    """(low factor, high factor, what it is) for an error band on an estimate: the 10th and 90th
    percentile of estimated/published among scored rows of `chip` (all rows when the chip has fewer
    than 5), so `estimate / high .. estimate / low` brackets the published figure 80% of the time."""
    df = v.scored()
    scope = "all chips"
    if chip is not None and (df["chip"] == chip).sum() >= 5:
        df, scope = df[df["chip"] == chip], chip
    ratio = (1.0 + df["error_pct"] / 100.0).to_numpy()  # estimated over the reading it is judged against
    if ratio.size == 0:
        return 1.0, 1.0, "no rows"
    lo, hi = np.percentile(ratio, [10, 90])
    return float(lo), float(hi), f"{scope}, {len(ratio)} rows, {v.cross or 'in-sample'}"


def refit(*, measured: str | None = None, write: bool = False, params_path=None,
          convert: bool = False) -> tuple[AneParams, pd.DataFrame]:
    """The shipped fit: every fitted corpus row, the reference points and a user's measured rows (weight 1
    each); returns the parameters and their report on the reference and measured points."""
    from snapbench.atomic import check_writable
    from snapbench.calibration.fit import calibration_report
    from snapbench.profilers.estimate.params import default_params_path, save_params

    if write:  # the fit reads the whole corpus first: an unwritable file refuses before it
        check_writable(params_path or default_params_path(), "choose another --params")
    points, _ = corpus_points(load_corpus(), convert=convert)
    own = load_points(measured, include_reference=False, convert=True) if measured else []
    current = load_params(params_path)
    fitted = fit_corpus(list(points.values()) + own, version=max(PARAMS_VERSION, current.version + 1))
    if write:
        save_params(fitted, params_path)
    return fitted, calibration_report(fitted, reference_points() + own)
