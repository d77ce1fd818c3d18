#!/usr/bin/env python3
"""M4 Hourly (dev half) through `edgeflow replay`, scored the M4 way against peers in the same run.

A developer tool, not part of `cargo test`. Setup and use:

    pip install statsforecast river==0.26.1 numpy pandas
    cargo build --release              # or use the shared build (see --edgeflow)
    python3 benches/m4_eval.py --out /tmp/m4.md --json /tmp/m4.json

Options: --edgeflow PATH (default /work/main/target/release/edgeflow, else target/release/edgeflow
of this checkout), --param key=value (repeatable; appended to `[pipelines.model]`, the value is
TOML: `--param 'season=[24,168]' --param min=0 --param 'season="1d"'`; a plain word such as
`season=1d` is taken as a string; a key the script sets — season, horizon — is overridden),
--data DIR (default /work/shared/datasets/m4-hourly-dev), --series N (the first N series only,
for a quick look), --no-statsforecast (skip the MSTL/ETS peers), --n-jobs (statsforecast
processes, default 2), --workdir DIR (generated input/config, default /tmp/m4_eval).

Data and protocol (the data folder's README): the odd half of M4 Hourly, 207 series H1, H3, …,
H413 (Hourly-train-odd.csv: id, then 700 or 960 values padded with empty cells;
Hourly-test-odd.csv: the next 48 values). Every method learns the training values and forecasts
48 steps from the end of them.

edgeflow: all series are replayed as ONE stream, one key per series (topic `m4/<id>`, key
`topic[1]`), interleaved by hour: the series are aligned so that they all end at the same hour
(a 700-value series starts 260 hours after a 960-value one), and the input holds, for hour
t = 0, 1, 2, …, the reading t of every series that has one. Event time = 2020-01-01T00:00Z + t
hours (ms), so duration seasons (`season = "1d"`) work too. The model is
`kind = "forecast", target = "y", season = 24, horizon = 48` plus the --params. Each key's
forecast is the `horizon` array of its LAST output message that has one; that message must be
the one of the key's last training reading (time and observed value are checked, and the script
stops with an error otherwise, e.g. with a `horizon_every` that skips the last reading). The
replay's stdout is streamed (207 × ~900 messages of 48 steps is several hundred MB): only the
last line with a horizon of each key is kept and JSON-parsed.

Peers, on exactly the same train/test values:
  - seasonal naive (m = 24): the last 24 training values repeated. 95 % interval the
    forecast::snaive way: ± 1.96 · σ · √⌈h/24⌉, σ the root mean square of the in-sample
    seasonal-naive residuals y_t − y_{t−24};
  - Naive2 (M4's benchmark code, `Benchmarks and Evaluation.R` in Mcompetitions/M4-methods):
    if the series passes M4's seasonality test (|acf_24| > 1.645·√((1 + 2·Σ_{k<24} acf_k²)/n),
    the 90 % two-sided test, needs n ≥ 72), divide by a classical multiplicative decomposition's
    seasonal indices (R `decompose`: centred 2×24 moving average, mean ratio per hour of the
    cycle, normalised to mean 1), forecast the last adjusted value, multiply back by the
    indices; no interval;
  - statsforecast MSTL(season_length=[24, 168]) with its default trend forecaster
    (AutoETS(model="ZZN")), MSTL(season_length=24), AutoETS(season_length=24), all with
    level=[95] (its 95 % intervals), n_jobs ≤ 2.

Metrics (M4's definitions; y the test values, f the forecasts, scale s = the in-sample mean
|y_t − y_{t−24}| of each series):
  sMAPE  = mean over the 48 steps of 200·|y − f| / (|y| + |f|), averaged over series;
  MASE   = mean over the steps of |y − f| / s, averaged over series;
  OWA    = 0.5·(sMAPE / sMAPE_Naive2 + MASE / MASE_Naive2), Naive2 of this run;
  MSIS   = mean over the steps of (U − L) + 40·(L − y)·1[y < L] + 40·(y − U)·1[y > U], divided
           by s, averaged over series (alpha 0.05, 2/alpha = 40), for methods with 95 % intervals;
  cov95  = share of the 207 × 48 test points inside [L, U];
  per-step MASE and sMAPE at every h = 1..48 (h = 1, 2, 3, 6, 12, 24, 36, 48 in the table, all
  of them in --json), and the number of steps h ≥ 2 at which edgeflow's MASE (sMAPE) is not below
  seasonal naive's. The notes list the series that weigh most in edgeflow's sMAPE.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import eval_common as ec

TOOL = "m4_eval"
PIP_HINT = "pip install statsforecast river==0.26.1 numpy pandas"
DATA = Path("/work/shared/datasets/m4-hourly-dev")
H = 48  # M4 Hourly horizon
M = 24  # seasonality
ALPHA = 0.05
Z95 = 1.959963984540054
EPOCH_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
HOUR_MS = 3_600_000
TABLE_STEPS = (1, 2, 3, 6, 12, 24, 36, 48)

try:
    import numpy as np
except ImportError as e:  # pragma: no cover - environment check
    sys.exit(f"{TOOL}: {e}.\nInstall the Python side with:\n    {PIP_HINT}")


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class Series:
    sid: str
    train: np.ndarray
    test: np.ndarray
    scale: float = math.nan  # in-sample seasonal-naive MAE (the MASE/MSIS denominator)


def read_rows(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with path.open(newline="") as f:
        rows = csv.reader(f)
        next(rows)  # header "V1","V2",…
        for row in rows:
            if not row:
                continue
            vals = [float(v) for v in row[1:] if v.strip() != ""]
            out[row[0]] = np.array(vals, dtype=float)
    return out


def load(data: Path, limit: int | None) -> list[Series]:
    tr_path, te_path = data / "Hourly-train-odd.csv", data / "Hourly-test-odd.csv"
    for p in (tr_path, te_path):
        if not p.is_file():
            ec.die(TOOL, f"{p} not found (--data DIR: the folder with Hourly-train-odd.csv and "
                         "Hourly-test-odd.csv)")
    train, test = read_rows(tr_path), read_rows(te_path)
    if train.keys() != test.keys():
        ec.die(TOOL, "the train and test files do not hold the same series ids")
    series = []
    for sid, tr in train.items():
        te = test[sid]
        if len(te) != H or len(tr) <= M:
            ec.die(TOOL, f"series {sid}: {len(tr)} train / {len(te)} test values "
                         f"(expected > {M} / {H})")
        s = Series(sid, tr, te)
        s.scale = float(np.mean(np.abs(tr[M:] - tr[:-M])))
        if not s.scale > 0:
            ec.die(TOOL, f"series {sid}: zero in-sample seasonal-naive error, MASE undefined")
        series.append(s)
    return series[:limit] if limit else series


# --------------------------------------------------------------------------------------------
# Forecasts


@dataclass
class Forecast:
    """A method's 48-step forecasts (series × step) and, when it has them, its 95 % intervals."""

    name: str
    f: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    seconds: float = math.nan
    note: str = ""


