#!/usr/bin/env bash
# Run edgeflow the way a 1-core, 256 MB gateway would, under a sensor load through Mosquitto,
# and report its memory and CPU. A benchmark, not a test: figures go to BENCHMARKS.md.
#
#   scripts/constrained-run.sh                      # 10,000 sensors, 5,000 readings/s
#   SENSORS=2000 RATE=1000 MEASURE=30 scripts/constrained-run.sh
#
# The constraints, strongest available first:
#   1. systemd-run --scope -p MemoryMax=256M -p CPUQuota=100% -p AllowedCPUs=0  (systemd hosts)
#   2. a cgroup (v2, or v1 memory + cpu controllers) with the same limits      (root in a container)
#   3. taskset -c 0 only (no memory limit; RSS is still reported)
# The daemon is pinned to CPU 0; the load generator and Mosquitto run on the other CPUs when
# there are any, so they do not eat the gateway's one core.
#
# Needs: mosquitto, a release build (built here), python3 (free ports).
set -euo pipefail
cd "$(dirname "$0")/.."

SENSORS=${SENSORS:-10000}
RATE=${RATE:-5000}
WARMUP=${WARMUP:-30}     # seconds before measuring: every key activated, caches warm
MEASURE=${MEASURE:-60}   # seconds measured
MEMORY=${MEMORY:-256M}

command -v mosquitto >/dev/null || { echo "needs mosquitto (apt-get install mosquitto)" >&2; exit 1; }
cargo build --release --quiet
bin=$PWD/target/release/edgeflow

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
work=$(mktemp -d)
mqtt_port=$(free_port)
http_port=$(free_port)
cpus=$(nproc)
others=$([ "$cpus" -gt 1 ] && echo "1-$((cpus - 1))" || echo 0)
pids=()
cgroup_dirs=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for d in "${cgroup_dirs[@]}"; do rmdir "$d" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/mosquitto.conf" <<CONF
listener $mqtt_port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 100000
CONF
taskset -c "$others" mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)

cat >"$work/edgeflow.toml" <<CONF
[mqtt]
port = $mqtt_port
client_id = "edgeflow-constrained"

[store]
data_dir = "$work/data"
checkpoint_interval = "5s"
cache_bytes = 4194304

[runtime]
shards = 1
max_resident_keys = 20000
stats_interval = "10s"

[http]
listen = "127.0.0.1:$http_port"

[[pipelines]]
name = "temperature"
topics = ["sensors/+/temperature"]
key = "topic[1]"
time = "/ts"
time_unit = "ms"
fields = { temp = "/value" }

[pipelines.model]
kind = "forecast"
target = "temp"
CONF
"$bin" check --config "$work/edgeflow.toml" >/dev/null

