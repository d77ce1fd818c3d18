#!/usr/bin/env python3
"""Replay the same seeded streams into edgeflow and River; compare prequential metrics and speed.

A developer tool, not part of `cargo test`. Setup and use:

    pip install river==0.26.1 numpy
    cargo build --release                      # done for you if target/release/edgeflow is missing
    python3 benches/river_compare.py --out /tmp/river.md

Options: --edgeflow PATH (binary to use), --n N (readings per stream, default 20000),
--seed S (default 42), --repeat R (timed runs per side, the fastest is reported, default 5),
--streams a,b (subset), --workdir DIR (generated inputs/configs, default /tmp/river_compare).

What it does, per stream (one key each, topic `bench/<stream>`):
  1. generates the stream (River `datasets.synth` generators, or numpy for the forecast series),
     all seeded, and writes it as `edgeflow replay` input (JSON lines) plus a TOML config whose
     `[pipelines.model]` sets only `kind`, `target` and `features` (plus `season` in the
     seasonal variant): edgeflow's defaults are what is compared;
  2. runs `edgeflow check` on the config, then `edgeflow replay --config --input --summary`
     R times (stdout to /dev/null) and reads the summary JSON;
  3. runs the River models test-then-train (predict, score, learn) on the same values, R times;
  4. prints a Markdown table (and writes it to --out).

Streams:
  friedman        synth.Friedman, 10 features, regression
  friedman_drift  synth.FriedmanDrift(drift_type="gra", position=(n/3, 2n/3)), global abrupt
                  drift that swaps the relevant features and comes back, regression
  hyperplane      synth.Hyperplane(n_features=10), 5 % label noise, classification
  agrawal         synth.Agrawal(classification_function=6): group A iff
                  0.67·(salary + commission) − 0.2·loan − 20000 > 0, a linear rule. All nine
                  attributes are fed as numbers; the categorical ones (elevel, car, zipcode) are
                  River's integer codes, used as plain numeric features on both sides (no one-hot).
  sea             synth.SEA(variant=0, noise=0.1), 3 features, classification
  seasonal        numpy: 10 + 0.001·t + 3·sin(2πt/24) + N(0, 0.5²), forecast (one series)
  ar2             numpy: y_t − 20 = 1.2·(y_{t−1} − 20) − 0.5·(y_{t−2} − 20) + N(0, 1), forecast

Metrics are matched: edgeflow's summary scores every reading it had a prediction for (it skips
a warm-up prefix: the first reading, or the forecaster's first readings), so River's metrics are
computed over the same last `scored` readings of the stream (River still learns from all of
them). Log loss uses the probability of the observed label clamped to [1e-15, 1 − 1e-15] on both
sides; the predicted label is `p(true) ≥ 0.5`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

RIVER_VERSION = "0.26.1"
PIP_HINT = f"pip install river=={RIVER_VERSION} numpy"
REPO = Path(__file__).resolve().parent.parent
LOG_LOSS_CLAMP = 1e-15
SEASON = 24

try:
    import numpy as np
    import river
    from river import linear_model, optim, preprocessing, time_series
    from river.datasets import synth
except ImportError as e:  # pragma: no cover - environment check
    sys.exit(f"river_compare: {e}.\nInstall the Python side with:\n    {PIP_HINT}")


# --------------------------------------------------------------------------------------------
# Streams


@dataclass
class Stream:
    name: str
    kind: str  # "regression" | "classification" | "forecast"
    features: list[str]
    xs: list[dict] | None  # None for forecast streams
    ys: list  # floats, or bools for classification
    description: str


def _rename(x: dict) -> dict:
    return {f"x{k}" if isinstance(k, int) else str(k): v for k, v in x.items()}


def _from_synth(name, kind, gen, n, description, label=False) -> Stream:
    xs, ys = [], []
    for x, y in gen.take(n):
        xs.append(_rename(x))
        ys.append(bool(y) if label else float(y))
    return Stream(name, kind, list(xs[0].keys()), xs, ys, description)


def make_streams(n: int, seed: int) -> list[Stream]:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=float)
    seasonal = 10.0 + 0.001 * t + 3.0 * np.sin(2 * np.pi * t / SEASON) + rng.normal(0, 0.5, n)
    ar = np.empty(n)
    e = rng.normal(0.0, 1.0, n)
    ar[0], ar[1] = e[0], e[1]
    for i in range(2, n):
        ar[i] = 1.2 * ar[i - 1] - 0.5 * ar[i - 2] + e[i]
    ar += 20.0
    third = n // 3
    return [
        _from_synth("friedman", "regression", synth.Friedman(seed=seed), n,
                    "synth.Friedman, 10 features"),
        _from_synth("friedman_drift", "regression",
                    synth.FriedmanDrift(drift_type="gra", position=(third, 2 * third), seed=seed),
                    n, f"synth.FriedmanDrift gra @{third},{2 * third}"),
        _from_synth("hyperplane", "classification", synth.Hyperplane(seed=seed, n_features=10),
                    n, "synth.Hyperplane, 10 features, 5% noise", label=True),
        _from_synth("agrawal", "classification",
                    synth.Agrawal(classification_function=6, seed=seed), n,
                    "synth.Agrawal fn 6, 9 numeric-coded features", label=True),
        _from_synth("sea", "classification", synth.SEA(variant=0, noise=0.1, seed=seed), n,
                    "synth.SEA variant 0, 10% noise", label=True),
        Stream("seasonal", "forecast", [], None, [float(v) for v in seasonal],
               f"numpy trend + season {SEASON} + noise"),
        Stream("ar2", "forecast", [], None, [float(v) for v in ar], "numpy AR(2) 1.2, -0.5"),
    ]


# --------------------------------------------------------------------------------------------
# edgeflow side


@dataclass
class Variant:
    """One edgeflow configuration of a stream."""

    name: str  # pipeline name
    label: str  # shown in the table
    extra: dict = field(default_factory=dict)  # extra [pipelines.model] keys
    optional: bool = False  # a rejected config is reported, not an error


def edgeflow_variants(s: Stream) -> list[Variant]:
    if s.kind == "forecast":
        v = [Variant(s.name, "forecast (defaults)")]
        if s.name == "seasonal":
            v.append(Variant(f"{s.name}_season", f"forecast season={SEASON}",
                             {"season": SEASON}, optional=True))
        return v
    return [Variant(s.name, f"{s.kind} (defaults)")]


def write_input(s: Stream, path: Path) -> None:
    topic = f"bench/{s.name}"
    with path.open("w") as f:
        for i, y in enumerate(s.ys):
            payload = dict(s.xs[i]) if s.xs is not None else {}
            payload["y"] = y
            f.write(json.dumps({"topic": topic, "payload": payload}, separators=(",", ":")))
            f.write("\n")


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(i) for i in v) + "]"
    raise TypeError(v)


def write_config(s: Stream, v: Variant, path: Path) -> None:
    names = s.features + ["y"]
    fields = ", ".join(f'{toml_value(n)} = {toml_value("/" + n)}' for n in names)
    lines = [
        f"# generated by benches/river_compare.py: stream {s.name}",
        "[[pipelines]]",
        f"name = {toml_value(v.name)}",
        f'topics = ["bench/{s.name}"]',
        'format = "json"',
        'key = "topic[1]"',
        f"fields = {{ {fields} }}",
        "",
        "[pipelines.model]",
        f"kind = {toml_value(s.kind)}",
        'target = "y"',
    ]
    if s.features:
        lines.append(f"features = {toml_value(s.features)}")
    lines += [f"{k} = {toml_value(val)}" for k, val in v.extra.items()]
    path.write_text("\n".join(lines) + "\n")


@dataclass
class EdgeflowResult:
    ok: bool
    error: str = ""
    summary: dict | None = None
    seconds: float = math.nan
    readings: int = 0

    def metric(self, name: str) -> float:
        if not self.summary or self.summary.get(name) is None:
            return math.nan
        return float(self.summary[name])


def find_edgeflow(arg: str | None) -> Path:
    if arg:
        p = Path(arg)
        if not (p.is_file() and os.access(p, os.X_OK)):
            sys.exit(f"river_compare: --edgeflow {arg} is not an executable file")
        return p
    p = REPO / "target" / "release" / "edgeflow"
    if p.is_file():
        return p
    if shutil.which("cargo") is None:
        sys.exit(f"river_compare: {p} is missing and cargo is not on PATH.\n"
                 f"Build it with:\n    cd {REPO} && cargo build --release\n"
                 "or pass --edgeflow PATH.")
    print(f"river_compare: {p} is missing; running `cargo build --release` in {REPO}",
          file=sys.stderr)
    r = subprocess.run(["cargo", "build", "--release"], cwd=REPO)
    if r.returncode != 0 or not p.is_file():
        sys.exit(f"river_compare: `cargo build --release` failed (exit {r.returncode}).\n"
                 f"Fix the build, or pass --edgeflow PATH.")
    return p


def run_edgeflow(exe: Path, cfg: Path, inp: Path, summary: Path, pipeline: str,
                 repeat: int) -> EdgeflowResult:
    chk = subprocess.run([str(exe), "check", "--config", str(cfg)], capture_output=True, text=True)
    if chk.returncode != 0:
        msg = (chk.stderr.strip() or chk.stdout.strip()).splitlines()
        return EdgeflowResult(False, f"config rejected: {msg[0] if msg else chk.returncode}")
    times = []
    for i in range(repeat + 1):  # the first run warms the page cache and is not timed
        summary.unlink(missing_ok=True)
        t0 = time.perf_counter()
        r = subprocess.run(
            [str(exe), "replay", "--config", str(cfg), "--input", str(inp),
             "--summary", str(summary)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if i > 0:
            times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            tail = r.stderr.strip().splitlines()[-3:]
            return EdgeflowResult(False, f"replay failed (exit {r.returncode}): "
                                         + " | ".join(tail))
    data = json.loads(summary.read_text())
    for p in data.get("pipelines", []):
        if p.get("name") == pipeline:
            res = EdgeflowResult(True, summary=p, seconds=min(times),
                                 readings=int(p.get("readings", 0)))
            if p.get("decode_errors"):
                res.error = f"decode errors {p['decode_errors']}"
            return res
    return EdgeflowResult(False, f"pipeline {pipeline} missing from {summary}")


def replay_startup(exe: Path, workdir: Path, repeat: int) -> float:
    """Fastest wall time of `edgeflow replay` on an empty input: the fixed cost in every
    edgeflow throughput figure."""
    cfg, inp = workdir / "empty.toml", workdir / "empty.jsonl"
    cfg.write_text('[[pipelines]]\nname = "empty"\ntopics = ["bench/empty"]\n'
                   'fields = { y = "/y" }\n[pipelines.model]\nkind = "forecast"\n'
                   'target = "y"\n')
    inp.write_text("")
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = subprocess.run([str(exe), "replay", "--config", str(cfg), "--input", str(inp)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            sys.exit(f"river_compare: `{exe} replay` fails on an empty input "
                     f"(exit {r.returncode}): {r.stderr.strip()}")
    return min(times)


# --------------------------------------------------------------------------------------------
# River side (and the naive baseline)


@dataclass
class RiverModel:
    label: str
    make: Callable[[], object] | None  # None: the naive last-value forecast (no River model)


def river_models(s: Stream) -> list[RiverModel]:
    if s.kind == "regression":
        return [
            RiverModel("StandardScaler | LinearRegression()",
                       lambda: preprocessing.StandardScaler() | linear_model.LinearRegression()),
            RiverModel("StandardScaler | LinearRegression(Adagrad())",
                       lambda: preprocessing.StandardScaler()
                       | linear_model.LinearRegression(optimizer=optim.AdaGrad())),
        ]
    if s.kind == "classification":
        return [RiverModel("StandardScaler | LogisticRegression()",
                           lambda: preprocessing.StandardScaler()
                           | linear_model.LogisticRegression())]
    models = [
        RiverModel("last value (naive)", None),
        RiverModel("SNARIMAX(p=2, d=0, q=0)", lambda: time_series.SNARIMAX(p=2, d=0, q=0)),
    ]
    if s.name == "seasonal":
        models += [
            RiverModel(f"SNARIMAX(2,0,0)(1,0,0)m={SEASON}",
                       lambda: time_series.SNARIMAX(p=2, d=0, q=0, m=SEASON, sp=1)),
            RiverModel(f"HoltWinters(α=.3, β=.1, γ=.6, m={SEASON})",
                       lambda: time_series.HoltWinters(alpha=0.3, beta=0.1, gamma=0.6,
                                                       seasonality=SEASON)),
        ]
    return models


def river_predictions(s: Stream, m: RiverModel) -> tuple[list[float], float]:
    """Test-then-train over the stream: (predictions, seconds of predict + learn).

    Predictions are p(true) for classification, NaN where the model has none yet."""
    nan = math.nan
    ys = s.ys
    preds: list[float] = []
    append = preds.append
    if m.make is None:  # naive: the forecast of y_t is y_{t-1}
        t0 = time.perf_counter()
        last = nan
        for y in ys:
            append(last)
            last = y
        return preds, time.perf_counter() - t0
    model = m.make()
    t0 = time.perf_counter()
    if s.kind == "regression":
        for x, y in zip(s.xs, ys):
            append(model.predict_one(x))
            model.learn_one(x, y)
    elif s.kind == "classification":
        for x, y in zip(s.xs, ys):
            append(model.predict_proba_one(x).get(True, 0.0))
            model.learn_one(x, y)
    else:
        for y in ys:
            try:
                append(model.forecast(horizon=1)[0])
            except (IndexError, ValueError, ZeroDivisionError):
                append(nan)  # HoltWinters before its first season
            model.learn_one(y)
    return preds, time.perf_counter() - t0


def metrics(s: Stream, preds: list[float], start: int) -> dict:
    """Metrics over readings [start, n) that have a finite prediction."""
    ys, ps = s.ys[start:], preds[start:]
    pairs = [(y, p) for y, p in zip(ys, ps) if p is not None and math.isfinite(p)]
    out = {"scored": len(pairs)}
    if not pairs:
        return out
    if s.kind == "classification":
        correct = sum((p >= 0.5) == y for y, p in pairs)
        ll = 0.0
        for y, p in pairs:
            q = p if y else 1.0 - p
            ll -= math.log(min(max(q, LOG_LOSS_CLAMP), 1.0 - LOG_LOSS_CLAMP))
        out["accuracy"] = correct / len(pairs)
        out["log_loss"] = ll / len(pairs)
    else:
        err = np.array([y - p for y, p in pairs])
        out["mae"] = float(np.mean(np.abs(err)))
        out["rmse"] = float(np.sqrt(np.mean(err * err)))
    return out


# --------------------------------------------------------------------------------------------
# Report


def fmt(v: float, digits: int = 4) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def fmt_rate(v: float) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:,.0f}"


def metric_pair(kind: str, d: dict) -> str:
    if kind == "classification":
        return f"{fmt(d.get('accuracy', math.nan))} / {fmt(d.get('log_loss', math.nan))}"
    return f"{fmt(d.get('mae', math.nan))} / {fmt(d.get('rmse', math.nan))}"


def environment(exe: Path) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    built = time.strftime("%Y-%m-%d %H:%M", time.localtime(exe.stat().st_mtime))
    rev = "unknown"
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return (f"CPU {cpu} ({os.cpu_count()} logical), Python {platform.python_version()}, "
            f"River {river.__version__}, numpy {np.__version__}, edgeflow `{exe}` "
            f"(built {built}, repo at {rev})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="also write the Markdown report here")
    ap.add_argument("--edgeflow", help="edgeflow binary (default: target/release/edgeflow, "
                                       "built with cargo build --release if missing)")
    ap.add_argument("--n", type=int, default=20_000, help="readings per stream (default 20000)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeat", type=int, default=5,
                    help="timed runs per side; the fastest is reported (default 5)")
    ap.add_argument("--streams", help="comma-separated subset of stream names")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/river_compare"))
    args = ap.parse_args()
    if args.n < 100 or args.repeat < 1:
        ap.error("--n must be ≥ 100 and --repeat ≥ 1")
    if river.__version__ != RIVER_VERSION:
        print(f"river_compare: warning: River {river.__version__}, the published numbers use "
              f"{RIVER_VERSION} ({PIP_HINT})", file=sys.stderr)

    exe = find_edgeflow(args.edgeflow)
    args.workdir.mkdir(parents=True, exist_ok=True)
    streams = make_streams(args.n, args.seed)
    if args.streams:
        wanted = set(args.streams.split(","))
        unknown = wanted - {s.name for s in streams}
        if unknown:
            ap.error(f"unknown streams {sorted(unknown)}; known: {[s.name for s in streams]}")
        streams = [s for s in streams if s.name in wanted]

    startup = replay_startup(exe, args.workdir, args.repeat)
    rows, notes, failures = [], [], 0
    for s in streams:
        print(f"river_compare: {s.name} ({s.kind}, {len(s.ys)} readings)", file=sys.stderr)
        inp = args.workdir / f"{s.name}.jsonl"
        write_input(s, inp)
        ef: list[tuple[Variant, EdgeflowResult]] = []
        for v in edgeflow_variants(s):
            cfg = args.workdir / f"{v.name}.toml"
            write_config(s, v, cfg)
            res = run_edgeflow(exe, cfg, inp, args.workdir / f"{v.name}.summary.json", v.name,
                               args.repeat)
            if not res.ok:
                notes.append(f"edgeflow `{v.label}` on {s.name}: {res.error} ({cfg})")
                if not v.optional:
                    failures += 1
            elif res.error:
                notes.append(f"edgeflow `{v.label}` on {s.name}: {res.error}")
            ef.append((v, res))

        for m in river_models(s):
            runs = [river_predictions(s, m) for _ in range(args.repeat)]
            preds = runs[0][0]
            secs = min(t for _, t in runs)
            river_rate = len(s.ys) / secs if m.make is not None and secs > 0 else math.nan
            # Pair seasonal River models with edgeflow's seasonal variant when there is one.
            seasonal_model = "m=" in m.label
            # A rejected (optional) seasonal variant falls back to the defaults.
            pick = ([r for r in ef if r[1].ok and bool(r[0].extra) == seasonal_model]
                    or [r for r in ef if r[1].ok] or ef[:1])
            v, res = pick[0]
            scored = int(res.summary.get("scored", 0)) if res.ok else 0
            start = len(s.ys) - scored if 0 < scored <= len(s.ys) else 0
            rv = metrics(s, preds, start)
            if res.ok:
                efm = {k: res.metric(k) for k in ("mae", "rmse", "accuracy", "log_loss")}
                ef_rate = res.readings / res.seconds if res.seconds > 0 else math.nan
                ef_metric = metric_pair(s.kind, efm)
            else:
                ef_rate, ef_metric, scored = math.nan, "n/a", 0
            ratio = (f"{ef_rate / river_rate:.1f}×"
                     if math.isfinite(ef_rate) and math.isfinite(river_rate) else "—")
            rows.append([s.name, str(len(s.ys)), v.label if res.ok else f"{v.label} (n/a)",
                         m.label, "MAE / RMSE" if s.kind != "classification"
                         else "accuracy / log loss",
                         ef_metric, metric_pair(s.kind, rv),
                         f"{scored if res.ok else 'n/a'} / {rv['scored']}",
                         fmt_rate(ef_rate), fmt_rate(river_rate), ratio])

    header = ["stream", "n", "edgeflow", "River", "metric", "edgeflow", "River",
              "scored ef / River", "edgeflow readings/s", "River updates/s",
              "speed ef/River"]
    lines = [
        f"Seed {args.seed}, {args.n} readings per stream, fastest of {args.repeat} timed runs "
        f"per side. {environment(exe)}. `edgeflow replay` of an empty input (process "
        f"start-up, config) takes {startup * 1000:.1f} ms.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    lines += [
        "",
        "edgeflow readings/s: readings ÷ wall time of the whole `edgeflow replay` process "
        "(start-up, JSON parsing, model, output rendering to /dev/null, summary). River "
        "updates/s: readings ÷ wall time of the predict + learn loop on pre-built dicts "
        "(no parsing, no output). River metrics are over the same last `scored` readings "
        "edgeflow scored; the naive forecast is plain Python, not River.",
    ]
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)
        print(f"river_compare: wrote {args.out}", file=sys.stderr)
    if failures:
        print(f"river_compare: {failures} edgeflow configuration(s) failed; see the notes "
              f"(is {exe} built from a tree whose config accepts these model kinds? "
              f"`cd {REPO} && cargo build --release`)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