def seasonal_naive(series: list[Series]) -> Forecast:
    f, lo, hi = [], [], []
    widen = np.sqrt(np.ceil(np.arange(1, H + 1) / M))
    for s in series:
        x = s.train
        fc = np.array([x[len(x) - M + (h % M)] for h in range(H)])
        sigma = math.sqrt(float(np.mean((x[M:] - x[:-M]) ** 2)))
        f.append(fc)
        lo.append(fc - Z95 * sigma * widen)
        hi.append(fc + Z95 * sigma * widen)
    return Forecast("seasonal naive (m=24)", np.array(f), np.array(lo), np.array(hi))


def seasonality_test(x: np.ndarray, m: int) -> bool:
    """M4's SeasonalityTest (R): |acf_m| > 1.645/√n · √(1 + 2·Σ_{k=1}^{m−1} acf_k²)."""
    n = len(x)
    if n < 3 * m:
        return False
    d = x - x.mean()
    denom = float(np.dot(d, d))
    if denom == 0:
        return False
    acf = np.array([np.dot(d[:n - k], d[k:]) / denom for k in range(1, m + 1)])
    limit = 1.645 / math.sqrt(n) * math.sqrt(1 + 2 * float(np.sum(acf[:m - 1] ** 2)))
    return bool(abs(acf[m - 1]) > limit)