# The daemon, constrained.
launch() {
  if command -v systemd-run >/dev/null && systemd-run --scope --quiet true 2>/dev/null; then
    constraint="systemd-run scope: MemoryMax=$MEMORY CPUQuota=100% AllowedCPUs=0"
    systemd-run --scope --quiet -p MemoryMax="$MEMORY" -p CPUQuota=100% -p AllowedCPUs=0 \
      "$bin" run --config "$work/edgeflow.toml" 2>"$work/edgeflow.log" &
    pids+=($!)
    return
  fi
  taskset -c 0 "$bin" run --config "$work/edgeflow.toml" 2>"$work/edgeflow.log" &
  local pid=$!
  pids+=("$pid")
  constraint="taskset -c 0"
  local name="edgeflow-constrained-$$"
  if [ -f /sys/fs/cgroup/cgroup.controllers ] && mkdir "/sys/fs/cgroup/$name" 2>/dev/null; then
    cgroup_dirs+=("/sys/fs/cgroup/$name")
    echo "$MEMORY" >"/sys/fs/cgroup/$name/memory.max" &&
      echo "100000 100000" >"/sys/fs/cgroup/$name/cpu.max" &&
      echo "$pid" >"/sys/fs/cgroup/$name/cgroup.procs" &&
      constraint="$constraint + cgroup v2 memory.max=$MEMORY cpu.max=1 CPU"
  elif mkdir "/sys/fs/cgroup/memory/$name" 2>/dev/null; then
    cgroup_dirs+=("/sys/fs/cgroup/memory/$name")
    local bytes
    bytes=$(numfmt --from=iec "$MEMORY")
    echo "$bytes" >"/sys/fs/cgroup/memory/$name/memory.limit_in_bytes" &&
      echo "$pid" >"/sys/fs/cgroup/memory/$name/cgroup.procs" &&
      constraint="$constraint + cgroup v1 memory.limit_in_bytes=$MEMORY"
    if mkdir "/sys/fs/cgroup/cpu/$name" 2>/dev/null; then
      cgroup_dirs+=("/sys/fs/cgroup/cpu/$name")
      echo 100000 >"/sys/fs/cgroup/cpu/$name/cpu.cfs_period_us" &&
        echo 100000 >"/sys/fs/cgroup/cpu/$name/cpu.cfs_quota_us" &&
        echo "$pid" >"/sys/fs/cgroup/cpu/$name/cgroup.procs" &&
        constraint="$constraint, cpu.cfs_quota_us = 1 CPU"
    fi
  else
    constraint="$constraint (no cgroup available: memory not limited, only measured)"
  fi
}
launch
daemon_pid=$(pgrep -n -f "edgeflow run --config $work/edgeflow.toml")
for _ in $(seq 1 100); do
  grep -q "ready: subscribed" "$work/edgeflow.log" && break
  sleep 0.1
done
grep -q "ready: subscribed" "$work/edgeflow.log" || { cat "$work/edgeflow.log" >&2; echo "daemon not ready" >&2; exit 1; }

taskset -c "$others" "$bin" simulate --port "$mqtt_port" --sensors "$SENSORS" --rate "$RATE" \
  2>"$work/simulate.log" &
pids+=($!)

metric() { # metric NAME: the value of one sample on /metrics
  python3 - "$http_port" "$1" <<'PY'
import sys, urllib.request
port, name = sys.argv[1], sys.argv[2]
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
for line in text.splitlines():
    if line.startswith(name + " ") or line.startswith(name + "{"):
        print(line.rsplit(" ", 1)[1]); break
else:
    print(0)
PY
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$daemon_pid/stat"; }
status_kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$daemon_pid/status"; }

sleep "$WARMUP"
ticks0=$(cpu_ticks)
readings0=$(metric 'edgeflow_readings_total')
t0=$(date +%s.%N)
max_rss=0
for _ in $(seq 1 "$MEASURE"); do
  sleep 1
  rss=$(status_kb VmRSS)
  [ "$rss" -gt "$max_rss" ] && max_rss=$rss
done
t1=$(date +%s.%N)
ticks1=$(cpu_ticks)
readings1=$(metric 'edgeflow_readings_total')
hz=$(getconf CLK_TCK)
keys=$(metric 'edgeflow_keys_active')
dropped=$(metric 'edgeflow_mqtt_ingest_dropped_total')
hwm=$(status_kb VmHWM)

python3 - <<PY
elapsed = $t1 - $t0
cpu = ($ticks1 - $ticks0) / $hz
readings = $readings1 - $readings0
print(f"constraint:        $constraint")
print(f"load:              $SENSORS sensors, $RATE readings/s offered through Mosquitto (simulate on CPUs $others)")
print(f"measured:          {elapsed:.0f} s after {$WARMUP} s of warm-up")
print(f"readings/s:        {readings / elapsed:,.0f} processed")
print(f"resident keys:     $keys")
print(f"CPU:               {100 * cpu / elapsed:.1f} % of one core ({1e6 * cpu / max(readings, 1):.1f} µs per reading)")
print(f"RSS:               max {$max_rss / 1024:.1f} MB during the window, peak {$hwm / 1024:.1f} MB (VmHWM)")
print(f"ingest drops:      $dropped (queue full)")
PY
