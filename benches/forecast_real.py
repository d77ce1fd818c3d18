#!/usr/bin/env python3
"""River's bundled real time series through `edgeflow replay`: one-step errors vs peers in the same run.

A developer tool, not part of `cargo test`. Setup and use:

    pip install river==0.26.1 numpy
    cargo build --release              # or use the shared build (see --edgeflow)
    python3 benches/forecast_real.py --out /tmp/forecast_real.md

Options: --edgeflow PATH (default /work/main/target/release/edgeflow, else target/release/edgeflow
of this checkout), --param key=value (repeatable; appended to `[pipelines.model]` of every
dataset, the value is TOML: `--param lags=8 --param 'season="1d"'`; a plain word is taken as a
string; `season` is set per dataset by the script unless a --param overrides it),
--datasets a,b (subset of waterflow, airline, chicks), --workdir DIR (default
/tmp/forecast_real).

Datasets (all bundled with River, no download), one key per series:
  waterflow  river.datasets.WaterFlow: 1268 hourly readings of a water-flow sensor (2022-03-20 to
             05-16, with a few gaps). Event time: the real timestamps. edgeflow runs twice:
             `season = 24` (readings) and `season = "1d"` (a profile by time of day, which uses
             the timestamps, so gaps do not shift it). Scored: readings with 0-based index ≥ 48.
  airline    river.datasets.AirlinePassengers: 144 monthly totals 1949–1960, `season = 12`.
             Event time: the month starts moved 72 years later (1949 → 2021; a multiple of 4
             years keeps the calendar) because epoch ms before 1970 would be negative.
             Scored: readings with 0-based index ≥ 24.
  chicks     river.datasets.ChickWeights: the weights of 50 chicks on days 0, 2, …, 21 (≤ 12
             readings each), one key per chick, in the dataset's order (interleaved by day).
             Event time: 2020-01-01 + day. No season. Scored: every reading that has a forecast
             from every method (HoltWinters has its first forecast for a chick's 3rd reading, so
             this is each chick's readings from the 3rd on).

Methods, all test-then-train, scored on exactly the same readings (the table says how many):
  - edgeflow `kind = "forecast"` with the settings above plus the --params. The forecast of
    reading j of a key is the `forecast` field of the key's message j − 1 (made after learning
    reading j − 1); the script checks that it agrees with message j's `error` field
    (observed − the forecast made before it); its 95 % interval is that message's
    `lower`/`upper`;
  - last value (naive): reading j − 1 of the key;
  - River time_series.HoltWinters, one model per key: waterflow alpha=0.3, beta=0.1, gamma=0.6,
    seasonality=24, additive; airline alpha=0.3, beta=0.1, gamma=0.6, seasonality=12,
    multiplicative (River's docs example); chicks alpha=0.8, beta=0.2 (level and trend only).
    River initialises from the first max(2, seasonality) values, so it forecasts from then on.
    Note: River 0.26.1 initialises an ADDITIVE season with the ratios y/level (≈ 1) instead of
    differences, a bias that the season smoothing (gamma) then decays; the waterflow figure
    includes it, as any user of River would get.
Metrics: MAE of the one-step forecasts over the scored readings; for edgeflow also the share of
scored readings inside its 95 % interval, over the readings whose forecasting message had both
bounds and was not `warming_up` (the others are counted separately).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import eval_common as ec

TOOL = "forecast_real"
RIVER_VERSION = "0.26.1"
PIP_HINT = f"pip install river=={RIVER_VERSION} numpy"
DAY_MS = 86_400_000
EPOCH_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
AIRLINE_SHIFT_YEARS = 72

try:
    import numpy as np
    import river
    from river import datasets, time_series
except ImportError as e:  # pragma: no cover - environment check
    sys.exit(f"{TOOL}: {e}.\nInstall the Python side with:\n    {PIP_HINT}")


# --------------------------------------------------------------------------------------------
# Datasets


@dataclass
class Reading:
    key: str
    ms: int  # event time
    y: float


@dataclass
class Dataset:
    name: str
    description: str
    readings: list[Reading]
    variants: list[tuple[str, dict]]  # (label, script-set model settings) per edgeflow run
    score_from: int  # first scored 0-based index within a key's series
    hw_label: str
    hw_make: Callable[[], object]
    rule: str  # which readings are scored, in words
    by_key: dict[str, list[int]] = field(default_factory=dict)  # key → its reading indices

    def __post_init__(self):
        for i, r in enumerate(self.readings):
            self.by_key.setdefault(r.key, []).append(i)


def _ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(round(dt.timestamp() * 1000))


def waterflow() -> Dataset:
    rs = [Reading("flow", _ms(x["Time"]), float(y)) for x, y in datasets.WaterFlow()]
    return Dataset(
        "waterflow", "river.datasets.WaterFlow (hourly, real timestamps)", rs,
        [("season = 24", {"season": 24}), ('season = "1d"', {"season": "1d"})], 48,
        "River HoltWinters(α=0.3, β=0.1, γ=0.6, m=24, additive)",
        lambda: time_series.HoltWinters(alpha=0.3, beta=0.1, gamma=0.6, seasonality=24),
        "index ≥ 48")


def airline() -> Dataset:
    rs = []
    for x, y in datasets.AirlinePassengers():
        m = x["month"]
        shifted = m.replace(year=m.year + AIRLINE_SHIFT_YEARS)
        rs.append(Reading("passengers", _ms(shifted), float(y)))
    return Dataset(
        "airline", "river.datasets.AirlinePassengers (monthly)", rs,
        [("season = 12", {"season": 12})], 24,
        "River HoltWinters(α=0.3, β=0.1, γ=0.6, m=12, multiplicative)",
        lambda: time_series.HoltWinters(alpha=0.3, beta=0.1, gamma=0.6, seasonality=12,
                                        multiplicative=True),
        "index ≥ 24")


def chicks() -> Dataset:
    rs = [Reading(f"chick{x['chick']}", EPOCH_MS + int(x["time"]) * DAY_MS, float(y))
          for x, y in datasets.ChickWeights()]
    return Dataset(
        "chicks", "river.datasets.ChickWeights (one key per chick)", rs,
        [("no season", {})], 1,
        "River HoltWinters(α=0.8, β=0.2) per chick",
        lambda: time_series.HoltWinters(alpha=0.8, beta=0.2),
        "every reading with a forecast from every method")


DATASETS = {"waterflow": waterflow, "airline": airline, "chicks": chicks}


# --------------------------------------------------------------------------------------------
# Methods: each gives, per reading, the one-step forecast made before it (NaN when none)


def last_value(ds: Dataset) -> np.ndarray:
    f = np.full(len(ds.readings), np.nan)
    for idx in ds.by_key.values():
        for a, b in zip(idx, idx[1:]):
            f[b] = ds.readings[a].y
    return f


def holt_winters(ds: Dataset) -> np.ndarray:
    f = np.full(len(ds.readings), np.nan)
    models: dict[str, object] = {}
    for i, r in enumerate(ds.readings):
        m = models.get(r.key)
        if m is None:
            m = models[r.key] = ds.hw_make()
        if getattr(m, "_initialized", True):
            f[i] = m.forecast(horizon=1)[0]
        m.learn_one(r.y)
    return f


@dataclass
class EdgeflowRun:
    label: str
    model: str  # the [pipelines.model] settings, one line
    forecast: np.ndarray  # per reading: the forecast of the key's previous message
    lower: np.ndarray
    upper: np.ndarray
    warming: np.ndarray  # bool: the forecasting message was warming_up
    error_checked: int = 0  # readings whose `error` field was compared
    error_mismatch: int = 0
    error_max_diff: float = 0.0
    summary_mae: float = math.nan
    summary_scored: int = 0


def write_input(ds: Dataset, path: Path) -> None:
    with path.open("w") as f:
        for r in ds.readings:
            f.write(json.dumps({"topic": f"real/{ds.name}/{r.key}",
                                "payload": {"ts": r.ms, "y": r.y}}, separators=(",", ":")))
            f.write("\n")


def write_config(ds: Dataset, pipeline: str, settings: dict, params: dict[str, str],
                 path: Path) -> str:
    defaults = {"kind": "forecast", "target": "y"} | settings
    lines = [
        f"# generated by benches/forecast_real.py: {ds.name}",
        "[[pipelines]]",
        f"name = {ec.toml_value(pipeline)}",
        f'topics = ["real/{ds.name}/+"]',
        'format = "json"',
        'key = "topic[2]"',
        'time = "/ts"',
        'time_unit = "ms"',
        'fields = { y = "/y" }',
        "",
    ] + ec.model_section(defaults, params)
    path.write_text("\n".join(lines) + "\n")
    return ec.describe_model(defaults, params)


def run_edgeflow(exe: Path, ds: Dataset, label: str, settings: dict, params: dict[str, str],
                 workdir: Path, tag: str) -> EdgeflowRun:
    inp = workdir / f"{ds.name}.jsonl"
    cfg = workdir / f"{tag}.toml"
    pipeline = tag.replace(".", "_")
    model = write_config(ds, pipeline, settings, params, cfg)
    ec.check_config(exe, cfg, TOOL)

    payloads: dict[str, list[dict]] = {}

    def on_line(line: bytes) -> None:
        p = json.loads(line)["payload"]
        payloads.setdefault(str(p["key"]), []).append(p)

    rep = ec.run_replay(exe, cfg, inp, workdir / f"{tag}.summary.json", on_line, TOOL)
    ps = ec.pipeline_summary(rep, pipeline, TOOL)
    problems = {k: ps.get(k) for k in ("decode_errors", "late", "duplicates", "filtered")
                if ps.get(k)}
    if ps.get("readings") != len(ds.readings) or problems:
        ec.die(TOOL, f"{ds.name}: edgeflow accepted {ps.get('readings')} of {len(ds.readings)} "
                     f"readings {problems}")
    n = len(ds.readings)
    run = EdgeflowRun(label, model, np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan),
                      np.zeros(n, dtype=bool), summary_mae=ec.num(ps.get("mae")),
                      summary_scored=int(ps.get("scored") or 0))
    for key, idx in ds.by_key.items():
        msgs = payloads.get(key, [])
        if len(msgs) != len(idx):
            ec.die(TOOL, f"{ds.name}: key {key} has {len(idx)} readings but {len(msgs)} output "
                         "messages (one per reading expected)")
        for j, (i, p) in enumerate(zip(idx, msgs)):
            r = ds.readings[i]
            if p.get("time") != r.ms or not math.isclose(ec.num(p.get("observed")), r.y,
                                                        rel_tol=1e-12, abs_tol=1e-12):
                ec.die(TOOL, f"{ds.name}: key {key} message {j} is for time {p.get('time')} / "
                             f"value {p.get('observed')}, expected {r.ms} / {r.y}")
            if j == 0:
                continue
            prev = msgs[j - 1]
            fc = ec.num(prev.get("forecast"))
            run.forecast[i] = fc
            run.lower[i] = ec.num(prev.get("lower"))
            run.upper[i] = ec.num(prev.get("upper"))
            run.warming[i] = bool(prev.get("warming_up"))
            err = p.get("error")
            if math.isfinite(fc) and err is not None:
                run.error_checked += 1
                diff = abs((r.y - fc) - float(err))
                run.error_max_diff = max(run.error_max_diff, diff)
                if diff > 1e-9 * max(1.0, abs(r.y)):
                    run.error_mismatch += 1
            elif math.isfinite(fc) != (err is not None):
                run.error_mismatch += 1  # a forecast without an error, or the reverse
    return run


# --------------------------------------------------------------------------------------------
# Report


def evaluate(ds: Dataset, runs: list[EdgeflowRun]) -> tuple[list[list[str]], list[str]]:
    lv, hw = last_value(ds), holt_winters(ds)
    pos = np.zeros(len(ds.readings), dtype=int)  # index of each reading within its key
    for idx in ds.by_key.values():
        pos[idx] = np.arange(len(idx))
    y = np.array([r.y for r in ds.readings])
    methods = [(f"edgeflow {r.label}", r.forecast) for r in runs] + [
        ("last value (naive)", lv), (ds.hw_label, hw)]
    mask = pos >= ds.score_from
    for _, f in methods:
        mask &= np.isfinite(f)
    scored = int(mask.sum())
    rows, notes = [], []
    for name, f in methods:
        mae = float(np.mean(np.abs(y[mask] - f[mask]))) if scored else math.nan
        cov, detail = "—", ""
        run = next((r for r in runs if f is r.forecast), None)
        if run is not None:
            lo, hi, warm = run.lower[mask], run.upper[mask], run.warming[mask]
            has = np.isfinite(lo) & np.isfinite(hi)
            ok = has & ~warm
            inside = (y[mask] >= lo) & (y[mask] <= hi)
            cov = (f"{100 * inside[ok].mean():.1f} % of {int(ok.sum())}" if ok.any() else "n/a")
            detail = (f"{int(warm.sum())} warming_up, {int((~has).sum())} null bounds")
            notes.append(
                f"{ds.name} edgeflow {run.label} (`{run.model}`): `forecast` of the previous "
                f"message vs this message's `error`: {run.error_checked} compared, "
                f"{run.error_mismatch} disagree (max |diff| {run.error_max_diff:.2g}); "
                f"edgeflow's own summary MAE {ec.fmt(run.summary_mae, 4)} over the "
                f"{run.summary_scored} readings it scored.")
            own = np.isfinite(f) & (pos >= ds.score_from) & np.isfinite(lv)
            if int(own.sum()) != scored:
                notes.append(
                    f"{ds.name}: over the {int(own.sum())} readings edgeflow {run.label} has a "
                    f"forecast for (a different set from the table's), edgeflow "
                    f"{ec.fmt(float(np.mean(np.abs(y[own] - f[own]))), 4)}, last value "
                    f"{ec.fmt(float(np.mean(np.abs(y[own] - lv[own]))), 4)}.")
        avail = int((np.isfinite(f) & (pos >= ds.score_from)).sum())
        rows.append([ds.name, ds.rule, name, ec.fmt(mae, 4), f"{scored} (of {avail})", cov,
                     detail])
    return rows, notes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="also write the Markdown report here")
    ap.add_argument("--edgeflow", help="edgeflow binary (default: "
                                       + ", else ".join(str(p) for p in ec.DEFAULT_EDGEFLOW) + ")")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a [pipelines.model] parameter, value as TOML (repeatable)")
    ap.add_argument("--datasets", help="comma-separated subset of " + ",".join(DATASETS))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/forecast_real"))
    args = ap.parse_args()
    params = ec.parse_params(args.param, TOOL)
    names = list(DATASETS)
    if args.datasets:
        names = args.datasets.split(",")
        unknown = [n for n in names if n not in DATASETS]
        if unknown:
            ap.error(f"unknown datasets {unknown}; known: {list(DATASETS)}")
    if river.__version__ != RIVER_VERSION:
        print(f"{TOOL}: warning: River {river.__version__}; these figures assume "
              f"{RIVER_VERSION} ({PIP_HINT})", file=sys.stderr)
    exe = ec.find_edgeflow(args.edgeflow, TOOL)
    args.workdir.mkdir(parents=True, exist_ok=True)

    rows, notes, mismatches = [], [], 0
    for name in names:
        ds = DATASETS[name]()
        write_input(ds, args.workdir / f"{ds.name}.jsonl")
        runs, seen = [], set()
        for k, (label, settings) in enumerate(ds.variants):
            # A --param season makes the per-dataset variants one and the same run.
            effective = tuple(ec.model_section({"kind": "forecast"} | settings, params))
            if effective in seen:
                continue
            seen.add(effective)
            if "season" in params:
                label = f"season = {params['season']} (--param)"
            print(f"{TOOL}: {ds.name} ({len(ds.readings)} readings, {len(ds.by_key)} keys), "
                  f"edgeflow {label}", file=sys.stderr)
            runs.append(run_edgeflow(exe, ds, label, settings, params, args.workdir,
                                     f"{ds.name}{k}"))
        mismatches += sum(r.error_mismatch for r in runs)
        r, n = evaluate(ds, runs)
        rows += r
        notes += n

    header = ["dataset", "scored readings", "method", "1-step MAE", "scored (of available)",
              "95 % coverage (edgeflow)", "no interval"]
    lines = [
        f"River real datasets, one-step forecasts, test-then-train. River {river.__version__}, "
        f"numpy {np.__version__}. {ec.environment(exe)}.",
        "",
    ] + ec.md_table(header, rows) + [
        "",
        "Every method is scored on the same readings: those of the dataset's rule for which "
        "every method has a forecast (`available`: the readings of the rule a method has a "
        "forecast for). Coverage: share of the scored readings inside the interval of the "
        "message that forecast them, over those with both bounds and not `warming_up`.",
        "",
    ] + [f"- {n}" for n in notes]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
        print(f"{TOOL}: wrote {args.out}", file=sys.stderr)
    if mismatches:
        print(f"{TOOL}: {mismatches} readings where edgeflow's `error` is not observed minus the "
              "previous message's `forecast` (see the notes)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