def multiplicative_indices(x: np.ndarray, m: int) -> np.ndarray:
    """R `decompose(type = "multiplicative")` seasonal figure, one index per position of the
    cycle (the series starts at position 0)."""
    n = len(x)
    if m % 2 == 0:
        w = np.r_[0.5, np.ones(m - 1), 0.5] / m
    else:
        w = np.ones(m) / m
    trend = np.full(n, np.nan)
    half = len(w) // 2
    trend[half:n - half] = np.convolve(x, w, mode="valid")
    ratio = x / trend
    figure = np.array([np.nanmean(ratio[i::m]) for i in range(m)])
    return figure / figure.mean()


def naive2(series: list[Series]) -> Forecast:
    f, seasonal = [], 0
    for s in series:
        x, n = s.train, len(s.train)
        if seasonality_test(x, M):
            seasonal += 1
            idx = multiplicative_indices(x, M)
            des_last = x[-1] / idx[(n - 1) % M]
            f.append(np.array([des_last * idx[(n + h) % M] for h in range(H)]))
        else:
            f.append(np.full(H, x[-1]))
    return Forecast("Naive2", np.array(f),
                    note=f"{seasonal} of {len(series)} series pass M4's seasonality test")


def statsforecast_peers(series: list[Series], n_jobs: int) -> list[Forecast]:
    try:
        import pandas as pd
        from statsforecast import StatsForecast
        from statsforecast.models import MSTL, AutoETS
    except ImportError as e:
        ec.die(TOOL, f"{e}. Install the peers with:\n    {PIP_HINT}\n"
                     "(or run with --no-statsforecast)")
    frames = []
    for s in series:
        n = len(s.train)
        frames.append(pd.DataFrame({"unique_id": s.sid, "ds": np.arange(n), "y": s.train}))
    df = pd.concat(frames, ignore_index=True)
    models = [
        ("MSTL(season_length=[24, 168])", MSTL(season_length=[24, 168], alias="mstl_24_168")),
        ("MSTL(season_length=24)", MSTL(season_length=24, alias="mstl_24")),
        ("AutoETS(season_length=24)", AutoETS(season_length=24, alias="ets")),
    ]
    sf = StatsForecast(models=[m for _, m in models], freq=1, n_jobs=n_jobs)
    t0 = time.perf_counter()
    fc = sf.forecast(df=df, h=H, level=[95])
    seconds = time.perf_counter() - t0
    if "unique_id" not in fc.columns:
        fc = fc.reset_index()
    fc = fc.sort_values(["unique_id", "ds"])
    groups = {sid: g for sid, g in fc.groupby("unique_id", sort=False)}
    out = []
    for label, m in models:
        a = m.alias
        f = np.array([groups[s.sid][a].to_numpy() for s in series])
        lo = np.array([groups[s.sid][f"{a}-lo-95"].to_numpy() for s in series])
        hi = np.array([groups[s.sid][f"{a}-hi-95"].to_numpy() for s in series])
        out.append(Forecast(f"statsforecast {label}", f, lo, hi, seconds=seconds))
    return out


# --------------------------------------------------------------------------------------------
# edgeflow


def model_defaults() -> dict:
    return {"kind": "forecast", "target": "y", "season": M, "horizon": H}


def write_input(series: list[Series], path: Path) -> tuple[int, dict[str, int]]:
    """The interleaved stream; returns (readings, {series id: its last hour index})."""
    t_end = max(len(s.train) for s in series)  # every series ends at hour t_end − 1
    start = {s.sid: t_end - len(s.train) for s in series}
    n = 0
    with path.open("w") as f:
        for t in range(t_end):
            ts = EPOCH_MS + t * HOUR_MS
            for s in series:
                i = t - start[s.sid]
                if i >= 0:
                    f.write(f'{{"topic":"m4/{s.sid}","payload":{{"ts":{ts},'
                            f'"y":{float(s.train[i])!r}}}}}\n')
                    n += 1
    return n, {s.sid: t_end - 1 for s in series}


