#!/usr/bin/env python3
"""SKAB (Skoltech Anomaly Benchmark v0.9) through `edgeflow replay`, scored the SKAB way against peers in the same run.

A developer tool, not part of `cargo test`. Setup and use:

    pip install --no-deps tsad matplotlib     # a plain `pip install tsad` fails (old scikit-learn)
    pip install river==0.26.1 numpy pandas packaging pillow cycler kiwisolver fonttools \
        pyparsing contourpy python-dateutil       # tsad imports matplotlib, whose deps --no-deps skipped
    cargo build --release              # or use the shared build (see --edgeflow)
    python3 benches/skab_eval.py --out /tmp/skab.md --json /tmp/skab.json

The scoring alone, on predictions of a Python prototype (importing the script runs nothing):

    import sys; sys.path.insert(0, "benches"); import skab_eval
    files = skab_eval.load()                       # the 34 experiments (Experiment objects)
    res = skab_eval.score(files, [my_flags(f.df) for f in files],   # 0/1 per row, each file
                          [my_change_points(f.df) for f in files])  # or None: |Δ| of the flags
    print(res["f1"], res["far"], res["mar"], res["nab"])

Options: --edgeflow PATH (default /work/main/target/release/edgeflow, else target/release/edgeflow
of this checkout), --param key=value (repeatable; appended to `[pipelines.model]` of the
per-experiment configuration, the value is TOML: `--param threshold=0.9 --param 'x="y"'`; a plain
word is taken as a string; a key the script sets — kind, features — is overridden),
--anomaly-param key=value (the same, for the `[pipelines.anomaly]` table of every per-sensor
pipeline), --no-per-experiment / --no-per-sensor (skip one edgeflow configuration; with both, no
binary is needed), --no-river (skip the River peers), --order files|rows (how the experiments
are laid out in the replay input, see below), --files N (the first N experiments only, for a
quick look: not comparable with the published numbers), --data DIR (default
/work/shared/datasets/skab), --workdir DIR (generated input/configs, default /tmp/skab_eval).

Data (the data folder's README): 34 experiment files, valve1/0..15, valve2/0..3, other/1..14
(`anomaly-free/` is not scored), `;`-separated, one row per second (a few gaps of up to 247 s),
8 sensors and the per-row labels `anomaly` (the row belongs to an anomaly) and `changepoint`
(a change point is at this row). Loaded with pandas (`index_col='datetime', parse_dates=True`).

Scoring (the SKAB leaderboard's, with the PyPI package `tsad`, whose chatter is silenced), over
all files together:
  outliers      `evaluating(true_anomaly, predicted, metric='binary')` → F1, FAR %, MAR % (TP,
                FP, FN counted per row over all files; tsad rounds to 2 decimals);
  change points `evaluating(true_changepoint, predicted_cp, metric='nab', window_width='60s',
                anomaly_window_destination='righter')` → NAB Standard / LowFP / LowFN: each
                labelled change point opens a 60 s window to its right; the first predicted
                change point inside scores up to 1 (less the later it comes), a window without
                one −1 (LowFN −2), every predicted change point outside all windows −0.11
                (LowFP −0.22); normalised so that the null detector scores 0 and a perfect one
                100.
A method that only flags rows gets the SKAB notebooks' change points: the transitions of its
flags, |flag_t − flag_{t−1}| (and flag_0 at the first row).

edgeflow. ONE replay input for both configurations: a JSON line per row,
`{"topic": "skab/<file id>", "payload": {"ts": <epoch ms of datetime, read as UTC>, "a1": …,
"a2": …, "current": …, "pressure": …, "temp": …, "thermo": …, "voltage": …, "flow": …}}`
(file id e.g. `valve1-0`, `other-13`; FIELDS below maps the short names to SKAB's columns).
--order files (default): the files one after the other (valve1, valve2, other; by number);
--order rows: interleaved by row (row 0 of every file, then row 1, …). Every key is
independent, so the results must not depend on the order (run both to check).
  1. per experiment (the main one): one key per file, `kind = "anomaly"` over the 8 features
     (the config in write_config_experiment) plus the --params. Its messages carry `anomaly`
     (bool, a state), `anomaly_score` ([0, 1]), `anomaly_kind`, `anomaly_field`, `change`
     (bool), `warming_up`. Outliers = `anomaly`; change points = `change`, and also the
     transitions of `anomaly` (the notebooks' way) for comparison.
  2. per sensor: one `kind = "forecast"`, `target = "y"` pipeline per sensor (`skab_a1`, …,
     `fields = { y = "/a1" }` on the same input, key = file id, so one key per (file, sensor)),
     each with a `[pipelines.anomaly]` table (defaults, plus the --anomaly-params). Outliers =
     OR over the file's 8 sensors of `anomaly`; change points = OR of `change`, and the
     transitions of the OR'd flags.
Every output message must map to exactly one input row (by pipeline, key and time) and every row
must get one message per pipeline; the script stops with an error otherwise. A configuration
that `edgeflow check` rejects stops the script with edgeflow's message (skip it with
--no-per-experiment / --no-per-sensor until the binary has the feature). A binary that puts no
`change` field in any message gets n/a for those change points (and a note).
Diagnostic rows (not a setting of edgeflow): the same messages with the SKAB protocol's own
threshold on `anomaly_score` (per-sensor: its max over sensors) instead of edgeflow's flags:
a row is flagged when its score exceeds the 99th percentile of the file's first 400 rows. They
tell the ranking quality of the score apart from the choice of threshold.

Peers, on exactly the same rows, scored the same way, every one per file from the file's start
(the SKAB protocol: the first 400 rows are the normal training part):
  - River `preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42)` (River's documented
    setup: HST assumes features in [0, 1]; defaults n_trees=10, height=8, window_size=250), a
    fresh model per file, test-then-train (score_one, then learn_one) on the 8 sensors; a row
    is flagged when its score exceeds the 99th percentile of the scores of the file's first 400
    rows. HST scores 0 until its first reference window (250 rows) is full;
  - River `anomaly.GaussianScorer()` (defaults: the whole history, grace period 100), one per
    (file, sensor), test-then-train, file score = max over the 8 sensors, flagged above the 99th
    percentile of the first 400 rows (a univariate baseline, like configuration 2);
  - Hotelling T² trained on the first 400 rows (numpy): their mean and covariance
    (pseudo-inverse: a sensor constant over them is ignored), T² of every row, its trailing
    moving mean over 60 rows (rows with fewer than 60 behind them are not flagged), threshold =
    the max of the smoothed T² over the first 400 rows. A sanity check of the scoring against
    the published T² numbers (the notes also give its NAB with a 30 s centred window);
  - the null detector (never flags) and "every row after the first 400" (flags rows ≥ 400,
    one change point at row 400), to show how the metrics behave; and the same flags with a
    blind change point every 60 rows from row 400 on, to show how NAB rewards alarms at a
    steady rate (a window is 60 s wide, a false alarm costs only 0.11);
  - for every method, the column "NAB std, blind same rate": NAB standard of as many change
    points per file as the method raised, evenly spaced over the file (the mean over 5 phases
    of the spacing), i.e. what alarms at that rate earn without looking at the data.
  - the labels themselves (outliers = `anomaly`, change points = `changepoint`), a check of
    the scoring code: F1 1, but NAB below 100 — where a labelled change point comes less than
    60 s after the previous one, tsad cuts its window to start where the previous one ends, and
    its own alarm falls in (and is absorbed by) the previous window, so the cut window counts as
    missed. No detector can score more than the labels do (the report says how many such change
    points there are).
Published leaderboard numbers (SKAB README, via the data folder's README) are printed as
reference rows; they are not run here.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import eval_common as ec

TOOL = "skab_eval"
RIVER_VERSION = "0.26.1"
PIP_HINT = (
    f"pip install --no-deps tsad matplotlib && pip install river=={RIVER_VERSION} numpy pandas"
    " packaging pillow cycler kiwisolver fonttools pyparsing contourpy python-dateutil"
)
DATA = Path("/work/shared/datasets/skab")
GROUPS = ("valve1", "valve2", "other")  # scored; anomaly-free/ is not
# Short field names of the replay payload → SKAB's columns (in SKAB's column order).
FIELDS = {
    "a1": "Accelerometer1RMS",
    "a2": "Accelerometer2RMS",
    "current": "Current",
    "pressure": "Pressure",
    "temp": "Temperature",
    "thermo": "Thermocouple",
    "voltage": "Voltage",
    "flow": "Volume Flow RateRMS",
}
TRAIN_ROWS = 400  # the SKAB protocol's training part at the start of each file
QUANTILE = 99.0  # peers' threshold: this percentile of the scores of the first TRAIN_ROWS rows
T2_SMOOTH = 60  # rows in the T² moving mean
NAB_WINDOW = "60s"
NAB_DESTINATION = "righter"
EXPERIMENT_PIPELINE = "skab"
SENSOR_PIPELINE = "skab_{}"  # one per short field name

# Published leaderboard results (SKAB README, as quoted by /work/shared/datasets/README.md):
# (method, F1, NAB standard). Not run by this script.
PUBLISHED = [
    ("Conv-AE", 0.78, 23.61),
    ("MSET", 0.78, None),
    ("T-squared+Q (PCA)", 0.76, 25.35),
    ("LSTM-AE", 0.74, None),
    ("Isolation forest", 0.29, 26.16),
    ("MSCRED", None, 32.42),
    ("T-squared (older leaderboard version, NAB with a 30 s centred window)", 0.56, 17.87),
]

try:
    import numpy as np
    import pandas as pd
except ImportError as e:  # pragma: no cover - environment check
    sys.exit(f"{TOOL}: {e}.\nInstall the Python side with:\n    {PIP_HINT}")


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class Experiment:
    fid: str  # file id, e.g. "valve1-0" (the edgeflow key)
    path: Path
    df: pd.DataFrame  # as SKAB's notebooks load it: datetime index, 8 sensors, anomaly, changepoint
    X: np.ndarray = field(repr=False, default=None)  # rows × 8 sensors, in FIELDS order
    ts_ms: np.ndarray = field(repr=False, default=None)  # epoch ms of each row (datetime as UTC)

    def __post_init__(self):
        if self.X is None:
            self.X = self.df[list(FIELDS.values())].to_numpy(dtype=float)
        if self.ts_ms is None:
            self.ts_ms = self.df.index.values.astype("datetime64[ms]").astype(np.int64)

    @property
    def n(self) -> int:
        return len(self.df)


def _file_order(p: Path) -> tuple:
    return (GROUPS.index(p.parent.name), int(p.stem) if p.stem.isdigit() else 1 << 30, p.stem)


def load(data: Path | str = DATA, limit: int | None = None) -> list[Experiment]:
    """The scored SKAB experiments (valve1, valve2, other; by number), as Experiment objects."""
    data = Path(data)
    paths = sorted((p for g in GROUPS for p in (data / g).glob("*.csv")), key=_file_order)
    if not paths:
        ec.die(TOOL, f"no experiment files under {data}/{{{','.join(GROUPS)}}}/ (--data DIR: "
                     "the SKAB data folder)")
    want = list(FIELDS.values()) + ["anomaly", "changepoint"]
    out = []
    for p in paths[:limit] if limit else paths:
        df = pd.read_csv(p, sep=";", index_col="datetime", parse_dates=True)
        missing = [c for c in want if c not in df.columns]
        if missing:
            ec.die(TOOL, f"{p}: no column(s) {missing}")
        if not df.index.is_monotonic_increasing or df.index.has_duplicates:
            ec.die(TOOL, f"{p}: the datetimes are not strictly increasing")
        if df[want].isna().any().any():
            ec.die(TOOL, f"{p}: empty cells")
        out.append(Experiment(f"{p.parent.name}-{p.stem}", p, df))
    return out


# --------------------------------------------------------------------------------------------
# Scoring (tsad, as the SKAB leaderboard)


def _evaluating():
    try:
        os.environ.setdefault("MPLBACKEND", "Agg")
        from tsad.utils.evaluating.evaluating import evaluating
    except ImportError as e:
        ec.die(TOOL, f"{e}. The scoring needs tsad:\n    {PIP_HINT}")
    return evaluating


def _quiet(fn, *args, **kw):
    """tsad prints its results and pandas warns inside it: keep both off our output."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def _df(f) -> pd.DataFrame:
    return f.df if isinstance(f, Experiment) else f


