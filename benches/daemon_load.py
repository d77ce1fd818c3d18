#!/usr/bin/env python3
"""Load benchmark of the daemon behind Mosquitto: readings/s, CPU, RSS and drops, against the broker's own relay rate in the same run.

A developer tool, not part of `cargo test`. Setup and use:

    apt-get install -y mosquitto mosquitto-clients     # the broker, mosquitto_pub, mosquitto_sub
    cargo build --release                              # or use any build (see --edgeflow)
    python3 benches/daemon_load.py --out /tmp/load.md --json /tmp/load.json
    python3 benches/daemon_load.py --n 20000 --keys 1000 --qos 0          # a quick look
    python3 benches/daemon_load.py --compare target/release/edgeflow --repeat 3   # A/B
    python3 benches/daemon_load.py --keys-run 1000000 --qos 1             # many distinct keys

Options: --edgeflow PATH (default /tmp/edgeflow_base, else /work/main/target/release/edgeflow,
else target/release/edgeflow of this checkout), --compare PATH2 (a second binary, B; the daemon
runs alternate: A, B in the first round, B, A in the second, and so on — `--order ab` for A, B
in every round; alternating cancels a drift of the machine and the position effect of being the
run right after the relay phase), --repeat R (rounds, default 1), --n N (readings,
default 200,000), --keys K (distinct keys, default 10,000), --keys-run [M] (many-keys mode: M
readings, each with its own key; M defaults to 1,000,000), --qos 0,1 (the QoS levels under test,
default both), --output-qos same|0|1 (the daemon's `output_qos` and the output counter's
subscription; default the QoS under test), --rate R (publish at most R readings/s; default 0 =
as fast as mosquitto_pub goes), --no-relay (skip the relay phase: no ratio; for long runs at a
--rate), --pub-inflight M (mosquitto_pub -M at QoS 1; default its own, 20), --broker-inflight M
(Mosquitto's max_inflight_messages; default 0 = no limit),
--set SECTION.KEY=VALUE (repeatable: a setting of the generated daemon config, the value is
TOML; SECTION is mqtt, store, runtime, http, pipeline or model, e.g. `--set
runtime.max_resident_keys=20000`), --timeout S (per phase, default 120), --stall S (a run ends
when no message arrived for S seconds, default 5; 30 with --keys-run), --rss-limit-mb MB (the many-keys bound checked
in the report, default 128), --workdir DIR (default a fresh temp dir, removed at the end unless
--keep), --out FILE (Markdown report, also printed), --json FILE (raw numbers).

Setup, all on 127.0.0.1 and this machine (the broker, the clients and the daemon share its
cores, so every figure is a property of the whole set-up; speeds are compared as ratios within
one run, never across runs):
  - one `mosquitto` for the whole run, on a free port, with a temp config: `allow_anonymous
    true`, `persistence false`, `max_queued_messages` max(1,000,000, 2N), `max_queued_bytes 0`,
    `max_inflight_messages 0` (no limit), so the broker itself does not drop or throttle; it
    runs as root when started as root (`user root`) so that it dies with this script;
  - the input: N JSON lines `{"sensor":"s0042","ts":<epoch ms>,"temp":21.37}` over K keys,
    round robin (reading i is key i mod K; each key's readings are one minute apart in event
    time, a daily cycle plus noise; key names `s` + at least 4 digits), written once to a temp
    file, ALL ON ONE TOPIC `bench/in` (mosquitto_pub -l publishes every line of its stdin on
    one topic; the key is in the payload, `key = "/sensor"`);
  - counters: `mosquitto_sub -F %t` prints one line (the topic) per message; this script counts
    the lines as they arrive and stamps the time of each chunk it reads. Each counter is
    known to be subscribed before a phase starts: it also subscribes `benchping`, and a probe
    is published there until the counter has printed it. After the N-th message it counts for
    0.3 s more: what arrives then is a duplicate (QoS 1 redelivery), reported;
  - every child process (broker, clients, daemons) is killed when the script ends, also on
    Ctrl-C/SIGTERM (they run in their own session and are killed by the kernel
    (PR_SET_PDEATHSIG) even if this script is SIGKILLed); the temp dir is removed.
Protocol, for each round (--repeat) and each QoS q of --qos:
  1. relay: a counter subscribes `bench/in` at QoS q; `mosquitto_pub -l -t bench/in -q q <
     file`; rate = messages received / (first publish → last message received). One hop
     (publisher → broker → subscriber): what the broker and the clients can move here.
     mosquitto_pub is fed through a pipe, started PUB_HEAD_START (0.5 s) before its first line
     (its -l mode takes 100–200 ms to connect: not publishing time); at QoS 1 the file is
     published in parts of 65,000 lines by one mosquitto_pub after the other (the next one
     connects while the current one finishes): mosquitto_pub 2.0 -l stops early after 65,535
     lines at QoS 1 (16-bit message ids; the class Publisher says how).
  2. daemon, for each binary (A, then B with --compare): a fresh data dir, a config (external
     broker, `subscribe_qos = q`, one `kind = "forecast"` pipeline on `bench/in`, `target =
     "temp"`, key `/sensor`, time `/ts` in ms, default model parameters and runtime settings
     besides --set; `edgeflow check` passes it before anything starts), `edgeflow run`, ready
     once its log says `ready:` (subscriptions acknowledged), a counter on `edgeflow/#` at QoS
     output-qos; then the same file published the same way. The run ends when N outputs
     arrived, or none for --stall seconds, or at --timeout (both reported in the table and as a
     note saying how many had arrived; the script goes on). Measured: readings/s = outputs /
     (first publish → last output); its ratio to the relay rate of the same round and QoS (two
     hops through the broker plus the daemon, against one hop); the daemon's CPU per reading
     (utime + stime from /proc/PID/stat over the run, from just before the first publish to
     the end, checkpoints included, / N; clock ticks of os.sysconf('SC_CLK_TCK')), Mosquitto's
     CPU per reading the same way; peak RSS (VmHWM, since start) and RSS at the end (VmRSS) from
     /proc/PID/status; outputs received; lost = N − outputs; /metrics at the end: every drop
     counter that is not zero (`edgeflow_dropped_total` by reason — mailbox_full, filtered,
     late, duplicate —, `edgeflow_decode_errors_total` by reason, `edgeflow_mqtt_ingest_dropped_total`
     (the ingest queue was full), `edgeflow_mqtt_publish_dropped_total` (outputs not published)),
     and where the rest went: `broker→daemon` = N − `edgeflow_mqtt_received_total`,
     `daemon→counter` = `edgeflow_mqtt_published_total` − outputs received; `edgeflow_keys_active`
     and `edgeflow_keys_passivated_total`; every second of the run the outputs so far, VmRSS
     and CPU (in --json). Then SIGTERM (graceful stop; SIGKILL after 60 s, reported), the data
     dir removed.
Mosquitto's warnings ("Outgoing messages are being dropped …") are counted per phase.
A broker, mosquitto_pub/_sub or edgeflow that is missing, a config that `edgeflow check`
rejects (its errors are shown), a daemon that exits or is not ready within --timeout (the end
of its log is shown) stop the script with a message.
The many-keys mode (--keys-run M) is the same protocol with N = K = M, every reading a new key:
with the default `max_resident_keys` (100,000) the daemon passivates (writes back and stops) the
least recently used keys as it goes; the report says whether the peak RSS stayed within
--rss-limit-mb, the peak RSS above the start per resident key (everything the process holds
counted: the store's cache, queues), and RSS over the run. With --compare, the summary gives per binary and QoS the medians over the
rounds and B/A of the medians (speed B/A > 1: B is faster; CPU and RSS B/A < 1: B uses less).
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import math
import os
import random
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import eval_common as ec

TOOL = "daemon_load"
DEFAULT_EDGEFLOW = (Path("/tmp/edgeflow_base"),) + ec.DEFAULT_EDGEFLOW
IN_TOPIC = "bench/in"
OUT_FILTER = "edgeflow/#"
PING_TOPIC = "benchping"
PIPELINE = "bench"
READY_MARK = "ready:"
T0_MS = 1_764_064_800_000  # 2025-11-25 10:00 UTC: event time of every key's first reading
STEP_MS = 60_000  # a key's readings are one minute apart
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Config sections --set may address → the TOML table they live in.
SECTIONS = {"mqtt": "[mqtt]", "store": "[store]", "runtime": "[runtime]", "http": "[http]",
            "pipeline": "[[pipelines]]", "model": "[pipelines.model]"}


def die(msg: str) -> None:
    ec.die(TOOL, msg)


def log(msg: str) -> None:
    print(f"{TOOL}: {msg}", file=sys.stderr, flush=True)


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


# --------------------------------------------------------------------------------------------
# Child processes: every one started here is killed at exit


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # in the child, before exec
    # SIGKILL the child if this script dies without cleaning up (kill -9). Popen is only ever
    # called from the main thread, whose exit is what the kernel watches.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Children:
    def __init__(self) -> None:
        self.procs: list[tuple[subprocess.Popen, str]] = []

    def start(self, argv: list[str], name: str, **kw) -> subprocess.Popen:
        try:
            # Own session: a Ctrl-C at the terminal reaches this script only, which then kills
            # every child in `stop_all` (and the kernel kills them if this script is killed).
            p = subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent,
                                 **kw)
        except OSError as e:
            die(f"cannot start {name} ({argv[0]}): {e}")
        self.procs.append((p, name))
        return p

    def stop(self, p: subprocess.Popen, grace: float = 5.0, sig=signal.SIGTERM) -> int | None:
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            except ProcessLookupError:
                pass
        self.procs = [(q, n) for q, n in self.procs if q is not p]
        for f in (p.stdin, p.stdout):
            if f:
                try:
                    f.close()
                except OSError:
                    pass
        return p.returncode

    def stop_all(self) -> None:
        for p, _ in reversed(self.procs):
            if p.poll() is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
        for p, _ in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []


def _terminate(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


# --------------------------------------------------------------------------------------------
# /proc, ports, HTTP


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all threads), in clock ticks."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)


def status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as e:
        return 0, str(e)


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        out.append({"name": m.group(1), "labels": labels, "value": value})
    return out


def metric(samples: list[dict], name: str, **labels) -> float | None:
    vals = [s["value"] for s in samples if s["name"] == name
            and all(s["labels"].get(k) == v for k, v in labels.items())]
    return sum(vals) if vals else None


def drop_counters(samples: list[dict]) -> list[dict]:
    """Every drop counter of /metrics that is not zero, with a short name for the report."""
    out = []
    for s in samples:
        n = s["name"]
        if not n.startswith("edgeflow_") or s["value"] == 0:
            continue
        if n == "edgeflow_mqtt_ingest_dropped_total":
            short = "ingest_queue"
        elif n == "edgeflow_mqtt_publish_dropped_total":
            short = "publish_queue"
        elif n.startswith("edgeflow_decode_errors"):
            short = "decode:" + s["labels"].get("reason", "?")
        elif "drop" in n:
            short = s["labels"].get("reason") or n.removeprefix("edgeflow_")
        else:
            continue
        out.append({"metric": n, "labels": s["labels"], "value": s["value"], "reason": short})
    return out


# --------------------------------------------------------------------------------------------
# Input


PART_LINES = 65_000  # lines per mosquitto_pub process at QoS 1: < 2^16 (see Publisher)


@dataclass
class Input:
    path: Path  # all N lines
    n: int
    keys: int
    bytes: int
    parts: list[tuple[Path, int]]  # the same lines in files of at most PART_LINES, with counts


def write_readings(workdir: Path, n: int, k: int, seed: int = 7) -> Input:
    """N readings over K keys, round robin: the whole file and its parts."""
    rng = random.Random(seed)
    width = max(4, len(str(k - 1)))
    base = [15.0 + 10.0 * rng.random() for _ in range(min(k, 100_000))]
    path = workdir / "readings.jsonl"
    parts: list[tuple[Path, int]] = []
    size = 0
    with path.open("w", buffering=1 << 20) as f:
        for start in range(0, n, PART_LINES):
            lines = []
            for i in range(start, min(n, start + PART_LINES)):
                key, r = i % k, i // k
                ts = T0_MS + r * STEP_MS + key % 1000
                temp = (base[key % len(base)] + 3.0 * math.sin(2 * math.pi * (r % 1440) / 1440)
                        + rng.gauss(0.0, 0.3))
                lines.append(f'{{"sensor":"s{key:0{width}d}","ts":{ts},"temp":{temp:.2f}}}\n')
            text = "".join(lines)
            size += len(text)
            f.write(text)
            part = workdir / f"readings-{len(parts):03d}.jsonl"
            part.write_text(text)
            parts.append((part, len(lines)))
    return Input(path, n, k, size, parts)


# --------------------------------------------------------------------------------------------
# Mosquitto and its clients


@dataclass
class Tools:
    mosquitto: str
    pub: str
    sub: str
    version: str


def find_tools() -> Tools:
    hint = "install them with: apt-get install -y mosquitto mosquitto-clients"
    found = {}
    for name in ("mosquitto", "mosquitto_pub", "mosquitto_sub"):
        p = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK)
                                   else None)
        if not p:
            die(f"`{name}` not found (PATH and /usr/sbin); {hint}")
        found[name] = p
    r = subprocess.run([found["mosquitto"], "-h"], capture_output=True, text=True)
    m = re.search(r"mosquitto version (\S+)", r.stdout + r.stderr)
    return Tools(found["mosquitto"], found["mosquitto_pub"], found["mosquitto_sub"],
                 m.group(1) if m else "unknown")


class Broker:
    """A mosquitto on a free port. With `persistence_dir` it keeps its sessions and queued
    messages there (`persistence true`, written at SIGTERM), and `stop()` + `start()` restart
    it on the same port with the same file (benches/fault_outage.py)."""

    def __init__(self, children: Children, tools: Tools, workdir: Path, queued: int,
                 inflight: int, timeout: float, persistence_dir: Path | None = None) -> None:
        self.children, self.tools, self.timeout = children, tools, timeout
        self.port = free_port()
        self.log = workdir / "mosquitto.log"
        conf = workdir / "mosquitto.conf"
        persistence = (["persistence true", f"persistence_location {persistence_dir}/",
                        "autosave_interval 0"] if persistence_dir else ["persistence false"])
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", *persistence,
                 f"max_queued_messages {queued}", "max_queued_bytes 0",
                 f"max_inflight_messages {inflight}", "log_dest stderr", "log_type error",
                 "log_type warning", "connection_messages false"]
        if os.geteuid() == 0:
            # Started as root, mosquitto switches to the user `mosquitto`, and the kernel then
            # forgets that it must die with this script (PR_SET_PDEATHSIG).
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        self.conf_path = conf
        self.conf = conf.read_text()
        self.logf = self.log.open("wb")
        self.start()

    def start(self) -> None:
        """Start mosquitto (again) and wait until it accepts connections."""
        self.proc = self.children.start([self.tools.mosquitto, "-c", str(self.conf_path)],
                                        "mosquitto", stdout=self.logf, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        timeout = self.timeout
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                die(f"mosquitto exited at start (code {self.proc.returncode}):\n{tail(self.log)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    die(f"mosquitto does not accept connections on 127.0.0.1:{self.port} after "
                        f"{timeout:.0f} s:\n{tail(self.log)}")
                time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM) -> None:
        """Stop it (SIGTERM: it writes its persistence file first) and wait for the exit."""
        self.children.stop(self.proc, grace=30.0, sig=sig)

    def warnings(self) -> int:
        try:
            # Only errors and warnings are logged (log_type), e.g. "Outgoing messages are
            # being dropped for client …".
            return len(self.log.read_text(errors="replace").splitlines())
        except OSError:
            return 0

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            die(f"mosquitto exited during the run (code {self.proc.returncode}):\n"
                f"{tail(self.log)}")


class Counter:
    """mosquitto_sub printing one line (the topic) per message; lines counted as they arrive."""

    def __init__(self, children: Children, tools: Tools, broker: Broker, topic: str, qos: int,
                 workdir: Path, name: str, persistent: bool = False) -> None:
        """`persistent`: a session of its own that the broker keeps (`mosquitto_sub -c`), so
        that it counts what arrives across a broker restart."""
        self.children, self.tools, self.broker, self.name = children, tools, broker, name
        self.err = workdir / f"{name}.stderr"
        self.errf = self.err.open("wb")
        self.proc = children.start(
            [tools.sub, "-h", "127.0.0.1", "-p", str(broker.port), "-q", str(qos),
             "-i", f"{TOOL}-{name}-{os.getpid()}", "-F", "%t", "-t", topic, "-t", PING_TOPIC]
            + (["-c"] if persistent else []),
            name, stdout=subprocess.PIPE, stderr=self.errf, stdin=subprocess.DEVNULL)
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.rest = b""
        self.n = 0
        self.pings = 0
        self.t_first: float | None = None
        self.t_last: float | None = None

    def poll(self, timeout: float, wfds: list[int] = ()) -> None:
        """Read what has arrived, waiting at most `timeout` for it or for one of `wfds` to be
        writable."""
        r, _, _ = select.select([self.fd], wfds, [], timeout)
        if not r:
            return
        got = 0
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
            pings = whole.count(PING_TOPIC.encode() + b"\n")
            self.pings += pings
            got += whole.count(b"\n") - pings
        if got:
            now = time.perf_counter()
            if self.t_first is None:
                self.t_first = now
            self.t_last = now
            self.n += got

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            die(f"mosquitto_sub ({self.name}) exited (code {self.proc.returncode}): "
                f"{tail(self.err, 5)}")

    def wait_subscribed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.pings == 0:
            self.check_alive()
            if time.monotonic() > deadline:
                die(f"mosquitto_sub ({self.name}) did not receive a probe on {PING_TOPIC} within "
                    f"{timeout:.0f} s: {tail(self.err, 5)}")
            r = subprocess.run([self.tools.pub, "-h", "127.0.0.1", "-p", str(self.broker.port),
                                "-t", PING_TOPIC, "-m", "x"], capture_output=True, text=True)
            if r.returncode != 0:
                die(f"mosquitto_pub (probe) failed (exit {r.returncode}): {r.stderr.strip()}")
            for _ in range(4):
                self.poll(0.05)
        self.poll(0.2)  # a second probe still on its way is counted as a probe, not a message
        self.n, self.t_first, self.t_last = 0, None, None

    def stop(self) -> None:
        self.children.stop(self.proc, grace=2.0)
        self.errf.close()


F_SETPIPE_SZ = 1031  # fcntl(2), Linux
PUB_HEAD_START = 0.5  # s between starting mosquitto_pub and its first line: it connects first
DRAIN = 0.3  # s of counting after the N-th message: more are duplicates
TIMELINE_EVERY = 1.0  # s between the samples of outputs, RSS and CPU during a daemon run
STOP_GRACE = 60.0  # s from SIGTERM to SIGKILL (the default shutdown_deadline is 10 s)


class Publisher:
    """mosquitto_pub -l over the input's parts, one process per part, one after the other, fed
    through a pipe by this script.

    Each process is started (and connects) before its first line is written: mosquitto_pub -l
    takes 100–200 ms from its start to its first publish (it polls its connection state every
    100 ms), which is not publishing time. The first publish of a phase is its first line
    written, PUB_HEAD_START after the first process started; the next part's process is started
    as soon as the current part is written, and fed once the current one has exited (after its
    last acknowledgement), so a single publisher is active at a time.

    At QoS 0 the whole input is one part. At QoS 1 every part has at most PART_LINES lines:
    mosquitto_pub (2.0.11) -l disconnects when the message whose id equals the LAST message's
    id is acknowledged, and ids are 16 bits, so with more than 65,535 lines it stops at the
    first wrap (measured: 3,399 of 200,000 delivered, exit code 0).
    With --rate R the lines are written on a schedule (R lines/s from the first publish);
    otherwise as fast as mosquitto_pub reads them."""

    spawned = 0

    def __init__(self, children: Children, argv: list[str], parts: list[tuple[Path, int]],
                 rate: float, errp: Path, label: str) -> None:
        self.children, self.argv, self.parts, self.rate = children, argv, parts, rate
        self.errp, self.label = errp, label
        self.errf = errp.open("wb")
        self.index = 0  # the part being written or waited for
        self.proc = self._spawn()  # its process
        self.spare: subprocess.Popen | None = None  # the next part's, connecting
        self.data = b""
        self.ends: list[int] = []  # rate mode: the end offset of every line of the part
        self.pos = 0  # bytes of the part written
        self.before = 0  # lines in the parts before the current one
        self.closed = False  # the current part's stdin is closed
        time.sleep(PUB_HEAD_START)
        self.t0 = time.perf_counter()
        self.t_done: float | None = None
        self._load()

    def _spawn(self) -> subprocess.Popen:
        # A client id of its own: the broker closes a session whose id a new client takes, and
        # the spare connects while the current one still publishes.
        Publisher.spawned += 1
        cid = f"{TOOL}-pub-{os.getpid()}-{Publisher.spawned}"
        p = self.children.start(self.argv + ["-i", cid], "mosquitto_pub", stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=self.errf)
        fd = p.stdin.fileno()
        os.set_blocking(fd, False)
        try:
            fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size: the default 64 KiB
        return p

    def _load(self) -> None:
        path, _ = self.parts[self.index]
        self.data = path.read_bytes()
        self.pos = 0
        self.closed = False
        if self.rate > 0:
            self.ends = [m.end() for m in re.finditer(b"\n", self.data)]

    @property
    def done(self) -> bool:
        return self.t_done is not None

    @property
    def feeding(self) -> bool:
        """Lines of the current part are still to be written."""
        return not self.done and not self.closed

    def write_fd(self) -> int | None:
        """The pipe to select on for writing, when there is something to write now."""
        if not self.feeding:
            return None
        return self.proc.stdin.fileno() if self._due() > self.pos else None

    def _due(self) -> int:
        if self.rate <= 0:
            return len(self.data)
        lines = int((time.perf_counter() - self.t0) * self.rate) + 1 - self.before
        if lines <= 0:
            return 0
        return self.ends[min(lines, len(self.ends)) - 1]

    def step(self) -> None:
        if self.done:
            return
        if self.feeding:
            due = self._due()
            if due > self.pos:
                try:
                    self.pos += os.write(self.proc.stdin.fileno(),
                                         memoryview(self.data)[self.pos:due])
                except BlockingIOError:
                    pass
                except BrokenPipeError:
                    self.pos = len(self.data)  # it exited: its exit code says why
            if self.pos >= len(self.data):
                self.proc.stdin.close()  # EOF: it exits once the part is sent (and acked)
                self.closed = True
                if self.index + 1 < len(self.parts):
                    self.spare = self._spawn()
        if self.proc.poll() is not None:
            if self.proc.returncode != 0:
                die(f"mosquitto_pub failed (exit {self.proc.returncode}) in {self.label}: "
                    f"{tail(self.errp, 5)}")
            if not self.closed:
                die(f"mosquitto_pub exited before the end of its input in {self.label} "
                    f"(part {self.index + 1}): {tail(self.errp, 5)}")
            self.children.stop(self.proc)
            self.before += self.parts[self.index][1]
            self.index += 1
            if self.index == len(self.parts):
                self.t_done = time.perf_counter()
                self.errf.close()
                return
            self.proc, self.spare = self.spare, None
            self._load()

    def stop(self) -> None:
        for p in (self.proc, self.spare):
            if p is not None:
                self.children.stop(p, grace=1.0)
        if not self.errf.closed:
            self.errf.close()


@dataclass
class Phase:
    received: int
    seconds: float | None  # first publish → last message received
    rate: float | None  # received / seconds
    first_after: float | None  # first publish → first message received
    publisher_seconds: float | None  # first publish → the last mosquitto_pub seen exited
    end: str  # complete | stalled | timeout
    note: str = ""
    extra: int = 0  # messages beyond N that arrived in the DRAIN after the N-th (duplicates)


def drive(children: Children, tools: Tools, broker: Broker, counter: Counter, inp: Input,
          qos: int, args, workdir: Path, label: str, watch=None) -> Phase:
    """Publish the input and count until N messages arrived (or a stall, or the timeout)."""
    n = inp.n
    argv = [tools.pub, "-h", "127.0.0.1", "-p", str(broker.port), "-q", str(qos), "-l",
            "-t", IN_TOPIC]
    if qos > 0 and args.pub_inflight:
        argv += ["-M", str(args.pub_inflight)]
    parts = [(inp.path, n)] if qos == 0 else inp.parts
    pub = Publisher(children, argv, parts, args.rate, workdir / f"pub-{counter.name}.stderr",
                    label)
    t0 = pub.t0
    last_n, last_progress = 0, t0
    end = "complete"
    note = ""

    def publisher_state() -> str:
        return ("publisher finished" if pub.done else
                f"publisher at part {pub.index + 1} of {len(parts)}")

    while counter.n < n:
        pub.step()
        wfd = pub.write_fd()
        counter.poll(0.01 if pub.feeding else 0.05, [wfd] if wfd is not None else [])
        now = time.perf_counter()
        if counter.n != last_n:
            last_n, last_progress = counter.n, now
        broker.check_alive()
        counter.check_alive()
        if watch:
            watch()
        if now - t0 > args.timeout:
            end = "timeout"
            note = (f"{label}: timeout: {args.timeout:.0f} s after the first publish "
                    f"{counter.n:,} of {n:,} messages had arrived ({publisher_state()})")
            log(note)
            break
        if now - last_progress > args.stall and not pub.feeding:
            end = "stalled"
            note = (f"{label}: no message for {args.stall:.0f} s, {counter.n:,} of {n:,} "
                    f"arrived ({publisher_state()})")
            log(note)
            break
    received, t_last = counter.n, counter.t_last
    if end == "complete":
        # The publisher's last acknowledgements and disconnect (QoS 1), and a short drain: a
        # message beyond N is a duplicate (a QoS 1 redelivery).
        deadline = time.perf_counter() + 2.0
        drain_end = time.perf_counter() + DRAIN
        while (not pub.done and time.perf_counter() < deadline) or time.perf_counter() < drain_end:
            pub.step()
            counter.poll(0.01)
    pub.stop()
    secs = (t_last - t0) if t_last else None
    return Phase(received, secs, received / secs if secs else None,
                 (counter.t_first - t0) if counter.t_first else None,
                 (pub.t_done - t0) if pub.t_done else None, end, note,
                 extra=counter.n - received)


# --------------------------------------------------------------------------------------------
# The daemon


def parse_sets(items: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or section not in SECTIONS:
            die(f"--set {item!r}: expected SECTION.KEY=VALUE with SECTION one of "
                + ", ".join(SECTIONS))
        out.setdefault(section, {}).update(ec.parse_params([f"{name}={raw}"], TOOL))
    return out


def daemon_config(broker_port: int, http_port: int, data_dir: Path, client_id: str, qos: int,
                  out_qos: int, sets: dict[str, dict[str, str]]) -> str:
    tv = ec.toml_value
    sections = {
        "mqtt": {"embedded": "false", "host": tv("127.0.0.1"), "port": str(broker_port),
                 "client_id": tv(client_id), "subscribe_qos": str(qos)},
        "store": {"data_dir": tv(str(data_dir))},
        "runtime": {},
        "http": {"listen": tv(f"127.0.0.1:{http_port}")},
        "pipeline": {"name": tv(PIPELINE), "topics": tv([IN_TOPIC]), "format": tv("json"),
                     "key": tv("/sensor"), "time": tv("/ts"), "time_unit": tv("ms"),
                     "fields": "{ temp = \"/temp\" }", "output_qos": str(out_qos)},
        "model": {"kind": tv("forecast"), "target": tv("temp")},
    }
    for section, kv in sets.items():
        sections[section].update(kv)
    lines = []
    for section, kv in sections.items():
        if not kv:
            continue
        lines.append(SECTIONS[section])
        lines += [f"{k} = {v}" for k, v in kv.items()]
        lines.append("")
    return "\n".join(lines)


def check_binary(exe: Path, workdir: Path, sets, qos_levels: list[int], out_qos_arg: str) -> None:
    for q in qos_levels:
        cfg = workdir / f"check-{exe.name}-q{q}.toml"
        cfg.write_text(daemon_config(1883, 9883, workdir / "check-data", "edgeflow-check", q,
                                     q if out_qos_arg == "same" else int(out_qos_arg), sets))
        r = subprocess.run([str(exe), "check", "--config", str(cfg)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            die(f"`{exe} check` rejects the generated config {cfg} (exit {r.returncode}):\n"
                + (r.stderr.strip() or r.stdout.strip())
                + "\n(a --set this binary does not accept?) The generated config:\n"
                + cfg.read_text())


@dataclass
class DaemonRun:
    binary: str  # "A" or "B"
    qos: int
    round: int
    n: int
    relay_rate: float | None
    phase: Phase
    ratio: float | None
    cpu_us_per_reading: float
    broker_cpu_us_per_reading: float
    peak_rss_mb: float | None
    end_rss_mb: float | None
    outputs: int
    lost: int
    drops: list[dict]
    broker_to_daemon: int | None  # N − edgeflow_mqtt_received_total
    daemon_to_counter: int | None  # edgeflow_mqtt_published_total − outputs received
    keys_active: float | None
    passivated: float | None
    ready_rss_mb: float | None  # VmRSS once ready, before the first publish
    ready_heap_mb: float | None  # edgeflow_heap_bytes then (None: a binary without it)
    end_heap_mb: float | None
    broker_warnings: int
    startup_seconds: float
    exit_code: int | None  # after SIGTERM; -9: killed STOP_GRACE s after it
    stop_seconds: float  # SIGTERM → exit
    config: str
    metrics: dict = field(default_factory=dict)
    timeline: list = field(default_factory=list)


def run_daemon(children: Children, tools: Tools, broker: Broker, exe: Path, label: str, qos: int,
               rnd: int, inp: Input, relay_rate: float | None, args, sets,
               workdir: Path, seq: int) -> DaemonRun:
    out_qos = qos if args.output_qos == "same" else int(args.output_qos)
    rdir = workdir / f"run{seq:02d}-{label}-q{qos}"
    rdir.mkdir()
    data_dir = rdir / "data"
    http_port = free_port()
    cfg = rdir / "edgeflow.toml"
    cfg.write_text(daemon_config(broker.port, http_port, data_dir,
                                 f"edgeflow-load-{os.getpid()}-{seq}", qos, out_qos, sets))
    counter = Counter(children, tools, broker, OUT_FILTER, out_qos, rdir, f"outputs{seq}")
    counter.wait_subscribed(args.timeout)
    dlog = rdir / "edgeflow.log"
    dlogf = dlog.open("wb")
    t_start = time.perf_counter()
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    daemon = children.start([str(exe), "run", "--config", str(cfg)], f"edgeflow {label}",
                            stdout=dlogf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env)

    timeline: list[dict] = []  # every TIMELINE_EVERY s of the run: outputs, RSS, CPU since t_run

    def alive() -> None:
        if daemon.poll() is not None:
            die(f"edgeflow {label} ({exe}) exited (code {daemon.returncode}); the end of its log "
                f"{dlog}:\n{tail(dlog)}")

    def watch() -> None:  # during the run
        alive()
        now = time.perf_counter()
        if not timeline or now - t_run - timeline[-1]["t"] >= TIMELINE_EVERY:
            rss_kb = status_kb(daemon.pid, "VmRSS")
            timeline.append({"t": round(now - t_run, 3), "outputs": counter.n,
                             "rss_mb": rss_kb / 1024 if rss_kb else None,
                             "cpu_s": (cpu_ticks(daemon.pid) - ticks0) / CLK_TCK})

    # Ready: the log's `ready:` line (subscriptions acknowledged); for a binary without it,
    # /health 200 for a second.
    deadline = t_start + args.timeout
    healthy_since = None
    while True:
        alive()
        if READY_MARK in dlog.read_text(errors="replace"):
            break
        code, _ = http_get(http_port, "/health", timeout=1.0)
        now = time.perf_counter()
        if code == 200:
            healthy_since = healthy_since or now
            if now - healthy_since > 1.0:
                break
        else:
            healthy_since = None
        if now > deadline:
            die(f"edgeflow {label} not ready {args.timeout:.0f} s after start (no `{READY_MARK}` "
                f"line, /health {code}); the end of its log {dlog}:\n{tail(dlog)}")
        time.sleep(0.05)
    startup = time.perf_counter() - t_start
    pid = daemon.pid
    ready_rss = status_kb(pid, "VmRSS")
    _, ready_text = http_get(http_port, "/metrics")
    ready_heap = metric(parse_metrics(ready_text), "edgeflow_heap_bytes")
    warn0 = broker.warnings()
    ticks0, bticks0 = cpu_ticks(pid), cpu_ticks(broker.proc.pid)
    t_run = time.perf_counter() + PUB_HEAD_START  # ≈ the first publish
    n = inp.n
    phase = drive(children, tools, broker, counter, inp, qos, args, rdir,
                  f"{label} QoS {qos} round {rnd + 1}", watch=watch)
    ticks1, bticks1 = cpu_ticks(pid), cpu_ticks(broker.proc.pid)
    peak, rss = status_kb(pid, "VmHWM"), status_kb(pid, "VmRSS")
    code, text = http_get(http_port, "/metrics")
    if code != 200:
        die(f"edgeflow {label}: GET /metrics answered {code}: {text[:300]}")
    samples = parse_metrics(text)
    counter.stop()
    t_stop = time.perf_counter()
    rc = children.stop(daemon, grace=STOP_GRACE)
    stop_seconds = time.perf_counter() - t_stop
    dlogf.close()
    if rc != 0:
        how = (f"was killed {STOP_GRACE:.0f} s after SIGTERM" if rc == -signal.SIGKILL else
               f"exited with code {rc} after SIGTERM")
        log(f"edgeflow {label} {how}; the end of its log:\n" + tail(dlog, 10))
    shutil.rmtree(data_dir, ignore_errors=True)
    received = metric(samples, "edgeflow_mqtt_received_total")
    published = metric(samples, "edgeflow_mqtt_published_total")
    core = ["edgeflow_readings_total", "edgeflow_outputs_total", "edgeflow_mqtt_received_total",
            "edgeflow_mqtt_published_total", "edgeflow_mqtt_publish_queue_depth",
            "edgeflow_keys_active", "edgeflow_keys_activated_total",
            "edgeflow_keys_passivated_total", "edgeflow_keys_restored_total",
            "edgeflow_checkpoints_total", "edgeflow_checkpoint_states_written_total",
            "edgeflow_mqtt_reconnects_total", "edgeflow_unknown_topic_messages_total"]
    return DaemonRun(
        binary=label, qos=qos, round=rnd, n=n, relay_rate=relay_rate, phase=phase,
        ratio=(phase.rate / relay_rate) if phase.rate and relay_rate else None,
        cpu_us_per_reading=(ticks1 - ticks0) / CLK_TCK * 1e6 / n,
        broker_cpu_us_per_reading=(bticks1 - bticks0) / CLK_TCK * 1e6 / n,
        peak_rss_mb=peak / 1024 if peak else None, end_rss_mb=rss / 1024 if rss else None,
        outputs=phase.received, lost=n - phase.received, drops=drop_counters(samples),
        broker_to_daemon=int(n - received) if received is not None else None,
        daemon_to_counter=int(published - phase.received) if published is not None else None,
        keys_active=metric(samples, "edgeflow_keys_active"),
        passivated=metric(samples, "edgeflow_keys_passivated_total"),
        ready_rss_mb=ready_rss / 1024 if ready_rss else None,
        ready_heap_mb=ready_heap / 2**20 if ready_heap is not None else None,
        end_heap_mb=(lambda h: h / 2**20 if h is not None else None)(
            metric(samples, "edgeflow_heap_bytes")),
        broker_warnings=broker.warnings() - warn0, startup_seconds=startup, exit_code=rc,
        stop_seconds=stop_seconds, config=cfg.read_text(),
        metrics={k: metric(samples, k) for k in core}, timeline=timeline)


@dataclass
class RelayRun:
    qos: int
    round: int
    n: int
    phase: Phase
    broker_cpu_us_per_msg: float
    broker_warnings: int


def run_relay(children, tools, broker, qos, rnd, inp: Input, args, workdir, seq) -> RelayRun:
    n = inp.n
    counter = Counter(children, tools, broker, IN_TOPIC, qos, workdir, f"relay{seq}")
    counter.wait_subscribed(args.timeout)
    warn0 = broker.warnings()
    b0 = cpu_ticks(broker.proc.pid)
    phase = drive(children, tools, broker, counter, inp, qos, args, workdir,
                  f"relay QoS {qos} round {rnd + 1}")
    b1 = cpu_ticks(broker.proc.pid)
    counter.stop()
    return RelayRun(qos, rnd, n, phase, (b1 - b0) / CLK_TCK * 1e6 / n,
                    broker.warnings() - warn0)


# --------------------------------------------------------------------------------------------
# Report


def i(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:,.0f}"


def drops_text(r: DaemonRun) -> str:
    parts = [f"{d['reason']} {d['value']:,.0f}" for d in r.drops]
    if r.broker_to_daemon:
        parts.append(f"broker→daemon {r.broker_to_daemon:,}")
    if r.daemon_to_counter:
        parts.append(f"daemon→counter {r.daemon_to_counter:,}")
    if r.broker_warnings:
        parts.append(f"broker warnings {r.broker_warnings}")
    if r.phase.extra:
        parts.append(f"{r.phase.extra:,} outputs beyond N (duplicates)")
    if r.phase.end != "complete":
        parts.append(r.phase.end)
    return "; ".join(parts) or "none"


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def environment(tools: Tools, binaries: dict[str, Path]) -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    bins = []
    for label, exe in binaries.items():
        r = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
        built = time.strftime("%Y-%m-%d %H:%M", time.localtime(exe.stat().st_mtime))
        bins.append(f"{label} = `{exe}` ({r.stdout.strip() or 'no --version'}, built {built})")
    return (f"CPU {cpu} ({os.cpu_count()} logical, shared by the broker, the clients and the "
            f"daemon), Mosquitto {tools.version}, Python {sys.version.split()[0]}; "
            + "; ".join(bins))


def report(args, tools, binaries, n, k, relays: list[RelayRun], runs: list[DaemonRun],
           many: bool) -> list[str]:
    mode = (f"many-keys mode: {n:,} readings, each with its own key" if many else
            f"N = {n:,} readings over K = {k:,} keys (round robin)")
    rate = f"at most {args.rate:,.0f} readings/s" if args.rate > 0 else "at full speed"
    lines = [f"# daemon_load: {mode}, published {rate} on `{IN_TOPIC}`",
             "",
             environment(tools, binaries) + ".",
             f"QoS under test {','.join(map(str, args.qos))} (publisher and `subscribe_qos`; "
             f"outputs `output_qos` = {args.output_qos}); rounds: {args.repeat}"
             + ("; --set " + ", ".join(args.set) if args.set else "") + ".",
             "",
             "Relay (mosquitto_pub → Mosquitto → mosquitto_sub on the same topic, one hop):",
             ""]
    if not relays:
        lines.append("(not measured: --no-relay)")
    else:
        lines += ec.md_table(
            ["QoS", "round", "msg/s", "received", "lost", "duplicates", "publisher exited (s)",
             "broker CPU µs/msg", "end"],
            [[str(r.qos), str(r.round + 1), i(r.phase.rate), i(r.phase.received),
              i(r.n - r.phase.received), i(r.phase.extra), ec.fmt(r.phase.publisher_seconds, 2),
              ec.fmt(r.broker_cpu_us_per_msg, 1), r.phase.end] for r in relays])
    lines += ["", "Daemon (mosquitto_pub → Mosquitto → edgeflow → Mosquitto → mosquitto_sub):", ""]
    lines += ec.md_table(
        ["binary", "QoS", "round", "readings/s", "ratio to relay", "CPU µs/reading",
         "broker CPU µs/reading", "peak RSS MB", "end RSS MB", "outputs", "lost", "keys active",
         "drops by reason"],
        [[r.binary, str(r.qos), str(r.round + 1), i(r.phase.rate), ec.fmt(r.ratio, 3),
          ec.fmt(r.cpu_us_per_reading, 1), ec.fmt(r.broker_cpu_us_per_reading, 1),
          ec.fmt(r.peak_rss_mb, 1), ec.fmt(r.end_rss_mb, 1), i(r.outputs), i(r.lost),
          i(r.keys_active), drops_text(r)] for r in runs])
    if args.repeat > 1 or len(binaries) > 1:
        lines += ["", f"Medians over {args.repeat} round(s):", ""]
        rows = []
        for q in args.qos:
            relay_med = med([r.phase.rate for r in relays if r.qos == q])
            meds = {}
            for label in binaries:
                rs = [r for r in runs if r.binary == label and r.qos == q]
                meds[label] = (med([r.phase.rate for r in rs]), med([r.ratio for r in rs]),
                               med([r.cpu_us_per_reading for r in rs]),
                               med([r.peak_rss_mb for r in rs]), med([r.lost for r in rs]))
                m = meds[label]
                rows.append([label, str(q), i(relay_med), i(m[0]), ec.fmt(m[1], 3),
                             ec.fmt(m[2], 1), ec.fmt(m[3], 1), i(m[4])])
            if len(binaries) == 2:
                a, b = meds["A"], meds["B"]
                ratio = [(y / x) if x and y is not None else None for x, y in zip(a, b)]
                rows.append(["B/A", str(q), "", ec.fmt(ratio[0], 3), ec.fmt(ratio[1], 3),
                             ec.fmt(ratio[2], 3), ec.fmt(ratio[3], 3), ""])
        lines += ec.md_table(["binary", "QoS", "relay msg/s", "readings/s", "ratio to relay",
                              "CPU µs/reading", "peak RSS MB", "lost"], rows)
    lines.append("")
    for r in runs:
        if r.keys_active and r.ready_rss_mb is not None and r.end_rss_mb is not None:
            rss_key = (r.end_rss_mb - r.ready_rss_mb) * 1024 / r.keys_active
            heap = ""
            if r.ready_heap_mb is not None and r.end_heap_mb is not None:
                heap = (f"; heap {r.ready_heap_mb:.1f} → {r.end_heap_mb:.1f} MiB, "
                        f"{(r.end_heap_mb - r.ready_heap_mb) * 1024 / r.keys_active:.2f} KiB "
                        "per key")
            lines.append(f"Per resident key, {r.binary} QoS {r.qos} round {r.round + 1}: RSS "
                         f"{r.ready_rss_mb:.1f} MB when ready → {r.end_rss_mb:.1f} MB at the end "
                         f"with {i(r.keys_active)} keys, {rss_key:.2f} KB per key{heap}.")
    if many:
        lines.append("")
        for r in runs:
            ok = r.peak_rss_mb is not None and r.peak_rss_mb <= args.rss_limit_mb
            lines.append(f"Many keys, {r.binary} QoS {r.qos} round {r.round + 1}: peak RSS "
                         f"{ec.fmt(r.peak_rss_mb, 1)} MB ({'within' if ok else 'ABOVE'} "
                         f"{args.rss_limit_mb:g} MB), {i(r.keys_active)} keys resident at the "
                         f"end, {i(r.passivated)} passivated, {i(r.lost)} lost "
                         f"({drops_text(r)}).")
            tl = [x for x in r.timeline if x["t"] >= 0 and x["rss_mb"] is not None]
            if tl and r.peak_rss_mb and r.keys_active:
                per_key = (r.peak_rss_mb - tl[0]["rss_mb"]) * 1024 / r.keys_active
                lines.append(f"  ≈ {per_key:.1f} KB of peak RSS per resident key ((peak − RSS at "
                             f"the first publish, {tl[0]['rss_mb']:.0f} MB) / resident keys).")
            if tl:
                picks = [tl[round(j * (len(tl) - 1) / 9)] for j in range(10)] if len(tl) > 10 else tl
                lines.append("  RSS over the run (s after the first publish: outputs so far, "
                             "RSS MB): " + ", ".join(
                                 f"{x['t']:.0f} s: {x['outputs']:,}, {x['rss_mb']:.0f}"
                                 for x in picks) + ".")
    lines += [
        "",
        "readings/s: outputs received / (first publish → last output received); ratio to relay: "
        "that rate / the relay rate of the same round and QoS. CPU µs/reading: utime + stime of "
        "the process from just before the first publish to the end of the run (checkpoints "
        "included), / N. Peak RSS: VmHWM since start; end RSS: VmRSS at the end. lost = N − "
        "outputs received. Drops: the non-zero drop counters of /metrics (`ingest_queue` = "
        "edgeflow_mqtt_ingest_dropped_total, `publish_queue` = edgeflow_mqtt_publish_dropped_total, "
        "`decode:<reason>` = edgeflow_decode_errors_total, others edgeflow_dropped_total by "
        "reason), `broker→daemon` = N − edgeflow_mqtt_received_total, `daemon→counter` = "
        "edgeflow_mqtt_published_total − outputs received (after a timeout these include what "
        "was not published yet); `stalled`: no output for "
        f"{args.stall:g} s before N arrived.",
    ]
    notes = [r.phase.note for r in list(relays) + list(runs) if r.phase.note]
    lines += [f"Note: {x}." for x in notes]
    return lines


# --------------------------------------------------------------------------------------------


def find_binary(arg: str | None, what: str) -> Path:
    if arg:
        p = Path(arg)
        if not (p.is_file() and os.access(p, os.X_OK)):
            die(f"{what} {arg} is not an executable file")
        return p.resolve()
    for p in DEFAULT_EDGEFLOW:
        if p.is_file() and os.access(p, os.X_OK):
            return p
    die("no edgeflow binary: looked for " + ", ".join(str(p) for p in DEFAULT_EDGEFLOW)
        + "; build one (cargo build --release) or pass --edgeflow PATH")
    raise AssertionError


def parse_qos(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        levels = []
    if not levels or any(q not in (0, 1) for q in levels):
        raise argparse.ArgumentTypeError(f"--qos {text!r}: a comma-separated list of 0 and 1")
    return levels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edgeflow", help="binary A (default: "
                                       + ", else ".join(str(p) for p in DEFAULT_EDGEFLOW) + ")")
    ap.add_argument("--compare", metavar="PATH2", help="binary B, run alternately with A")
    ap.add_argument("--repeat", type=int, default=1, help="rounds (default 1)")
    ap.add_argument("--order", choices=("abba", "ab"), default="abba",
                    help="with --compare: A, B in even rounds and B, A in odd ones (abba, the "
                         "default), or A, B in every round (ab)")
    ap.add_argument("--n", type=int, default=200_000, help="readings (default 200,000)")
    ap.add_argument("--keys", type=int, default=10_000, help="distinct keys (default 10,000)")
    ap.add_argument("--keys-run", type=int, nargs="?", const=1_000_000, metavar="M",
                    help="many-keys mode: M readings, each a distinct key (default M 1,000,000)")
    ap.add_argument("--qos", type=parse_qos, default=[0, 1], help="QoS levels (default 0,1)")
    ap.add_argument("--output-qos", choices=("same", "0", "1"), default="same",
                    help="the daemon's output_qos and the output counter's (default: the QoS "
                         "under test)")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="publish at most this many readings/s (default 0: full speed)")
    ap.add_argument("--no-relay", action="store_true",
                    help="skip the relay measurement (no ratio; e.g. a long run at a --rate)")
    ap.add_argument("--pub-inflight", type=int, default=0,
                    help="mosquitto_pub -M at QoS 1 (default: mosquitto_pub's own, 20)")
    ap.add_argument("--broker-inflight", type=int, default=0,
                    help="Mosquitto's max_inflight_messages (default 0: no limit)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a setting of the daemon config, value as TOML (repeatable)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per phase (120)")
    ap.add_argument("--stall", type=float,
                    help="end a run after this many seconds without a message (default 5; 30 "
                         "in the many-keys mode, where passivation pauses the outputs)")
    ap.add_argument("--rss-limit-mb", type=float, default=128.0,
                    help="many-keys mode: the peak RSS bound checked (128)")
    ap.add_argument("--workdir", type=Path, help="working directory (default a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    ap.add_argument("--out", type=Path, help="also write the Markdown report here")
    ap.add_argument("--json", type=Path, help="write the raw numbers here")
    args = ap.parse_args()
    many = args.keys_run is not None
    if args.stall is None:
        args.stall = 30.0 if many else 5.0
    n, k = (args.keys_run, args.keys_run) if many else (args.n, args.keys)
    if n < 1 or k < 1 or args.repeat < 1:
        ap.error("--n, --keys, --keys-run and --repeat must be positive")
    k = min(k, n)
    if args.pub_inflight < 0:
        ap.error("--pub-inflight must be ≥ 0")
    sets = parse_sets(args.set)
    binaries = {"A": find_binary(args.edgeflow, "--edgeflow")}
    if args.compare:
        binaries["B"] = find_binary(args.compare, "--compare")
    tools = find_tools()

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="daemon_load_")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    children = Children()
    relays: list[RelayRun] = []
    runs: list[DaemonRun] = []
    t_start = time.perf_counter()
    try:
        for exe in binaries.values():
            check_binary(exe, workdir, sets, args.qos, args.output_qos)
        log(f"writing {n:,} readings over {k:,} keys to {workdir}…")
        inp = write_readings(workdir, n, k)
        log(f"{inp.bytes / 1e6:.1f} MB; starting mosquitto {tools.version}…")
        broker = Broker(children, tools, workdir, max(1_000_000, 2 * n), args.broker_inflight,
                        args.timeout)
        seq = 0
        for rnd in range(args.repeat):
            for q in args.qos:
                relay_rate = None
                if not args.no_relay:
                    seq += 1
                    log(f"round {rnd + 1}/{args.repeat} QoS {q}: relay…")
                    rr = run_relay(children, tools, broker, q, rnd, inp, args, workdir, seq)
                    relays.append(rr)
                    relay_rate = rr.phase.rate
                    log(f"  relay: {i(rr.phase.rate)} msg/s, {rr.phase.received:,} received")
                order = list(binaries.items())
                if args.order == "abba" and rnd % 2 == 1:
                    order.reverse()
                for label, exe in order:
                    seq += 1
                    log(f"round {rnd + 1}/{args.repeat} QoS {q}: daemon {label}…")
                    dr = run_daemon(children, tools, broker, exe, label, q, rnd, inp,
                                    relay_rate, args, sets, workdir, seq)
                    runs.append(dr)
                    log(f"  {label}: {i(dr.phase.rate)} readings/s (ratio {ec.fmt(dr.ratio, 3)}), "
                        f"{ec.fmt(dr.cpu_us_per_reading, 1)} µs CPU/reading, peak RSS "
                        f"{ec.fmt(dr.peak_rss_mb, 1)} MB, lost {dr.lost:,} ({drops_text(dr)})")
        broker_conf = broker.conf
    except KeyboardInterrupt:
        log("interrupted; stopping the child processes")
        return 130
    finally:
        children.stop_all()
        if own_workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep or not own_workdir:
            log(f"working directory kept: {workdir}")

    lines = report(args, tools, binaries, n, k, relays, runs, many)
    lines.append(f"Run time {time.perf_counter() - t_start:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
        log(f"wrote {args.out}")
    if args.json:
        doc = {
            "environment": environment(tools, binaries),
            "binaries": {label: str(p) for label, p in binaries.items()},
            "mosquitto": tools.version, "mosquitto_conf": broker_conf,
            "n": n, "keys": k, "many_keys": many, "qos": args.qos,
            "output_qos": args.output_qos, "rate": args.rate, "repeat": args.repeat,
            "set": args.set, "clock_ticks": CLK_TCK,
            "relay": [asdict(r) for r in relays],
            "runs": [asdict(r) for r in runs],
        }
        args.json.write_text(json.dumps(ec.json_safe(doc), indent=1) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