def write_config(path: Path, params: dict[str, str]) -> None:
    lines = [
        "# generated by benches/m4_eval.py",
        "[[pipelines]]",
        'name = "m4"',
        'topics = ["m4/+"]',
        'format = "json"',
        'key = "topic[1]"',
        'time = "/ts"',
        'time_unit = "ms"',
        'fields = { y = "/y" }',
        "",
    ] + ec.model_section(model_defaults(), params)
    path.write_text("\n".join(lines) + "\n")


def edgeflow_forecast(exe: Path, series: list[Series], params: dict[str, str],
                      workdir: Path) -> tuple[Forecast, dict]:
    inp, cfg, summ = workdir / "m4.jsonl", workdir / "m4.toml", workdir / "m4.summary.json"
    readings, last_hour = write_input(series, inp)
    write_config(cfg, params)
    ec.check_config(exe, cfg, TOOL)

    last_with_horizon: dict[str, bytes] = {}
    messages: dict[str, int] = {}

    def on_line(line: bytes) -> None:
        key = ec.line_key(line)
        messages[key] = messages.get(key, 0) + 1
        if b'"horizon":[' in line:
            last_with_horizon[key] = line

    rep = ec.run_replay(exe, cfg, inp, summ, on_line, TOOL)
    ps = ec.pipeline_summary(rep, "m4", TOOL)
    problems = {k: ps.get(k) for k in ("decode_errors", "late", "duplicates", "filtered")
                if ps.get(k)}
    if ps.get("readings") != readings or problems:
        ec.die(TOOL, f"edgeflow accepted {ps.get('readings')} of {readings} readings {problems}; "
                     f"see {summ}")

    f, lo, hi = np.full((len(series), H), np.nan), np.full((len(series), H), np.nan), \
        np.full((len(series), H), np.nan)
    warming = 0
    for i, s in enumerate(series):
        raw = last_with_horizon.get(s.sid)
        if raw is None:
            ec.die(TOOL, f"key {s.sid}: no output message carries a `horizon` array "
                         f"({messages.get(s.sid, 0)} messages); is horizon ≥ 2?")
        p = json.loads(raw)["payload"]
        want_ms = EPOCH_MS + last_hour[s.sid] * HOUR_MS
        if p.get("time") != want_ms or not math.isclose(ec.num(p.get("observed")),
                                                        float(s.train[-1]), rel_tol=1e-9):
            ec.die(TOOL, f"key {s.sid}: its last message with a horizon is for time "
                         f"{p.get('time')} (observed {p.get('observed')}), not for the last "
                         f"training reading (time {want_ms}, value {float(s.train[-1])!r}); the "
                         f"forecast would not start at the forecast origin. With "
                         f"`horizon_every`, make sure the last reading of every key carries a "
                         f"horizon.")
        steps = {int(st["step"]): st for st in p["horizon"]}
        missing = [h for h in range(1, H + 1) if h not in steps]
        if missing:
            ec.die(TOOL, f"key {s.sid}: the horizon lacks steps {missing[:5]}… (horizon ≥ {H} "
                         f"needed)")
        for h in range(1, H + 1):
            st = steps[h]
            f[i, h - 1] = ec.num(st.get("forecast"))
            lo[i, h - 1] = ec.num(st.get("lower"))
            hi[i, h - 1] = ec.num(st.get("upper"))
        warming += bool(p.get("warming_up"))
    if not np.all(np.isfinite(f)):
        bad = [series[i].sid for i in np.where(~np.isfinite(f).all(axis=1))[0]]
        ec.die(TOOL, f"edgeflow gave null/non-finite forecasts for {bad[:10]}")
    no_interval = int(np.sum(~(np.isfinite(lo) & np.isfinite(hi))))
    note = []
    if no_interval:
        note.append(f"{no_interval} of {f.size} steps without an interval (null lower/upper)")
    if warming:
        note.append(f"{warming} keys still `warming_up` at the origin")
    neg = f < 0
    if neg.any() and all(np.all(s.train >= 0) for s in series):
        note.append(f"{int(neg.any(axis=1).sum())} series with negative forecasts "
                    f"({int(neg.sum())} steps; sMAPE 200 at each of them) although every "
                    "training value is ≥ 0")
    fc = Forecast("edgeflow", f, lo, hi, seconds=rep.seconds, note="; ".join(note))
    info = {"readings": readings, "keys": ps.get("keys"), "seconds": rep.seconds,
            "output_lines": rep.lines, "one_step_mae": ps.get("mae"),
            "readings_per_s": readings / rep.seconds if rep.seconds > 0 else math.nan,
            "model": ec.describe_model(model_defaults(), params), "config": cfg.read_text()}
    return fc, info