def _as_series(pred, df: pd.DataFrame, what: str, i: int) -> pd.Series:
    """A 0/1 prediction (array-like of len(df), or a Series indexed like df) → int Series."""
    if isinstance(pred, pd.Series):
        if len(pred) != len(df) or not pred.index.equals(df.index):
            raise ValueError(f"{what}[{i}]: a Series must be indexed like the file's rows "
                             f"({len(pred)} vs {len(df)} rows)")
        a = pred.to_numpy()
    else:
        a = np.asarray(pred)
        if a.shape != (len(df),):
            raise ValueError(f"{what}[{i}]: shape {a.shape}, expected ({len(df)},)")
    if a.dtype == bool:
        a = a.astype(np.int64)
    else:
        a = a.astype(float)
        if np.isnan(a).any() or not np.isin(a, (0.0, 1.0)).all():
            raise ValueError(f"{what}[{i}]: values must be 0/1 (or bool), no NaN")
        a = a.astype(np.int64)
    return pd.Series(a, index=df.index)


def transitions(flags) -> np.ndarray:
    """The SKAB notebooks' change points of a 0/1 flag series: |Δflag|, flag_0 at row 0."""
    a = np.asarray(flags).astype(np.int64)
    return np.abs(np.diff(a, prepend=0))


def score(files: Sequence, outlier_preds: Sequence, cp_preds: Sequence | None = None, *,
          window_width: str = NAB_WINDOW, destination: str = NAB_DESTINATION,
          per_file: bool = True) -> dict:
    """Score per-row predictions on SKAB files the leaderboard's way (tsad).

    files: Experiment objects (from load()) or DataFrames with `anomaly` and `changepoint`
    columns and a datetime index. outlier_preds[i], cp_preds[i]: 0/1 (or bool) per row of
    files[i], array-like or a Series indexed like it. cp_preds None: the transitions of the
    outlier flags (SKAB notebooks); a None entry in cp_preds likewise for that file.
    Returns {"f1", "far" (%), "mar" (%), "nab": {"Standard", "LowFP", "LowFN"}, "tp", "fp",
    "fn", "tn", "flagged_share", "cp_alarms_per_file", "files": [per file: id, rows, f1, far,
    mar, tp, fp, fn, tn, nab, cp_alarms, flagged]} (files only with per_file)."""
    evaluating = _evaluating()
    if len(outlier_preds) != len(files) or (cp_preds is not None and len(cp_preds) != len(files)):
        raise ValueError(f"{len(files)} files but {len(outlier_preds)} outlier predictions"
                         + ("" if cp_preds is None else f" and {len(cp_preds)} change-point ones"))
    dfs = [_df(f) for f in files]
    true_o = [df["anomaly"].astype(np.int64) for df in dfs]
    true_c = [df["changepoint"].astype(np.int64) for df in dfs]
    pred_o = [_as_series(p, df, "outlier_preds", i) for i, (p, df) in enumerate(zip(outlier_preds, dfs))]
    pred_c = []
    for i, df in enumerate(dfs):
        p = None if cp_preds is None else cp_preds[i]
        pred_c.append(pd.Series(transitions(pred_o[i].to_numpy()), index=df.index) if p is None
                      else _as_series(p, df, "cp_preds", i))
    nab_kw = dict(metric="nab", window_width=window_width, anomaly_window_destination=destination)

    def counts(t: pd.Series, p: pd.Series) -> tuple[int, int, int, int]:
        t, p = t.to_numpy() == 1, p.to_numpy() == 1
        return (int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum()),
                int((~t & ~p).sum()))

    f1, far, mar = _quiet(evaluating, true_o, pred_o, metric="binary")
    nab = _quiet(evaluating, true_c, pred_c, **nab_kw)
    tp, fp, fn, tn = (sum(c) for c in zip(*(counts(t, p) for t, p in zip(true_o, pred_o))))
    rows = sum(len(df) for df in dfs)
    out = {
        "f1": float(f1), "far": float(far), "mar": float(mar),
        "nab": {k: float(v) for k, v in nab.items()},
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "flagged_share": (tp + fp) / rows if rows else math.nan,
        "cp_alarms_per_file": float(np.mean([int(p.sum()) for p in pred_c])) if dfs else math.nan,
    }
    if per_file:
        per = []
        for i, f in enumerate(files):
            ftp, ffp, ffn, ftn = counts(true_o[i], pred_o[i])
            try:
                ff1, ffar, fmar = _quiet(evaluating, [true_o[i]], [pred_o[i]], metric="binary")
            except ZeroDivisionError:
                ff1 = ffar = fmar = math.nan
            try:
                fnab = _quiet(evaluating, [true_c[i]], [pred_c[i]], **nab_kw)
            except ZeroDivisionError:  # a file without labelled change points
                fnab = {"Standard": math.nan, "LowFP": math.nan, "LowFN": math.nan}
            per.append({
                "id": f.fid if isinstance(f, Experiment) else str(i), "rows": len(dfs[i]),
                "f1": float(ff1), "far": float(ffar), "mar": float(fmar),
                "tp": ftp, "fp": ffp, "fn": ffn, "tn": ftn,
                "nab": {k: float(v) for k, v in fnab.items()},
                "cp_alarms": int(pred_c[i].sum()), "flagged": int(pred_o[i].sum()),
            })
        out["files"] = per
    return out


