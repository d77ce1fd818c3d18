#!/usr/bin/env python3
"""A broker outage at QoS 1: readings lost, outputs lost, and how soon outputs resume.

A developer tool, not part of `cargo test` (issue 16 point 6). Setup and use:

    apt-get install -y mosquitto mosquitto-clients
    cargo build --release
    python3 benches/fault_outage.py                       # 20 s outage, persistent session
    python3 benches/fault_outage.py --clean-session       # the same with clean_session = true
    python3 benches/fault_outage.py --outage 2 --rate 5000 --out /tmp/outage.md

It reuses the broker, counter, publisher and input helpers of benches/daemon_load.py:

  1. Mosquitto with `persistence true` (written at SIGTERM, no autosave) on a free port, its
     default `max_inflight_messages` (20); the daemon at `subscribe_qos = 1`, `output_qos = 1`,
     with the default `clean_session = "auto"` (persistent) unless --clean-session; a
     `mosquitto_sub -c` (its own persistent session) counts the outputs.
  2. Phase A: mosquitto_pub publishes --before seconds of readings at --rate readings/s over
     --keys keys (QoS 1; it exits once the broker has acknowledged every one).
  3. The broker is stopped with SIGTERM right after, kept down for --outage seconds, and started
     again on the same port and persistence file.
  4. Phase B: at once, --after seconds more readings at the same rate. The daemon is not
     reconnected yet (its back-off), so these wait in its session at the broker.
  5. Counted until every reading has an output or nothing arrived for --stall seconds:
     readings lost = readings the broker acknowledged − readings the daemon decoded
     (`edgeflow_readings_total`); outputs lost = readings − outputs received; the time from
     the broker accepting connections again to the first output after it; the daemon's
     reconnects and drop counters.

Exit code 0 when no reading and no output was lost, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import daemon_load as dl  # noqa: E402  (the shared helpers)


def split(inp: dl.Input, start: int, end: int, workdir: Path, name: str) -> list[tuple[Path, int]]:
    """Lines start..end of the input, as parts of at most dl.PART_LINES lines."""
    lines = inp.path.read_text().splitlines(keepends=True)[start:end]
    parts = []
    for i in range(0, len(lines), dl.PART_LINES):
        chunk = lines[i:i + dl.PART_LINES]
        path = workdir / f"{name}-{len(parts):03d}.jsonl"
        path.write_text("".join(chunk))
        parts.append((path, len(chunk)))
    return parts


def publish(children, tools, broker, counter, parts, rate, workdir, label,
            watch=lambda: None) -> None:
    """Publish `parts` at `rate` readings/s with QoS 1 until mosquitto_pub has exited (every
    reading acknowledged by the broker), counting outputs (and calling `watch`) meanwhile."""
    argv = [tools.pub, "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-l",
            "-t", dl.IN_TOPIC]
    pub = dl.Publisher(children, argv, parts, rate, workdir / f"pub-{label}.stderr", label)
    while not pub.done:
        pub.step()
        wfd = pub.write_fd()
        counter.poll(0.01, [wfd] if wfd is not None else [])
        broker.check_alive()
        watch()
    pub.stop()


def metrics(http_port: int, required: bool = True) -> list[dict]:
    """The daemon's /metrics samples; [] when not `required` and it does not answer (yet)."""
    status, text = dl.http_get(http_port, "/metrics")
    if status != 200:
        if not required:
            return []
        dl.die(f"/metrics answered {status}: {text}")
    return dl.parse_metrics(text)


def total(samples: list[dict], name: str) -> float:
    return sum(s["value"] for s in samples if s["name"] == name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edgeflow", type=Path,
                    default=Path(__file__).resolve().parent.parent / "target/release/edgeflow")
    ap.add_argument("--rate", type=float, default=2000.0, help="readings/s (default 2000)")
    ap.add_argument("--keys", type=int, default=2000, help="distinct keys (default 2000)")
    ap.add_argument("--before", type=float, default=10.0, help="s of readings before the stop")
    ap.add_argument("--outage", type=float, default=20.0, help="s the broker is down")
    ap.add_argument("--after", type=float, default=10.0, help="s of readings after the return")
    ap.add_argument("--stall", type=float, default=15.0,
                    help="end the count after this many s without an output")
    ap.add_argument("--clean-session", action="store_true",
                    help="clean_session = true (expect readings lost)")
    ap.add_argument("--out", type=Path, help="write the Markdown result here too")
    args = ap.parse_args()
    if not args.edgeflow.exists():
        dl.die(f"{args.edgeflow} not found: cargo build --release, or --edgeflow PATH")

    children = dl.Children()
    tools = dl.find_tools()
    with tempfile.TemporaryDirectory(prefix="fault_outage-") as tmp:
        workdir = Path(tmp)
        try:
            return run(args, children, tools, workdir)
        finally:
            children.stop_all()