# --------------------------------------------------------------------------------------------
# Scoring


def score(fc: Forecast, series: list[Series]) -> dict:
    y = np.array([s.test for s in series])
    scale = np.array([s.scale for s in series])[:, None]
    f = fc.f
    ae = np.abs(y - f)
    denom = np.abs(y) + np.abs(f)
    smape = np.where(denom > 0, 200.0 * ae / np.where(denom > 0, denom, 1.0), 0.0)
    mase = ae / scale
    out = {
        "smape": float(smape.mean()),
        "mase": float(mase.mean()),
        "smape_step": smape.mean(axis=0).tolist(),
        "mase_step": mase.mean(axis=0).tolist(),
        "smape_series": smape.mean(axis=1).tolist(),
        "mase_series": mase.mean(axis=1).tolist(),
        "msis": math.nan,
        "coverage95": math.nan,
    }
    if fc.lo is not None and np.all(np.isfinite(fc.lo)) and np.all(np.isfinite(fc.hi)):
        lo, hi = fc.lo, fc.hi
        penalty = (hi - lo) + (2 / ALPHA) * (lo - y) * (y < lo) + (2 / ALPHA) * (y - hi) * (y > hi)
        out["msis"] = float((penalty / scale).mean())
        out["coverage95"] = float(((y >= lo) & (y <= hi)).mean())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="also write the Markdown report here")
    ap.add_argument("--json", type=Path, help="write all metrics, with per-step arrays, here")
    ap.add_argument("--edgeflow", help="edgeflow binary (default: "
                                       + ", else ".join(str(p) for p in ec.DEFAULT_EDGEFLOW) + ")")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a [pipelines.model] parameter, value as TOML (repeatable)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--series", type=int, help="only the first N series (quick look)")
    ap.add_argument("--no-statsforecast", action="store_true", help="skip MSTL and AutoETS")
    ap.add_argument("--n-jobs", type=int, default=2, help="statsforecast processes (1 or 2)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/m4_eval"))
    args = ap.parse_args()
    if not 1 <= args.n_jobs <= 2:
        ap.error("--n-jobs must be 1 or 2")
    params = ec.parse_params(args.param, TOOL)
    horizon = ec.param_value(params, "horizon")
    if horizon is not None and (not isinstance(horizon, int) or horizon < H):
        ap.error(f"--param horizon={horizon}: the M4 scoring needs horizon ≥ {H}")
    exe = ec.find_edgeflow(args.edgeflow, TOOL)
    args.workdir.mkdir(parents=True, exist_ok=True)
    series = load(args.data, args.series)
    print(f"{TOOL}: {len(series)} series, edgeflow {exe}", file=sys.stderr)

    ef, info = edgeflow_forecast(exe, series, params, args.workdir)
    print(f"{TOOL}: edgeflow replay {info['readings']} readings in {info['seconds']:.1f} s",
          file=sys.stderr)
    snaive = seasonal_naive(series)
    methods = [ef, snaive, naive2(series)]
    sf_seconds = math.nan
    if not args.no_statsforecast:
        print(f"{TOOL}: statsforecast (n_jobs={args.n_jobs})…", file=sys.stderr)
        peers = statsforecast_peers(series, args.n_jobs)
        sf_seconds = peers[0].seconds
        methods += peers

    scores = {m.name: score(m, series) for m in methods}
    n2 = scores["Naive2"]
    for sc in scores.values():
        sc["owa"] = 0.5 * (sc["smape"] / n2["smape"] + sc["mase"] / n2["mase"])

    rows = []
    for m in methods:
        sc = scores[m.name]
        rows.append([m.name, ec.fmt(sc["smape"]), ec.fmt(sc["mase"]), ec.fmt(sc["owa"]),
                     ec.fmt(sc["msis"]),
                     ec.fmt(100 * sc["coverage95"], 1) if math.isfinite(sc["coverage95"])
                     else "n/a"]
                    + [ec.fmt(sc["mase_step"][h - 1], 2) for h in TABLE_STEPS])
    header = (["method", "sMAPE", "MASE", "OWA", "MSIS", "cov95 %"]
              + [f"MASE h={h}" for h in TABLE_STEPS])

    se, ss = scores[ef.name], scores[snaive.name]
    worse_mase = [h for h in range(2, H + 1) if se["mase_step"][h - 1] >= ss["mase_step"][h - 1]]
    worse_smape = [h for h in range(2, H + 1)
                   if se["smape_step"][h - 1] >= ss["smape_step"][h - 1]]
    smape_rows = [[m.name] + [ec.fmt(scores[m.name]["smape_step"][h - 1], 1)
                              for h in TABLE_STEPS] for m in methods]

    # The series that weigh most in edgeflow's sMAPE.
    per = np.array(se["smape_series"])
    order = np.argsort(-per)[:5]
    top = ", ".join(f"{series[i].sid} {per[i]:.0f} (snaive {ss['smape_series'][i]:.0f})"
                    for i in order)
    share = per[order].sum() / per.sum() if per.sum() > 0 else math.nan

    sf_version = ""
    try:
        import statsforecast
        sf_version = f", statsforecast {statsforecast.__version__}"
    except ImportError:
        pass
    lines = [
        f"M4 Hourly, odd half ({len(series)} series, {args.data}), horizon {H}, m = {M}. "
        f"{ec.environment(exe, f', numpy {np.__version__}{sf_version}')}.",
        "",
    ] + ec.md_table(header, rows) + [
        "",
        "sMAPE per step:",
        "",
    ] + ec.md_table(["method"] + [f"h={h}" for h in TABLE_STEPS], smape_rows) + [
        "",
        f"edgeflow model: `{info['model']}`.",
        f"edgeflow replay: {info['readings']} readings ({info['keys']} keys, "
        f"{info['output_lines']} output lines) in {info['seconds']:.2f} s wall = "
        f"{info['readings_per_s']:,.0f} readings/s (the whole process, with its stdout read "
        f"and filtered by this script); its prequential one-step MAE {ec.fmt(info['one_step_mae'])}.",
        f"Steps h = 2..{H} at which edgeflow is not below seasonal naive: MASE "
        f"{len(worse_mase)} of {H - 1}, sMAPE {len(worse_smape)} of {H - 1}.",
        f"edgeflow's 5 largest per-series sMAPEs: {top} — {100 * share:.0f} % of the sum over "
        f"{len(series)} series.",
    ]
    if not args.no_statsforecast:
        lines.append(f"statsforecast: the three models together took {sf_seconds:.1f} s "
                     f"(n_jobs={args.n_jobs}, first-call compilation included).")
    notes = [f"{m.name}: {m.note}" for m in methods if m.note]
    lines += [
        "Seasonal naive interval: ±1.96·σ·√⌈h/24⌉, σ the RMS of the in-sample residuals "
        "y_t − y_{t−24} (forecast::snaive's formula). Naive2 has no interval. MSIS and coverage "
        "are n/a for a method without intervals at every step.",
    ] + notes
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
        print(f"{TOOL}: wrote {args.out}", file=sys.stderr)
    if args.json:
        doc = {
            "series": [s.sid for s in series],
            "horizon": H,
            "edgeflow": info | {"binary": str(exe), "params": params},
            "statsforecast_seconds": sf_seconds,
            "methods": {name: sc for name, sc in scores.items()},
            "edgeflow_not_below_snaive_steps": {"mase": worse_mase, "smape": worse_smape},
        }
        args.json.write_text(json.dumps(ec.json_safe(doc), indent=1) + "\n")
        print(f"{TOOL}: wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