# --------------------------------------------------------------------------------------------
# Peers


@dataclass
class Method:
    """A method's per-file predictions. cps[i] None: the transitions of flags[i]."""

    name: str
    cp_from: str  # how its change points are made, for the table
    flags: list
    cps: list | None = None
    seconds: float = math.nan
    note: str = ""
    published: tuple | None = None  # (F1, NAB standard) of a reference row, not run
    result: dict | None = None


def above_training_quantile(scores: np.ndarray) -> np.ndarray:
    """Flags: score above the QUANTILE-th percentile of the first TRAIN_ROWS rows' scores."""
    thr = np.percentile(scores[:TRAIN_ROWS], QUANTILE)
    return (scores > thr).astype(np.int64)


def null_detector(files: list[Experiment]) -> Method:
    return Method("null detector (never flags)", "|Δflags|", [np.zeros(f.n, np.int64) for f in files])


def after_training(files: list[Experiment]) -> Method:
    flags = [(np.arange(f.n) >= TRAIN_ROWS).astype(np.int64) for f in files]
    return Method(f"every row after the first {TRAIN_ROWS}", "|Δflags|", flags)


def after_training_periodic(files: list[Experiment], every: int = 60) -> Method:
    flags = [(np.arange(f.n) >= TRAIN_ROWS).astype(np.int64) for f in files]
    cps = [((np.arange(f.n) >= TRAIN_ROWS) & ((np.arange(f.n) - TRAIN_ROWS) % every == 0))
           .astype(np.int64) for f in files]
    return Method(f"every row after the first {TRAIN_ROWS}, blind change points",
                  f"every {every} rows from row {TRAIN_ROWS}", flags, cps)