def run(args, children, tools, workdir: Path) -> int:
    n_before = int(args.rate * args.before)
    n = n_before + int(args.rate * args.after)
    inp = dl.write_readings(workdir, n, args.keys)
    (workdir / "mosquitto-data").mkdir()
    broker = dl.Broker(children, tools, workdir, queued=max(1_000_000, 2 * n), inflight=20,
                       timeout=10.0, persistence_dir=workdir / "mosquitto-data")
    http_port = dl.free_port()
    sets = {"mqtt": {"reconnect_min": '"500ms"', "reconnect_max": '"30s"'}}
    if args.clean_session:
        sets["mqtt"]["clean_session"] = "true"
    config = workdir / "edgeflow.toml"
    config.write_text(dl.daemon_config(broker.port, http_port, workdir / "data",
                                       "fault-outage", 1, 1, sets))
    counter = dl.Counter(children, tools, broker, dl.OUT_FILTER, 1, workdir, "outputs",
                         persistent=True)
    counter.wait_subscribed(10.0)
    log = (workdir / "edgeflow.log").open("wb")
    daemon = children.start([str(args.edgeflow), "run", "--config", str(config)], "edgeflow",
                            stdout=log, stderr=log, stdin=dl.subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        if total(metrics(http_port, required=False), "edgeflow_mqtt_connected") == 1:
            break
        if daemon.poll() is not None or time.monotonic() > deadline:
            dl.die(f"the daemon did not connect:\n{dl.tail(workdir / 'edgeflow.log')}")
        time.sleep(0.1)

    dl.log(f"phase A: {n_before:,} readings at {args.rate:,.0f}/s over {args.keys:,} keys")
    publish(children, tools, broker, counter, split(inp, 0, n_before, workdir, "a"), args.rate,
            workdir, "a")
    before_stop = counter.n
    broker.stop()
    dl.log(f"broker stopped (SIGTERM) with {before_stop:,} outputs counted; down for "
           f"{args.outage:.0f} s")
    t_down = time.perf_counter()
    while time.perf_counter() - t_down < args.outage:
        time.sleep(0.05)  # the outage itself: nothing to count, the broker is down
    broker.start()
    t_return = time.perf_counter()
    at_return = counter.n
    dl.log(f"broker back; phase B: {n - n_before:,} readings")
    first_after: float | None = None

    def watch_first() -> None:
        nonlocal first_after
        if first_after is None and counter.n > at_return and counter.t_last:
            first_after = counter.t_last - t_return

    publish(children, tools, broker, counter, split(inp, n_before, n, workdir, "b"), args.rate,
            workdir, "b", watch_first)
    last = time.perf_counter()
    seen = counter.n
    while counter.n < n and time.perf_counter() - last < args.stall:
        counter.poll(0.05)
        watch_first()
        if counter.n != seen:
            seen, last = counter.n, time.perf_counter()
    samples = metrics(http_port)
    readings = total(samples, "edgeflow_readings_total")
    reconnects = total(samples, "edgeflow_mqtt_reconnects_total")
    drops = dl.drop_counters(samples)
    children.stop(daemon, grace=30.0)
    log.close()

    readings_lost = n - int(readings)
    outputs_lost = max(0, n - counter.n)
    session = "clean_session = true" if args.clean_session else "persistent (default)"
    drops_text = ", ".join(f"{d['reason']} {d['value']:.0f}" for d in drops) or "none"
    first = f"{first_after:.2f} s" if first_after is not None else "none"
    shown = list(sys.argv[1:])
    if "--out" in shown:  # where the report goes is not part of the measurement
        i = shown.index("--out")
        del shown[i:i + 2]
    command = " ".join(["python3 benches/fault_outage.py", *shown])
    text = f"""| session | readings published (acked by the broker) | readings decoded | readings lost | outputs received | outputs lost | broker return → first output | reconnects | drops |
|---|---|---|---|---|---|---|---|---|
| {session} | {n:,} | {readings:,.0f} | {readings_lost:,} | {counter.n:,} | {outputs_lost:,} | {first} | {reconnects:.0f} | {drops_text} |

`{command.strip()}`: {args.rate:,.0f} readings/s over {args.keys:,} keys, {args.before:.0f} s before
and {args.after:.0f} s after a {args.outage:.0f} s outage (mosquitto {tools.version}, SIGTERM
and restart on the same port and persistence file). Outputs counted by a persistent
`mosquitto_sub -c`; more outputs than readings would be QoS 1 duplicates.
"""
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if readings_lost == 0 and outputs_lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
