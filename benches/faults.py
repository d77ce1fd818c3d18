#!/usr/bin/env python3
"""Fault scripts of issue 16 against the daemon behind a loopback Mosquitto: kill -9 under load
and under key churn, SIGTERM with a backlog, SIGHUP storms, a retained oversize message and
hostile keys. Each scenario prints a Markdown table.

A developer tool, not part of `cargo test`. Setup and use:

    apt-get install -y mosquitto mosquitto-clients
    cargo build --release
    python3 benches/faults.py                       # every scenario, in the order below
    python3 benches/faults.py kill9-churn --keys 300000 --rate 10000
    python3 benches/faults.py --list

Scenarios (selected by name, several allowed):
  kill9-cycles      --cycles (25) cycles of kill -9 under load: --cycle-keys (2,000) keys at
                    --cycle-rate (3,000) readings/s, each cycle publishing for 2–4 s (seeded) and
                    then SIGKILLing the daemon; once with the defaults and once with
                    `max_resident_keys = 1000`. After each kill `edgeflow inspect` must open the
                    store; every state must decode; per key, the readings lost are the last
                    `updates` the daemon published minus the stored `updates` (and in seconds of
                    the key's own reading interval); a key restarted from 0 is one whose first
                    output after the restart does not continue from its stored `updates`.
  kill9-churn       --keys (600,000) new keys (one reading each) at --rate (25,000)/s, kill -9
                    halfway (by readings published): a key whose output the counter received
                    more than one `checkpoint_interval` (--checkpoint, 5 s) before the kill must
                    be in the store with `updates` ≥ 1. /metrics is sampled every second
                    (keys awaiting write-back, checkpoint lag) and reported.
  sigterm-backlog   the churn again, SIGTERM halfway (a backlog of dirty keys and queued
                    readings); then the same with the broker hung (SIGSTOPped, it reads nothing
                    more) and with the broker gone (killed, outputs pile up in the publish
                    queue): time from SIGTERM to exit against `shutdown_deadline` (--deadline,
                    5 s). (A hung broker with a full publish queue is the black-box test
                    tests/it/binary_sigkill.rs::sigterm_with_an_output_backlog_exits_within_the_shutdown_deadline.)
  reload-storm      --storms (3) storms of 50 SIGHUPs in 10 s under load (QoS 1, 2,000 keys at
                    3,000/s): no panic, no counter reset (edgeflow_readings_total never goes
                    down between scrapes), every reading published is a reading processed.
  retained-oversize one retained 1 MB message on a subscribed topic, then 3,000 readings: one
                    counted oversize drop, no reconnect, every reading processed.
  hostile-keys      keys with U+0001, TAB, LF, ESC, DEL, U+0085, U+FFFE, `+`, `#`, and one of
                    70,000 bytes, between good readings: one `bad_key` drop each, no reconnect,
                    every good reading processed.

The broker, the child processes, the publisher (mosquitto_pub -l fed at a bounded rate) and the
output counter are those of benches/daemon_load.py (imported, see there). Options: --edgeflow
PATH, --workdir DIR, --keep, --out FILE (also write the tables), --seed S.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import daemon_load as dl  # noqa: E402
import eval_common as ec  # noqa: E402

TOOL = "faults"
T0_MS = dl.T0_MS
UPDATES_RE = re.compile(rb'"updates":(\d+)')
KEY_RE = re.compile(rb'"key":"((?:[^"\\]|\\.)*)"')


def log(msg: str) -> None:
    print(f"{TOOL}: {msg}", file=sys.stderr, flush=True)


def die(msg: str) -> None:
    ec.die(TOOL, msg)


# --------------------------------------------------------------------------------------------
# Helpers on top of daemon_load


class Outputs:
    """mosquitto_sub on the outputs printing `topic payload`: per key the last `updates` seen,
    the first one seen since `mark()`, and when the key's first output arrived."""

    def __init__(self, env: "Env", name: str, qos: int = 0) -> None:
        self.proc = env.children.start(
            [env.tools.sub, "-h", "127.0.0.1", "-p", str(env.broker.port), "-q", str(qos),
             "-i", f"{TOOL}-{name}-{os.getpid()}", "-F", "%p", "-t", dl.OUT_FILTER,
             "-t", dl.PING_TOPIC],
            name, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.env = env
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.rest = b""
        self.n = 0
        self.pings = 0
        self.last: dict[str, int] = {}
        self.first_since_mark: dict[str, int] = {}
        self.first_seen: dict[str, float] = {}

    def mark(self) -> None:
        self.first_since_mark = {}

    def poll(self, timeout: float = 0.0) -> None:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return
        now = time.monotonic()
        while True:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            data = self.rest + chunk
            cut = data.rfind(b"\n") + 1
            whole, self.rest = data[:cut], data[cut:]
            for line in whole.splitlines():
                k, u = KEY_RE.search(line), UPDATES_RE.search(line)
                if not k:
                    self.pings += 1
                    continue
                key, updates = k.group(1).decode(errors="replace"), int(u.group(1)) if u else 0
                self.n += 1
                self.last[key] = max(updates, self.last.get(key, 0))
                self.first_since_mark.setdefault(key, updates)
                self.first_seen.setdefault(key, now)

    def wait_subscribed(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pings == 0:
            if time.monotonic() > deadline:
                die("the output counter did not subscribe")
            subprocess.run([self.env.tools.pub, "-h", "127.0.0.1", "-p", str(self.env.broker.port),
                            "-t", dl.PING_TOPIC, "-m", "x"], capture_output=True)
            self.poll(0.2)

    def stop(self) -> None:
        self.env.children.stop(self.proc, grace=2.0)


@dataclass
class Env:
    children: dl.Children
    tools: dl.Tools
    broker: dl.Broker
    exe: Path
    workdir: Path
    seed: int
    seq: int = 0


class Daemon:
    """`edgeflow run` on a config of daemon_load's shape (one forecast pipeline on bench/in)."""

    def __init__(self, env: Env, rdir: Path, sets: dict, qos: int = 0, name: str = "d") -> None:
        env.seq += 1
        self.env, self.rdir = env, rdir
        self.http_port = dl.free_port()
        self.cfg = rdir / "edgeflow.toml"
        self.cfg.write_text(dl.daemon_config(env.broker.port, self.http_port, rdir / "data",
                                             f"{TOOL}-{os.getpid()}-{name}", qos, 0, sets))
        self.log = rdir / f"edgeflow-{env.seq}.log"
        self.logf = self.log.open("wb")
        env_vars = dict(os.environ)
        env_vars.setdefault("RUST_LOG", "info")
        self.t_start = time.monotonic()
        self.proc = env.children.start([str(env.exe), "run", "--config", str(self.cfg)],
                                       "edgeflow", stdout=self.logf, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env_vars)
        deadline = time.monotonic() + 60
        while dl.READY_MARK not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None:
                die(f"edgeflow exited at start ({self.proc.returncode}):\n{dl.tail(self.log)}")
            if time.monotonic() > deadline:
                die(f"edgeflow not ready after 60 s:\n{dl.tail(self.log)}")
            time.sleep(0.02)

    def metrics(self) -> list[dict]:
        code, text = dl.http_get(self.http_port, "/metrics", timeout=5.0)
        return dl.parse_metrics(text) if code == 200 else []

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        self.env.children.stop(self.proc, grace=0.0, sig=signal.SIGKILL)
        self.logf.close()

    def sigterm(self, limit: float = 120.0) -> tuple[float, int | None]:
        """SIGTERM; (seconds to exit, exit code), SIGKILL after `limit`."""
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        secs = time.monotonic() - t
        self.env.children.stop(self.proc)
        self.logf.close()
        return secs, self.proc.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def inspect(env: Env, cfg: Path) -> tuple[bool, dict[str, int], int, str]:
    """`edgeflow inspect`: (store opened, updates per key, corrupt states, error text)."""
    r = subprocess.run([str(env.exe), "inspect", "--config", str(cfg)], capture_output=True)
    if r.returncode != 0:
        return False, {}, 0, r.stderr.decode(errors="replace")[-500:]
    states, corrupt = {}, 0
    for line in r.stdout.splitlines():
        v = json.loads(line)
        if "error" in v:
            corrupt += 1
        else:
            states[v["key"]] = int(v.get("updates") or 0)
    return True, states, corrupt, ""


def reading_line(key: str, step: int, rng: random.Random) -> str:
    temp = 20.0 + 3.0 * ((step % 1440) / 1440.0) + rng.gauss(0.0, 0.3)
    return f'{{"sensor":"{key}","ts":{T0_MS + step * 60_000},"temp":{temp:.2f}}}\n'


def write_lines(path: Path, lines: list[str]) -> list[tuple[Path, int]]:
    """The lines as one file and as daemon_load's parts (at most PART_LINES each, for QoS 1)."""
    path.write_text("".join(lines))
    parts = []
    for i in range(0, len(lines), dl.PART_LINES):
        p = path.with_suffix(f".{i // dl.PART_LINES:03d}")
        chunk = lines[i:i + dl.PART_LINES]
        p.write_text("".join(chunk))
        parts.append((p, len(chunk)))
    return parts


def publisher(env: Env, lines: list[str], rate: float, qos: int, name: str) -> dl.Publisher:
    env.seq += 1
    path = env.workdir / f"{name}-{env.seq}.jsonl"
    parts = write_lines(path, lines)
    argv = [env.tools.pub, "-h", "127.0.0.1", "-p", str(env.broker.port), "-q", str(qos), "-l",
            "-t", dl.IN_TOPIC]
    return dl.Publisher(env.children, argv, [(path, len(lines))] if qos == 0 else parts, rate,
                        env.workdir / f"{name}-{env.seq}.stderr", name)


def pump(pub: dl.Publisher, outs: Outputs | None, until, tick=None) -> None:
    """Feed the publisher and read outputs until `until()` is true."""
    while not until():
        pub.step()
        wfd = pub.write_fd()
        if outs is not None:
            outs.poll(0.005)
        elif wfd is not None:
            select.select([], [wfd], [], 0.005)
        else:
            time.sleep(0.005)
        if tick:
            tick()


def m(samples: list[dict], name: str, **labels) -> float:
    v = dl.metric(samples, name, **labels)
    return v if v is not None else 0.0


def hist_max_bound(samples: list[dict], name: str) -> str:
    """The smallest bucket bound holding every observation of a histogram ("-" if none)."""
    count = m(samples, name + "_count")
    if count == 0:
        return "-"
    for s in samples:
        if s["name"] == name + "_bucket" and s["value"] >= count:
            le = s["labels"].get("le")
            if le is not None:
                return f"≤ {le} s"
    return "?"


def table(header: list[str], rows: list[list]) -> list[str]:
    return ec.md_table(header, [[str(c) for c in r] for r in rows])


# --------------------------------------------------------------------------------------------
# Scenarios


def kill9_cycles(env: Env, args) -> list[str]:
    rows = []
    for label, sets in (("defaults", {}),
                        ("max_resident_keys = 1000", {"runtime": {"max_resident_keys": "1000"}})):
        sets = {**sets, "store": {"checkpoint_interval": f'"{args.cycle_checkpoint}"'}}
        rdir = env.workdir / f"cycles-{len(rows)}"
        rdir.mkdir()
        rng = random.Random(env.seed)
        keys = [f"s{i:05d}" for i in range(args.cycle_keys)]
        step = 0
        stored: dict[str, int] = {}
        opened, corrupt_total, restarted_from_0, max_lost, lost_sum, lost_n = 0, 0, 0, 0, 0, 0
        discontinuous = 0
        lags: set[str] = set()
        per_key_rate = args.cycle_rate / args.cycle_keys  # readings per second per key
        outs = Outputs(env, f"cycles-out-{len(rows)}")
        outs.wait_subscribed()
        for cycle in range(args.cycles):
            d = Daemon(env, rdir, sets, name=f"cycles{len(rows)}")
            outs.mark()
            seconds = rng.uniform(2.0, 4.0)
            steps = int(seconds * per_key_rate) + 1
            lines = [reading_line(k, s, rng) for s in range(step, step + steps) for k in keys]
            step += steps
            pub = publisher(env, lines, args.cycle_rate, 0, f"cycle{cycle}")
            t_kill = pub.t0 + seconds
            pump(pub, outs, lambda: time.perf_counter() >= t_kill or pub.done)
            outs.poll(0.0)
            lag = hist_max_bound(d.metrics(), "edgeflow_checkpoint_lag_seconds")
            d.kill9()
            pub.stop()
            outs.poll(0.3)
            lags.add(lag)
            # The restart continued every key from its stored state?
            for k, first in outs.first_since_mark.items():
                before = stored.get(k, 0)
                if before > 0 and first == 1:
                    restarted_from_0 += 1
                elif first != before + 1:
                    discontinuous += 1
            ok, states, corrupt, err = inspect(env, d.cfg)
            if not ok:
                log(f"cycle {cycle}: store did not open: {err}")
                continue
            opened += 1
            corrupt_total += corrupt
            for k, published in outs.last.items():
                lost = max(0, published - states.get(k, 0))
                max_lost = max(max_lost, lost)
                lost_sum += lost
                lost_n += 1
            stored = states
            log(f"  {label}: cycle {cycle + 1}/{args.cycles}: {len(states):,} states, "
                f"max lost {max_lost}")
        outs.stop()
        interval = ec_seconds(args.cycle_checkpoint)
        rows.append([label, f"{args.cycles}", f"{opened}/{args.cycles}", corrupt_total,
                     f"{max_lost} ({max_lost / per_key_rate:.2f} s)",
                     f"{lost_sum / max(lost_n, 1):.2f}",
                     f"{interval * per_key_rate:.1f} ({interval:g} s)",
                     ", ".join(sorted(lags)), restarted_from_0, discontinuous])
    return [f"**kill9-cycles**: {args.cycle_keys:,} keys at {args.cycle_rate:,.0f} readings/s "
            f"(QoS 0), kill -9 after 2–4 s, {args.cycles} cycles per row, "
            f"`checkpoint_interval = \"{args.cycle_checkpoint}\"`; lost = last `updates` "
            f"published − stored `updates`, per key and cycle", ""] + table(
        ["config", "cycles", "store opened", "corrupt states", "max readings lost per key",
         "mean lost per key·cycle", "one checkpoint (readings)",
         "checkpoint lag before the kills", "keys restarted from 0",
         "keys not continuing from the stored state"], rows)


def ec_seconds(text: str) -> float:
    units = {"ms": 1e-3, "s": 1.0, "m": 60.0}
    mm = re.fullmatch(r"([0-9.]+)(ms|s|m)", text)
    if not mm:
        die(f"duration {text!r}: expected e.g. 500ms, 5s, 1m")
    return float(mm.group(1)) * units[mm.group(2)]


@dataclass
class Churn:
    published: int = 0
    samples: list = field(default_factory=list)  # (t, dirty, unflushed, age, lag bound)
    last_metrics: list = field(default_factory=list)


def churn_run(env: Env, args, rdir: Path, sets: dict, stop_at: float, outs: Outputs,
              d: Daemon) -> Churn:
    """Publish --keys new keys at --rate until `stop_at` of them are due; sample /metrics."""
    rng = random.Random(env.seed)
    width = len(str(args.keys))
    lines = [reading_line(f"c{i:0{width}d}", 0, rng) for i in range(args.keys)]
    pub = publisher(env, lines, args.rate, 0, "churn")
    churn = Churn()
    t_stop = pub.t0 + stop_at * args.keys / args.rate
    next_sample = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        if now >= next_sample[0]:
            next_sample[0] = now + 1.0
            s = d.metrics()
            if s:
                churn.last_metrics = s
                churn.samples.append((now - pub.t0, m(s, "edgeflow_keys_dirty"),
                                      m(s, "edgeflow_store_unflushed_states"),
                                      m(s, "edgeflow_checkpoint_age_seconds"),
                                      m(s, "edgeflow_keys_active")))

    pump(pub, outs, lambda: time.perf_counter() >= t_stop or pub.done, tick)
    churn.published = min(args.keys, int((time.perf_counter() - pub.t0) * args.rate))
    env.pub_to_stop = pub
    return churn


def churn_sets(args) -> dict:
    return {"store": {"checkpoint_interval": f'"{args.checkpoint}"'},
            "runtime": {"shutdown_deadline": f'"{args.deadline}"'}}


def kill9_churn(env: Env, args) -> list[str]:
    rdir = env.workdir / "churn-kill"
    rdir.mkdir()
    outs = Outputs(env, "churn-out")
    outs.wait_subscribed()
    d = Daemon(env, rdir, churn_sets(args), name="churn")
    churn = churn_run(env, args, rdir, churn_sets(args), 0.5, outs, d)
    outs.poll(0.0)
    t_kill = time.monotonic()
    d.kill9()
    env.pub_to_stop.stop()
    outs.poll(0.2)
    ok, states, corrupt, err = inspect(env, d.cfg)
    interval = ec_seconds(args.checkpoint)
    old = [k for k, t in outs.first_seen.items() if t < t_kill - interval]
    missing = [k for k in old if states.get(k, 0) < 1]
    recent = [k for k, t in outs.first_seen.items() if t >= t_kill - interval]
    rows = [[f"{churn.published:,}", f"{len(outs.first_seen):,}", "yes" if ok else f"no: {err}",
             corrupt, f"{len(old):,}", f"**{len(missing):,}**", f"{len(recent):,}",
             f"{sum(1 for k in recent if k in states):,}", f"{len(states):,}"]]
    lines = [f"**kill9-churn**: {args.keys:,} new keys (one reading each) at "
             f"{args.rate:,.0f}/s (QoS 0), kill -9 after {churn.published:,} were published; "
             f"`checkpoint_interval = \"{args.checkpoint}\"`, other settings default", ""]
    lines += table(["published", "outputs seen (keys learned)", "store opened", "corrupt",
                    f"learned > {args.checkpoint} before the kill", "of those missing",
                    f"learned in the last {args.checkpoint}", "of those stored anyway",
                    "states in the store"], rows)
    lines += ["", "The write-back gauges sampled during the run (every ~5 s):", ""]
    lines += table(["t (s)", "keys_active", "keys_dirty", "store_unflushed_states",
                    "checkpoint_age_seconds"],
                   [[f"{t:.0f}", f"{a:,.0f}", f"{dirty:,.0f}", f"{unfl:,.0f}", f"{age:.1f}"]
                    for t, dirty, unfl, age, a in churn.samples[::5]])
    s = churn.last_metrics
    lines += ["", f"Last scrape before the kill: checkpoints {m(s, 'edgeflow_checkpoints_total'):.0f}, "
              f"checkpoint lag {hist_max_bound(s, 'edgeflow_checkpoint_lag_seconds')} "
              f"(every checkpoint), duration "
              f"{hist_max_bound(s, 'edgeflow_checkpoint_duration_seconds')}, holding ingest "
              f"{m(s, 'edgeflow_checkpoints_holding_ingest_total'):.0f}; readings "
              f"{m(s, 'edgeflow_readings_total', pipeline=dl.PIPELINE):,.0f}, "
              f"mqtt received {m(s, 'edgeflow_mqtt_received_total'):,.0f}."]
    outs.stop()
    return lines


def sigterm_backlog(env: Env, args) -> list[str]:
    rows = []
    deadline = ec_seconds(args.deadline)
    for case in ("key churn", "churn + broker hung (SIGSTOPped)",
                 "churn + broker gone (killed)"):
        rdir = env.workdir / f"sigterm-{len(rows)}"
        rdir.mkdir()
        outs = Outputs(env, f"sigterm-out-{len(rows)}")
        outs.wait_subscribed()
        d = Daemon(env, rdir, churn_sets(args), name=f"sigterm{len(rows)}")
        churn_run(env, args, rdir, churn_sets(args), 0.5, outs, d)
        if "SIGSTOP" in case:
            env.broker.proc.send_signal(signal.SIGSTOP)
            time.sleep(1.0)
        elif "killed" in case:
            env.broker.proc.kill()
            env.broker.proc.wait()
            time.sleep(0.5)
        s = d.metrics()  # the HTTP listener does not need the broker
        secs, code = d.sigterm()
        env.pub_to_stop.stop()
        if "SIGSTOP" in case:
            env.broker.proc.send_signal(signal.SIGCONT)
        text = d.log_text()
        how = ("backstop" if "exiting now" in text else
               "checkpoint timed out" if "deadline of" in text else "graceful")
        rows.append([case, f"{m(s, 'edgeflow_keys_dirty'):,.0f}",
                     f"{m(s, 'edgeflow_store_unflushed_states'):,.0f}",
                     f"{m(s, 'edgeflow_mqtt_publish_queue_depth'):,.0f}",
                     f"{secs:.2f} s", f"{deadline:g} s",
                     "yes" if secs <= deadline + 0.5 else "**no**", code, how])
        outs.stop()
        if "killed" in case:
            env.broker = dl.Broker(env.children, env.tools, env.workdir, 2_000_000, 0, 60)
    return [f"**sigterm-backlog**: SIGTERM halfway through {args.keys:,} new keys at "
            f"{args.rate:,.0f}/s; `shutdown_deadline = \"{args.deadline}\"`; within = exit ≤ "
            "deadline + 0.5 s (signal delivery and reaping)", ""] + table(
        ["case", "keys_dirty at SIGTERM", "unflushed states", "publish queue", "SIGTERM → exit",
         "deadline", "within", "exit code", "path (log)"], rows)


def reload_storm(env: Env, args) -> list[str]:
    rdir = env.workdir / "reload"
    rdir.mkdir()
    rng = random.Random(env.seed)
    keys = [f"s{i:05d}" for i in range(args.cycle_keys)]
    seconds = args.storms * 10 + 5
    steps = int(seconds * args.cycle_rate / len(keys))
    lines = [reading_line(k, s, rng) for s in range(steps) for k in keys]
    d = Daemon(env, rdir, {}, qos=1, name="reload")
    pub = publisher(env, lines, args.cycle_rate, 1, "reload")
    sent, resets, last_readings = 0, 0, 0.0
    storm_times = [pub.t0 + 2.5 + 11.0 * i for i in range(args.storms)]
    next_scrape = [0.0]

    def tick() -> None:
        nonlocal sent, resets, last_readings
        now = time.perf_counter()
        # 50 per storm, one every 0.2 s on a schedule (caught up when the loop was late).
        for i, t in enumerate(storm_times):
            due = min(50, int((now - t) / 0.2) + 1) if now >= t else 0
            while sent < 50 * i + due:
                d.proc.send_signal(signal.SIGHUP)
                sent += 1
        if now >= next_scrape[0]:
            next_scrape[0] = now + 0.5
            s = d.metrics()
            r = m(s, "edgeflow_readings_total", pipeline=dl.PIPELINE) if s else last_readings
            if r < last_readings:
                resets += 1
            last_readings = max(r, last_readings)

    pump(pub, None, lambda: pub.done, tick)
    pub.stop()
    deadline = time.monotonic() + 30
    s = d.metrics()
    while m(s, "edgeflow_readings_total", pipeline=dl.PIPELINE) < len(lines) \
            and time.monotonic() < deadline:
        time.sleep(0.5)
        s = d.metrics()
    readings = m(s, "edgeflow_readings_total", pipeline=dl.PIPELINE)
    secs, code = d.sigterm()
    text = d.log_text()
    reloads = text.count("reloaded:")
    panics = text.count("panicked")
    rows = [[sent, reloads, panics, resets, f"{len(lines):,}", f"{readings:,.0f}",
             f"{len(lines) - readings:,.0f}", code]]
    return [f"**reload-storm**: {args.storms} storms of 10 s (a SIGHUP every 0.2 s) under "
            f"{args.cycle_keys:,} keys at {args.cycle_rate:,.0f}/s, QoS 1; the config file "
            "unchanged (each reload re-reads, re-checks and re-applies it)", ""] + table(
        ["SIGHUPs sent", "reloads logged", "panics", "counter resets", "readings published",
         "readings processed", "lost", "exit code (SIGTERM)"], rows)


def small_load(env: Env, d: Daemon, n: int, qos: int, before=None) -> tuple[int, list[dict]]:
    rng = random.Random(env.seed)
    lines = [reading_line(f"g{i % 100:03d}", i // 100, rng) for i in range(n)]
    pub = publisher(env, lines, 3000, qos, "good")
    if before:
        before()
    pump(pub, None, lambda: pub.done)
    pub.stop()
    deadline = time.monotonic() + 20
    s = d.metrics()
    while m(s, "edgeflow_readings_total", pipeline=dl.PIPELINE) < n and time.monotonic() < deadline:
        time.sleep(0.2)
        s = d.metrics()
    return n, s


def retained_oversize(env: Env, args) -> list[str]:
    rdir = env.workdir / "retained"
    rdir.mkdir()
    big = rdir / "big.json"
    body = '{"sensor":"big","ts":%d,"temp":20.0,"pad":"%s"}' % (T0_MS, "x" * (1 << 20))
    big.write_text(body)
    r = subprocess.run([env.tools.pub, "-h", "127.0.0.1", "-p", str(env.broker.port), "-q", "1",
                        "-r", "-t", dl.IN_TOPIC, "-f", str(big)], capture_output=True, text=True)
    if r.returncode != 0:
        die(f"cannot publish the retained message: {r.stderr}")
    d = Daemon(env, rdir, {}, qos=1, name="retained")
    n, s = small_load(env, d, 3000, 1)
    d.sigterm()
    # Clear the retained message for the next scenarios.
    subprocess.run([env.tools.pub, "-h", "127.0.0.1", "-p", str(env.broker.port), "-r", "-n",
                    "-t", dl.IN_TOPIC], capture_output=True)
    rows = [[f"{len(body):,} B", f"{m(s, 'edgeflow_mqtt_oversize_dropped_total'):.0f}",
             f"{m(s, 'edgeflow_mqtt_reconnects_total'):.0f}", f"{n:,}",
             f"{m(s, 'edgeflow_readings_total', pipeline=dl.PIPELINE):,.0f}"]]
    return ["**retained-oversize**: one retained message on the subscribed topic before the "
            "daemon starts (default `max_packet_bytes`, 256 KiB), then good readings at QoS 1",
            ""] + table(["retained message", "oversize drops", "reconnects", "good readings sent",
                         "good readings processed"], rows)


def hostile_keys(env: Env, args) -> list[str]:
    rdir = env.workdir / "hostile"
    rdir.mkdir()
    hostile = {"U+0001": "a\\u0001b", "TAB": "a\\tb", "LF": "a\\nb", "ESC": "a\\u001bb",
               "DEL": "a\\u007fb", "U+0085": "a\\u0085b", "U+FFFE": "a\\ufffeb",
               "+": "a+b", "#": "a#b", "70,000 bytes": "k" * 70_000}
    sets = {"pipeline": {"max_payload_bytes": "1048576"}, "mqtt": {"max_packet_bytes": "1048576"}}
    d = Daemon(env, rdir, sets, qos=1, name="hostile")

    def send_hostile() -> None:
        for key in hostile.values():
            payload = f'{{"sensor":"{key}","ts":{T0_MS},"temp":20.0}}'
            r = subprocess.run([env.tools.pub, "-h", "127.0.0.1", "-p", str(env.broker.port),
                                "-q", "1", "-t", dl.IN_TOPIC, "-m", payload],
                               capture_output=True, text=True)
            if r.returncode != 0:
                die(f"mosquitto_pub failed: {r.stderr}")

    n, s = small_load(env, d, 3000, 1, before=send_hostile)
    d.sigterm()
    bad = m(s, "edgeflow_decode_errors_total", pipeline=dl.PIPELINE, reason="bad_key")
    rows = [[", ".join(hostile), len(hostile), f"{bad:.0f}",
             f"{m(s, 'edgeflow_mqtt_reconnects_total'):.0f}",
             f"{m(s, 'edgeflow_mqtt_publish_dropped_total'):.0f}", f"{n:,}",
             f"{m(s, 'edgeflow_readings_total', pipeline=dl.PIPELINE):,.0f}"]]
    return ["**hostile-keys**: one reading per hostile key (from the payload's `sensor` field) "
            "among good readings at QoS 1; `max_payload_bytes` and `max_packet_bytes` raised "
            "to 1 MiB so the long key reaches the key check", ""] + table(
        ["keys", "hostile readings", "bad_key drops", "reconnects", "outputs dropped",
         "good readings sent", "good readings processed"], rows)


SCENARIOS = {
    "kill9-cycles": kill9_cycles,
    "kill9-churn": kill9_churn,
    "sigterm-backlog": sigterm_backlog,
    "reload-storm": reload_storm,
    "retained-oversize": retained_oversize,
    "hostile-keys": hostile_keys,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--edgeflow", help="the binary (default as daemon_load.py)")
    ap.add_argument("--keys", type=int, default=600_000, help="churn: new keys (600,000)")
    ap.add_argument("--rate", type=float, default=25_000, help="churn: readings/s (25,000)")
    ap.add_argument("--checkpoint", default="5s", help="churn: checkpoint_interval (5s)")
    ap.add_argument("--deadline", default="5s", help="sigterm-backlog: shutdown_deadline (5s)")
    ap.add_argument("--cycles", type=int, default=25, help="kill9-cycles: cycles per row (25)")
    ap.add_argument("--cycle-keys", type=int, default=2000, help="kill9-cycles/reload-storm keys")
    ap.add_argument("--cycle-rate", type=float, default=3000, help="kill9-cycles/reload-storm rate")
    ap.add_argument("--cycle-checkpoint", default="1s",
                    help="kill9-cycles: checkpoint_interval (1s)")
    ap.add_argument("--storms", type=int, default=3, help="reload-storm: storms of 10 s (3)")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", type=Path, help="also write the tables here")
    args = ap.parse_args()
    if args.list:
        print("\n".join(SCENARIOS))
        return 0
    names = args.scenarios or list(SCENARIOS)
    for n in names:
        if n not in SCENARIOS:
            ap.error(f"unknown scenario {n!r}; one of: {', '.join(SCENARIOS)}")
    exe = dl.find_binary(args.edgeflow, "--edgeflow")
    tools = dl.find_tools()
    signal.signal(signal.SIGTERM, dl._terminate)
    own = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="faults_")) if own else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    children = dl.Children()
    out: list[str] = []
    try:
        broker = dl.Broker(children, tools, workdir, 2_000_000, 0, 60)
        env = Env(children, tools, broker, exe, workdir, args.seed)
        for n in names:
            log(f"{n}…")
            t = time.monotonic()
            lines = SCENARIOS[n](env, args)
            lines.append(f"\n({n}: {time.monotonic() - t:.0f} s)")
            text = "\n".join(lines)
            print(text + "\n", flush=True)
            out.append(text)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        children.stop_all()
        if own and not args.keep:
            import shutil
            shutil.rmtree(workdir, ignore_errors=True)
    if args.out:
        args.out.write_text("\n\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