BLIND_PHASES = (0.0, 0.2, 0.4, 0.6, 0.8)


def blind_same_rate(files: Sequence, alarms: Sequence[int]) -> float:
    """NAB standard of alarms[i] change points evenly spaced over file i (mean over phases)."""
    if not any(alarms):
        return 0.0
    out = []
    for ph in BLIND_PHASES:
        cps = []
        for f, k in zip(files, alarms):
            n = len(_df(f))
            c = np.zeros(n, np.int64)
            if k:
                c[np.minimum((np.floor((np.arange(k) + ph) * n / k)).astype(np.int64), n - 1)] = 1
            cps.append(c)
        out.append(score(files, [np.zeros(len(_df(f)), np.int64) for f in files], cps,
                         per_file=False)["nab"]["Standard"])
    return float(np.mean(out))


def labels(files: list[Experiment]) -> Method:
    return Method("the labels (scoring check)", "`changepoint`",
                  [f.df["anomaly"].to_numpy().astype(np.int64) for f in files],
                  [f.df["changepoint"].to_numpy().astype(np.int64) for f in files])


def hotelling_t2(files: list[Experiment]) -> Method:
    t0 = time.perf_counter()
    flags = []
    for f in files:
        tr = f.X[:TRAIN_ROWS]
        mu = tr.mean(axis=0)
        inv = np.linalg.pinv(np.cov(tr, rowvar=False))
        d = f.X - mu
        t2 = np.einsum("ij,jk,ik->i", d, inv, d)
        smooth = pd.Series(t2).rolling(T2_SMOOTH).mean().to_numpy()
        thr = np.nanmax(smooth[:TRAIN_ROWS])
        flags.append(np.where(np.isfinite(smooth), smooth > thr, False).astype(np.int64))
    return Method(f"Hotelling T² (first {TRAIN_ROWS} rows, {T2_SMOOTH}-row mean, max threshold)",
                  "|Δflags|", flags, seconds=time.perf_counter() - t0)


def _river():
    try:
        import river
        from river import anomaly, preprocessing
    except ImportError as e:
        ec.die(TOOL, f"{e}. Install the peers with:\n    {PIP_HINT}\n(or run with --no-river)")
    if river.__version__ != RIVER_VERSION:
        print(f"{TOOL}: warning: River {river.__version__}, the script was written for "
              f"{RIVER_VERSION}", file=sys.stderr)
    return river, anomaly, preprocessing


def river_hst(files: list[Experiment]) -> Method:
    _, anomaly, preprocessing = _river()
    t0 = time.perf_counter()
    flags = []
    names = list(FIELDS)
    for f in files:
        model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42)
        scores = np.empty(f.n)
        for i, row in enumerate(f.X.tolist()):
            x = dict(zip(names, row))
            scores[i] = model.score_one(x)
            model.learn_one(x)
        flags.append(above_training_quantile(scores))
    return Method(f"River MinMaxScaler | HalfSpaceTrees(seed=42), > p{QUANTILE:g} of first "
                  f"{TRAIN_ROWS}", "|Δflags|", flags, seconds=time.perf_counter() - t0)


def river_gaussian(files: list[Experiment]) -> Method:
    _, anomaly, _ = _river()
    t0 = time.perf_counter()
    flags = []
    for f in files:
        scorers = [anomaly.GaussianScorer() for _ in FIELDS]
        scores = np.empty(f.n)
        for i, row in enumerate(f.X.tolist()):
            best = 0.0
            for sc, y in zip(scorers, row):
                best = max(best, sc.score_one(None, y))
                sc.learn_one(None, y)
            scores[i] = best
        flags.append(above_training_quantile(scores))
    return Method(f"River GaussianScorer per sensor, max, > p{QUANTILE:g} of first {TRAIN_ROWS}",
                  "|Δflags|", flags, seconds=time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# edgeflow


def experiment_defaults() -> dict:
    return {"kind": "anomaly", "features": list(FIELDS)}


def _pipeline_head(name: str, topics: str, fields: dict[str, str]) -> list[str]:
    return [
        "[[pipelines]]",
        f"name = {json.dumps(name)}",
        f"topics = [{json.dumps(topics)}]",
        'format = "json"',
        'key = "topic[1]"',
        'time = "/ts"',
        'time_unit = "ms"',
        "fields = { " + ", ".join(f'{k} = "/{v}"' for k, v in fields.items()) + " }",
    ]


def write_config_experiment(path: Path, params: dict[str, str]) -> None:
    lines = ["# generated by benches/skab_eval.py: one key per SKAB experiment"]
    lines += _pipeline_head(EXPERIMENT_PIPELINE, "skab/+", {k: k for k in FIELDS})
    lines += ec.model_section(experiment_defaults(), params)
    path.write_text("\n".join(lines) + "\n")


def anomaly_section(params: dict[str, str]) -> list[str]:
    return ["[pipelines.anomaly]"] + ec.model_section({}, params)[1:]


def write_config_sensor(path: Path, anomaly_params: dict[str, str]) -> None:
    lines = ["# generated by benches/skab_eval.py: one key per (SKAB experiment, sensor)"]
    for k in FIELDS:
        lines += _pipeline_head(SENSOR_PIPELINE.format(k), "skab/+", {"y": k})
        lines += ec.model_section({"kind": "forecast", "target": "y"}, {})
        lines += anomaly_section(anomaly_params) + [""]
    path.write_text("\n".join(lines))


def write_input(files: list[Experiment], path: Path, order: str) -> int:
    """The replay input (see the module doc for --order); returns the number of lines."""
    def line(f: Experiment, i: int) -> str:
        vals = ",".join(f'"{k}":{v!r}' for k, v in zip(FIELDS, f.X[i].tolist()))
        return f'{{"topic":"skab/{f.fid}","payload":{{"ts":{int(f.ts_ms[i])},{vals}}}}}\n'

    n = 0
    with path.open("w") as out:
        if order == "files":
            for f in files:
                for i in range(f.n):
                    out.write(line(f, i))
                    n += 1
        else:
            for i in range(max(f.n for f in files)):
                for f in files:
                    if i < f.n:
                        out.write(line(f, i))
                        n += 1
    return n


def check(exe: Path, cfg: Path, flag: str) -> None:
    """`edgeflow check`, with a hint at the flag that skips this configuration."""
    try:
        ec.check_config(exe, cfg, TOOL)
    except SystemExit as e:
        sys.exit(f"{e.code}\n(A binary without this feature yet? Run with {flag} to skip this "
                 "configuration.)")


@dataclass
class Run:
    """What one configuration's replay gave, per file (arrays of the file's rows)."""

    label: str
    cfg: Path
    anomaly: list  # per file: int8 0/1 (per sensor: rows × sensors)
    change: list | None  # None: no message had a `change` field
    scores: list  # float (NaN for null)
    seconds: float = math.nan
    lines: int = 0
    summary: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def _bad(label: str, line: bytes, why: str) -> None:
    text = line.decode(errors="replace").strip()
    ec.die(TOOL, f"{label}: {why}; the output line:\n{text[:600]}")


def run_edgeflow(exe: Path, cfg: Path, inp: Path, files: list[Experiment], pipelines: list[str],
                 label: str, workdir: Path, per_sensor: bool) -> Run:
    """Replay, map every message to its row (pipeline, key, time) and collect the predictions."""
    index = {f.fid: (j, {int(t): i for i, t in enumerate(f.ts_ms)}) for j, f in enumerate(files)}
    pcol = {p: c for c, p in enumerate(pipelines)}
    shape = (lambda f: (f.n, len(pipelines))) if per_sensor else (lambda f: (f.n,))
    anomaly = [np.full(shape(f), -1, np.int8) for f in files]
    change = [np.full(shape(f), -1, np.int8) for f in files]
    scores = [np.full(shape(f), np.nan) for f in files]
    kinds: dict[str, int] = {}
    blamed: dict[str, int] = {}
    st = {"with_change": 0, "without_change": 0, "warming_up": 0, "score_out_of_01": 0,
          "score_null": 0, "messages": 0}

    def on_line(line: bytes) -> None:
        try:
            p = json.loads(line)["payload"]
            pipe, key, t = p["pipeline"], p["key"], p["time"]
        except (ValueError, KeyError, TypeError) as e:
            _bad(label, line, f"not an output message with pipeline, key and time ({e!r})")
        st["messages"] += 1
        if pipe not in pcol:
            _bad(label, line, f"a message of an unknown pipeline {pipe!r}")
        if key not in index:
            _bad(label, line, f"a message for key {key!r}, which is no input file")
        j, rows = index[key]
        i = rows.get(t)
        if i is None:
            _bad(label, line, f"a message for key {key} at time {t}, which is no row of that file")
        at = (i, pcol[pipe]) if per_sensor else i
        if anomaly[j][at] != -1:
            _bad(label, line, f"a second message for the row {files[j].fid} #{i} (time {t})"
                 + (f" of pipeline {pipe}" if per_sensor else ""))
        a = p.get("anomaly")
        if not isinstance(a, bool):
            _bad(label, line, f"`anomaly` is {a!r}, not a bool")
        anomaly[j][at] = a
        if "change" in p:
            c = p["change"]
            if not isinstance(c, bool):
                _bad(label, line, f"`change` is {c!r}, not a bool")
            change[j][at] = c
            st["with_change"] += 1
        else:
            st["without_change"] += 1
        s = p.get("anomaly_score")
        if s is None:
            st["score_null"] += 1
        elif isinstance(s, bool) or not isinstance(s, (int, float)):
            _bad(label, line, f"`anomaly_score` is {s!r}, not a number")
        else:
            scores[j][at] = float(s)
            if not per_sensor and not 0.0 <= s <= 1.0:
                st["score_out_of_01"] += 1
        if p.get("warming_up") is True:
            st["warming_up"] += 1
        if a:
            k = p.get("anomaly_kind", "(no field)")
            kinds[str(k)] = kinds.get(str(k), 0) + 1
            if not per_sensor:
                fld = p.get("anomaly_field", "(no field)")
                if fld not in FIELDS and fld not in (None, "(no field)"):
                    _bad(label, line, f"`anomaly_field` {fld!r} is none of the features")
                blamed[str(fld)] = blamed.get(str(fld), 0) + 1

    summ = workdir / (cfg.stem + ".summary.json")
    rep = ec.run_replay(exe, cfg, inp, summ, on_line, TOOL)
    rows_total = sum(f.n for f in files)
    for name in pipelines:
        ps = ec.pipeline_summary(rep, name, TOOL)
        problems = {k: ps.get(k) for k in ("decode_errors", "late", "duplicates", "filtered")
                    if ps.get(k)}
        if ps.get("readings") != rows_total or problems:
            ec.die(TOOL, f"{label}: pipeline {name} accepted {ps.get('readings')} of "
                         f"{rows_total} readings {problems}; see {summ}")
    for j, f in enumerate(files):
        miss = np.argwhere(anomaly[j] == -1)
        if len(miss):
            i = int(miss[0][0])
            where = f" of pipeline {pipelines[int(miss[0][1])]}" if per_sensor else ""
            ec.die(TOOL, f"{label}: {len(miss)} message(s) missing for the rows of {f.fid}, "
                         f"the first for row #{i} (time {int(f.ts_ms[i])}){where}")
    if st["with_change"] and st["without_change"]:
        ec.die(TOOL, f"{label}: {st['without_change']} of {st['messages']} messages have no "
                     "`change` field (all or none should)")
    notes = []
    if not st["with_change"]:
        notes.append("this binary puts no `change` field in its messages: change points from "
                     "`change` are n/a")
    if st["score_out_of_01"]:
        notes.append(f"{st['score_out_of_01']} messages with an `anomaly_score` outside [0, 1]")
    if st["score_null"]:
        notes.append(f"{st['score_null']} messages with a null `anomaly_score`")
    run = Run(label, cfg,
              [a.astype(np.int64) for a in anomaly],
              [c.astype(np.int64) for c in change] if st["with_change"] else None,
              scores, rep.seconds, rep.lines, rep.summary, notes,
              st | {"anomaly_kind": kinds, "anomaly_field": blamed})
    return run


def edgeflow_methods(run: Run, files: list[Experiment], per_sensor: bool) -> list[Method]:
    """The table rows of one configuration: flags with `change` and with |Δflags|, then the
    diagnostic p99 threshold on the score."""
    if per_sensor:
        flags = [a.max(axis=1) for a in run.anomaly]
        cps = None if run.change is None else [c.max(axis=1) for c in run.change]
        score_rows = [np.nan_to_num(s, nan=0.0).max(axis=1) for s in run.scores]
        base, of = "edgeflow per sensor (forecast + anomaly)", "OR of "
    else:
        flags, cps = run.anomaly, run.change
        score_rows = [np.nan_to_num(s, nan=0.0) for s in run.scores]
        base, of = "edgeflow per experiment (kind = anomaly)", ""
    out = []
    if cps is not None:
        out.append(Method(base, f"{of}`change`", flags, cps, seconds=run.seconds))
    else:
        m = Method(base, f"{of}`change`", flags, None, seconds=run.seconds)
        m.result = "n/a"
        out.append(m)
    out.append(Method(base, "|Δflags|", flags, None, seconds=run.seconds))
    out.append(Method(f"{base}: `anomaly_score`{' max' if per_sensor else ''} > p{QUANTILE:g} "
                      f"of first {TRAIN_ROWS} (diagnostic)", "|Δflags|",
                      [above_training_quantile(s) for s in score_rows]))
    return out


# --------------------------------------------------------------------------------------------
# Report


def table(methods: list[Method]) -> list[str]:
    header = ["method", "change points", "F1", "FAR %", "MAR %", "NAB standard", "NAB lowFP",
              "NAB lowFN", "NAB std, blind same rate", "CP alarms / file", "flagged %",
              "seconds"]
    rows = []
    for m in methods:
        if m.published is not None:
            f1, nab = m.published
            rows.append([f"{m.name} (published, not run)", "", ec.fmt(f1, 2), "", "",
                         ec.fmt(nab, 2), "", "", "", "", "", ""])
            continue
        r = m.result
        sec = ec.fmt(m.seconds, 1)
        if r == "n/a":
            rows.append([m.name, m.cp_from] + ["n/a"] * 9 + [sec])
            continue
        rows.append([m.name, m.cp_from, ec.fmt(r["f1"], 2), ec.fmt(r["far"], 2),
                     ec.fmt(r["mar"], 2), ec.fmt(r["nab"]["Standard"], 2),
                     ec.fmt(r["nab"]["LowFP"], 2), ec.fmt(r["nab"]["LowFN"], 2),
                     ec.fmt(r["nab_blind_same_rate"], 2), ec.fmt(r["cp_alarms_per_file"], 1), ec.fmt(100 * r["flagged_share"], 1),
                     sec])
    return ec.md_table(header, rows)


def _counts(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "none"


def parse_anomaly_params(items: list[str]) -> dict[str, str]:
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or not raw.strip():
            ec.die(TOOL, f"--anomaly-param {item!r}: expected key=value (value TOML)")
    return ec.parse_params(items, TOOL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="also write the Markdown report here")
    ap.add_argument("--json", type=Path, help="write all metrics, with per-file results, here")
    ap.add_argument("--edgeflow", help="edgeflow binary (default: "
                                       + ", else ".join(str(p) for p in ec.DEFAULT_EDGEFLOW) + ")")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a [pipelines.model] parameter of the per-experiment configuration, "
                         "value as TOML (repeatable)")
    ap.add_argument("--anomaly-param", action="append", default=[], metavar="KEY=VALUE",
                    help="a [pipelines.anomaly] parameter of the per-sensor pipelines, value as "
                         "TOML (repeatable)")
    ap.add_argument("--no-per-experiment", action="store_true",
                    help="skip edgeflow's per-experiment (kind = anomaly) configuration")
    ap.add_argument("--no-per-sensor", action="store_true",
                    help="skip edgeflow's per-sensor (forecast + anomaly) configuration")
    ap.add_argument("--no-river", action="store_true", help="skip the River peers")
    ap.add_argument("--order", choices=("files", "rows"), default="files",
                    help="replay input: the files one after the other, or interleaved by row")
    ap.add_argument("--files", type=int, help="only the first N experiments (quick look)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/skab_eval"))
    args = ap.parse_args()
    t_start = time.perf_counter()
    params = ec.parse_params(args.param, TOOL)
    aparams = parse_anomaly_params(args.anomaly_param)
    use_exp, use_sensor = not args.no_per_experiment, not args.no_per_sensor
    exe = ec.find_edgeflow(args.edgeflow, TOOL) if (use_exp or use_sensor) else None
    _evaluating()  # fail now, not after the replays, when tsad is missing
    if not args.no_river:
        _river()
    args.workdir.mkdir(parents=True, exist_ok=True)
    files = load(args.data, args.files)
    rows = sum(f.n for f in files)
    print(f"{TOOL}: {len(files)} experiments, {rows} rows"
          + (f", edgeflow {exe}" if exe else ""), file=sys.stderr)

    # Configurations first, so that a rejected one stops the script before the long parts.
    cfg_exp, cfg_sensor = args.workdir / "skab_experiment.toml", args.workdir / "skab_sensor.toml"
    sensor_pipes = [SENSOR_PIPELINE.format(k) for k in FIELDS]
    if use_exp:
        write_config_experiment(cfg_exp, params)
        check(exe, cfg_exp, "--no-per-experiment")
    if use_sensor:
        write_config_sensor(cfg_sensor, aparams)
        check(exe, cfg_sensor, "--no-per-sensor")

    methods: list[Method] = []
    runs: list[Run] = []
    inp = args.workdir / f"skab_{args.order}.jsonl"
    if use_exp or use_sensor:
        lines = write_input(files, inp, args.order)
        assert lines == rows
    if use_exp:
        print(f"{TOOL}: edgeflow per experiment…", file=sys.stderr)
        r = run_edgeflow(exe, cfg_exp, inp, files, [EXPERIMENT_PIPELINE], "per experiment",
                         args.workdir, per_sensor=False)
        runs.append(r)
        methods += edgeflow_methods(r, files, per_sensor=False)
    if use_sensor:
        print(f"{TOOL}: edgeflow per sensor…", file=sys.stderr)
        r = run_edgeflow(exe, cfg_sensor, inp, files, sensor_pipes, "per sensor", args.workdir,
                         per_sensor=True)
        runs.append(r)
        methods += edgeflow_methods(r, files, per_sensor=True)
    if not args.no_river:
        print(f"{TOOL}: River peers…", file=sys.stderr)
        methods += [river_hst(files), river_gaussian(files)]
    t2 = hotelling_t2(files)
    methods += [t2, null_detector(files), after_training(files),
                after_training_periodic(files), labels(files)]

    print(f"{TOOL}: scoring…", file=sys.stderr)
    t0 = time.perf_counter()
    for m in methods:
        if m.result is None:
            m.result = score(files, m.flags, m.cps)
            m.result["nab_blind_same_rate"] = blind_same_rate(
                files, [pf["cp_alarms"] for pf in m.result["files"]])
    t2_centred = score(files, t2.flags, None, window_width="30s", destination="center",
                       per_file=False)
    score_seconds = time.perf_counter() - t0
    published = [Method(n, "", [], published=(f1, nab)) for n, f1, nab in PUBLISHED]
    total = time.perf_counter() - t_start

    tsad_version = "?"
    try:
        from importlib.metadata import version
        tsad_version = version("tsad")
    except Exception:  # noqa: BLE001 - only for the report
        pass
    extra = f", numpy {np.__version__}, pandas {pd.__version__}, tsad {tsad_version}"
    if not args.no_river:
        extra += f", River {_river()[0].__version__}"
    env = ec.environment(exe, extra) if exe else (
        f"Python {sys.version.split()[0]}{extra}, no edgeflow run")
    n_cp = sum(int(f.df["changepoint"].sum()) for f in files)
    n_an = sum(int(f.df["anomaly"].sum()) for f in files)
    lines = [
        f"SKAB v0.9 ({len(files)} experiments, {rows} rows, {n_an} labelled anomalous = "
        f"{100 * n_an / rows:.1f} %, {n_cp} labelled change points; {args.data}). "
        f"Outliers: tsad `metric='binary'`; change points: tsad NAB, window {NAB_WINDOW} "
        f"{NAB_DESTINATION}. {env}.",
        "",
    ] + table(methods + published) + [""]
    if runs:
        lines.append(f"edgeflow replay input: {rows} lines, "
                     + ("the files one after the other" if args.order == "files"
                        else "interleaved by row")
                     + f" (`--order {args.order}`); both configurations read the same input.")
    for r in runs:
        st = r.stats
        desc = (f"`{ec.describe_model(experiment_defaults(), params)}`" if r.label ==
                "per experiment" else
                f"8 pipelines `kind = \"forecast\", target = \"y\"` with `[pipelines.anomaly]` "
                f"{'`' + ', '.join(f'{k} = {v}' for k, v in aparams.items()) + '`' if aparams else '(defaults)'}")
        lines.append(
            f"edgeflow {r.label}: {desc}; {st['messages']} messages ({r.lines} lines) in "
            f"{r.seconds:.2f} s wall = {rows / r.seconds:,.0f} input rows/s; "
            f"{st['warming_up']} messages `warming_up`; `anomaly_kind` of flagged messages: "
            f"{_counts(st['anomaly_kind'])}"
            + (f"; `anomaly_field`: {_counts(st['anomaly_field'])}" if r.label == "per experiment"
               else "") + "."
            + "".join(f" Note: {n}." for n in r.notes))
    lab = next(m.result for m in methods if m.name.startswith("the labels"))
    close = sum(int(np.sum(np.diff(f.df.index[f.df["changepoint"] == 1].values)
                           < np.timedelta64(60, "s"))) for f in files)
    after = next(m.result for m in methods if m.name.startswith("every row after"))
    late_rows = sum(max(f.n - TRAIN_ROWS, 0) for f in files)
    late_an = sum(int(f.df["anomaly"].to_numpy()[TRAIN_ROWS:].sum()) for f in files)
    lines += [
        f"NAB ceiling: the labels themselves score {ec.fmt(lab['nab']['Standard'], 2)}: {close} "
        f"of the {n_cp} labelled change points come less than {NAB_WINDOW} after the previous one "
        f"(tsad cuts such a window and the alarm at the change point is absorbed by the previous "
        f"window, so it counts as missed).",
        f"F1 floor: flagging every row after the first {TRAIN_ROWS} gives F1 "
        f"{ec.fmt(after['f1'], 2)} ({late_an} of those {late_rows} rows, "
        f"{100 * late_an / max(late_rows, 1):.0f} %, are labelled anomalous, and "
        f"{100 * (1 - after['mar'] / 100):.0f} % of all anomalous rows are among them); a "
        f"detector's F1 means something only well above it.",
        f"Hotelling T² with the older leaderboard's NAB window (30 s centred): standard "
        f"{ec.fmt(t2_centred['nab']['Standard'], 2)}, lowFP {ec.fmt(t2_centred['nab']['LowFP'], 2)}, "
        f"lowFN {ec.fmt(t2_centred['nab']['LowFN'], 2)} (published T-squared: F1 0.56, NAB 17.87; "
        f"SKAB's own T2 class sets its limit from the F distribution at p = 0.999, with an "
        f"optional rolling median, not at the training maximum of a {T2_SMOOTH}-row mean).",
        "Change points `|Δflags|`: the transitions of the method's outlier flags (SKAB "
        "notebooks). `CP alarms / file`: predicted change points per file (every one outside a "
        "window costs 0.11 in NAB standard); `NAB std, blind same rate`: NAB standard of as many "
        "change points per file, evenly spaced without looking at the data (mean over "
        f"{len(BLIND_PHASES)} phases); `flagged %`: share of rows flagged as outliers. "
        "Published rows: the SKAB leaderboard's figures, not run here (their FAR/MAR not quoted).",
        f"Run time: {total:.1f} s in all (scoring {score_seconds:.1f} s).",
    ]
    if args.files:
        lines.append(f"Only the first {args.files} experiments (--files): not comparable with "
                     "the published numbers.")
    lines += [f"{m.name}: {m.note}" for m in methods if m.note]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
        print(f"{TOOL}: wrote {args.out}", file=sys.stderr)
    if args.json:
        doc = {
            "data": str(args.data),
            "files": [{"id": f.fid, "path": str(f.path), "rows": f.n,
                       "anomalies": int(f.df["anomaly"].sum()),
                       "changepoints": int(f.df["changepoint"].sum())} for f in files],
            "scoring": {"outliers": "tsad evaluating(metric='binary')",
                        "change_points": f"tsad evaluating(metric='nab', window_width="
                                         f"'{NAB_WINDOW}', anomaly_window_destination="
                                         f"'{NAB_DESTINATION}')", "tsad": tsad_version},
            "edgeflow": {"binary": str(exe) if exe else None, "order": args.order,
                         "params": params, "anomaly_params": aparams,
                         "runs": [{"label": r.label, "config": r.cfg.read_text(),
                                   "seconds": r.seconds, "output_lines": r.lines,
                                   "summary": r.summary, "stats": r.stats, "notes": r.notes}
                                  for r in runs]},
            "methods": [{"name": m.name, "change_points": m.cp_from, "seconds": m.seconds,
                         "note": m.note, "result": m.result} for m in methods],
            "t2_nab_30s_centred": t2_centred["nab"],
            "published": [{"name": n, "f1": f1, "nab_standard": nab} for n, f1, nab in PUBLISHED],
            "seconds": {"total": total, "scoring": score_seconds},
        }
        args.json.write_text(json.dumps(ec.json_safe(doc), indent=1) + "\n")
        print(f"{TOOL}: wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
