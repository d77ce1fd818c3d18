#!/usr/bin/env bash
# Cross-build edgeflow for ARM gateways with Debian's cross compilers (no Docker needed), then
# check the binaries under qemu-user:
#
#   * build each target (release by default) and a host build of the same profile;
#   * strip a copy of each binary into target/cross/<target>/edgeflow and print its size;
#   * under qemu: `edgeflow --version`, `edgeflow check` on every file in configs/, and
#     `edgeflow replay` of every config over a generated sample, compared byte for byte with
#     the host build's replay of the same input (replay is deterministic: an ARM build must
#     print the same bytes);
#   * the library's unit tests under qemu (`cargo test --target <t> --lib`).
#
# Idempotent: installs what is missing (apt-get and rustup) when run as root, otherwise says
# what to install and stops. Linkers, qemu runners and the C compilers for ring come from
# .cargo/config.toml.
#
# Settings (environment):
#   EDGEFLOW_CROSS_TARGETS    targets to build     (default: "armv7-unknown-linux-gnueabihf
#                                                   aarch64-unknown-linux-gnu")
#   EDGEFLOW_CROSS_PROFILE    cargo profile        (default: release; "dev" for a quick check)
#   EDGEFLOW_CROSS_LIB_TESTS  targets whose lib unit tests run under qemu: a list, "all" or
#                             "none"               (default: armv7-unknown-linux-gnueabihf)
#   EDGEFLOW_CROSS_STEPS      replay sample size in steps (default: 300; 5 messages per step
#                             and sensor, 4 sensors)
#   EDGEFLOW_CROSS_CARGO_ARGS extra cargo build arguments (e.g. "--no-default-features")
set -euo pipefail
cd "$(dirname "$0")/.."

targets=${EDGEFLOW_CROSS_TARGETS:-"armv7-unknown-linux-gnueabihf aarch64-unknown-linux-gnu"}
profile=${EDGEFLOW_CROSS_PROFILE:-release}
lib_tests=${EDGEFLOW_CROSS_LIB_TESTS:-armv7-unknown-linux-gnueabihf}
steps=${EDGEFLOW_CROSS_STEPS:-300}
read -r -a cargo_args <<<"${EDGEFLOW_CROSS_CARGO_ARGS:-}"
[ "$lib_tests" = all ] && lib_tests=$targets
[ "$lib_tests" = none ] && lib_tests=""
target_root=${CARGO_TARGET_DIR:-target}
# cargo's output directory of a profile.
case "$profile" in
  dev) profile_dir=debug ;;
  *) profile_dir=$profile ;;
esac

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'cross.sh: %s\n' "$*" >&2; exit 1; }

# Per target: Debian package of the C cross compiler, tool prefix, qemu binary, sysroot.
gcc_package() {
  case "$1" in
    aarch64-unknown-linux-gnu) echo gcc-aarch64-linux-gnu ;;
    armv7-unknown-linux-gnueabihf) echo gcc-arm-linux-gnueabihf ;;
    *) die "unsupported target $1 (supported: aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf)" ;;
  esac
}
tool_prefix() {
  case "$1" in
    aarch64-unknown-linux-gnu) echo aarch64-linux-gnu ;;
    armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf ;;
  esac
}
qemu_binary() {
  case "$1" in
    aarch64-unknown-linux-gnu) echo qemu-aarch64-static ;;
    armv7-unknown-linux-gnueabihf) echo qemu-arm-static ;;
  esac
}

# Step timings, printed at the end.
timings=()
now_ms() { echo $(($(date +%s%N) / 1000000)); }
timed() { # timed LABEL COMMAND...
  local label=$1 start elapsed status=0
  shift
  start=$(now_ms)
  "$@" || status=$?
  elapsed=$(($(now_ms) - start))
  timings+=("$(printf '%-58s %5d.%d s' "$label" $((elapsed / 1000)) $((elapsed % 1000 / 100)))")
  return "$status"
}

# --- 1. tools -------------------------------------------------------------------------------
missing_packages=()
command -v qemu-arm-static >/dev/null 2>&1 && command -v qemu-aarch64-static >/dev/null 2>&1 \
  || missing_packages+=(qemu-user-static)
for target in $targets; do
  prefix=$(tool_prefix "$target")
  command -v "$prefix-gcc" >/dev/null 2>&1 || missing_packages+=("$(gcc_package "$target")")
done
if [ ${#missing_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing_packages[@]}" >/dev/null
  else
    die "missing tools; install them with: sudo apt-get install ${missing_packages[*]}"
  fi
fi
installed_targets=$(rustup target list --installed)
for target in $targets; do
  if ! grep -qx "$target" <<<"$installed_targets"; then
    log "rustup target add $target"
    rustup target add "$target"
  fi
done

# --- 2. builds ------------------------------------------------------------------------------
host_bin=$target_root/$profile_dir/edgeflow
log "host build ($profile)"
timed "host build ($profile)" cargo build --locked --profile "$profile" "${cargo_args[@]}"
for target in $targets; do
  log "$target build ($profile)"
  timed "$target build ($profile)" \
    cargo build --locked --profile "$profile" --target "$target" "${cargo_args[@]}"
  out=$target_root/cross/$target
  mkdir -p "$out"
  cp "$target_root/$target/$profile_dir/edgeflow" "$out/edgeflow"
  "$(tool_prefix "$target")-strip" "$out/edgeflow"
done

log "sizes (bytes)"
printf '%-32s %12s %12s\n' target unstripped stripped
for target in $targets; do
  printf '%-32s %12s %12s\n' "$target" \
    "$(stat -c %s "$target_root/$target/$profile_dir/edgeflow")" \
    "$(stat -c %s "$target_root/cross/$target/edgeflow")"
done

# --- 3. the ARM binaries under qemu ---------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A deterministic sample touching every example pipeline kind: forecasts (with a few spikes
# for the anomaly detector), regression, classification, and the operators' climate topics.
awk -v steps="$steps" 'BEGIN {
  t0 = 1700000000000
  for (i = 0; i < steps; i++) {
    ts = t0 + i * 60000
    for (s = 0; s < 4; s++) {
      v = 20 + s + 3 * sin(i / 7) + 0.5 * sin(i * 1.7 + s)
      printf "{\"topic\":\"sensors/s%02d/temperature\",\"payload\":{\"ts\":%.0f,\"value\":%.4f}}\n", s, ts, v
      kwh = 1.5 + 0.8 * sin(i * 0.2618 + s) + ((i + s) % 97 == 60 ? 6 : 0)
      printf "{\"topic\":\"meters/m%d/energy\",\"payload\":{\"ts\":%.0f,\"kwh\":%.4f}}\n", s, ts, kwh
      out = 5 + 10 * sin(i / 40 + s); mod = 40 + 30 * sin(i / 11 + s * 0.3)
      flow = 30 + 0.35 * mod - 0.6 * out + 0.3 * sin(i * 3.1)
      printf "{\"topic\":\"site/h%d/telemetry\",\"payload\":{\"ts\":%.0f,\"outdoor\":%.3f,\"modulation\":%.2f,\"flow\":%.3f}}\n", s, ts, out, mod, flow
      vib = 2 + 1.5 * sin(i / 5 + s); temp = 60 + 10 * sin(i / 9 + s); load = 0.5 + 0.4 * sin(i / 13 + s * 2)
      service = (vib * 0.8 + (temp - 60) * 0.1 + load > 2.6) ? "true" : "false"
      printf "{\"topic\":\"plant/l%d/machine\",\"payload\":{\"machine_id\":\"m%d\",\"vib_rms\":%.3f,\"temp\":%.2f,\"load\":%.3f,\"service\":%s}}\n", s, s, vib, temp, load, service
      tf = 68 + 4 * sin(i / 17 + s); rh = 45 + 10 * sin(i / 23 + s)
      printf "{\"topic\":\"site/b1/r%d/climate\",\"payload\":{\"ts\":%.0f,\"temp_f\":%.2f,\"rh\":%.1f}}\n", s, ts, tf, rh
    }
  }
}' >"$work/sample.jsonl"
echo "replay sample: $(wc -l <"$work/sample.jsonl") messages"

configs=(configs/*.toml)
replay_all() { # replay_all DIR RUNNER... : every config's replay output and JSON summary
  local dir=$1 config name
  shift
  mkdir -p "$dir"
  for config in "${configs[@]}"; do
    name=$(basename "$config" .toml)
    RUST_LOG=off "$@" replay --config "$config" --input "$work/sample.jsonl" \
      --summary "$dir/$name.summary.json" >"$dir/$name.out" 2>"$dir/$name.stderr"
  done
}
timed "host replay of ${#configs[@]} configs" replay_all "$work/host" "$host_bin"
# glibc on x86_64 picks FMA versions of exp/log/pow at run time (ifunc) when the CPU has FMA,
# as aarch64 always does; armv7 has no FMA. Their results can differ in the last bit, so the
# logistic model's probabilities (exp) may print differently. A second host replay with
# glibc's FMA variants masked tells that apart from a real cross-compilation problem.
nofma="glibc.cpu.hwcaps=-AVX2_Usable,-FMA_Usable,-AVX2,-FMA"
if [ "$(uname -m)" = x86_64 ]; then
  GLIBC_TUNABLES=$nofma replay_all "$work/host-nofma" "$host_bin"
fi

failed=0
notes=()
for target in $targets; do
  qemu=$(qemu_binary "$target")
  sysroot=/usr/$(tool_prefix "$target")
  run=("$qemu" -L "$sysroot" "$target_root/cross/$target/edgeflow")
  log "$target under $qemu"
  "${run[@]}" --version
  for config in "${configs[@]}"; do
    if ! "${run[@]}" check --config "$config" >"$work/check.out" 2>&1; then
      cat "$work/check.out"
      echo "FAIL: $target: edgeflow check $config"
      failed=1
    fi
  done
  echo "edgeflow check: ${#configs[@]} configs checked"
  timed "$target replay of ${#configs[@]} configs (qemu)" replay_all "$work/$target" "${run[@]}"
  for config in "${configs[@]}"; do
    name=$(basename "$config" .toml)
    for file in "$name.out" "$name.summary.json"; do
      if cmp -s "$work/host/$file" "$work/$target/$file"; then
        printf '  %-28s identical (%s bytes)\n' "$file" "$(stat -c %s "$work/host/$file")"
      elif [[ $file == *.summary.json ]] &&
        cmp -s <(grep -v '"memory_bytes"' "$work/host/$file") <(grep -v '"memory_bytes"' "$work/$target/$file"); then
        # A recommender's heap bytes depend on the pointer width (32-bit armv7 vs 64-bit).
        printf '  %-28s identical but for memory_bytes (pointer width)\n' "$file"
      elif [ -f "$work/host-nofma/$file" ] && cmp -s "$work/host-nofma/$file" "$work/$target/$file"; then
        printf '  %-28s identical to the host build without FMA (%s bytes)\n' "$file" \
          "$(stat -c %s "$work/$target/$file")"
        echo "    differs from the FMA host run in $(diff "$work/host/$file" "$work/$target/$file" | grep -c '^<') line(s):"
        diff <(tr ',' '\n' <"$work/host/$file") <(tr ',' '\n' <"$work/$target/$file") | head -4 | sed 's/^/      /' || true
        notes+=("$target: $file matches the host only with glibc's FMA exp/log masked (GLIBC_TUNABLES=$nofma): last-bit libm differences, not a build problem")
      else
        echo "FAIL: $target: replay output $file differs from the host build's:"
        diff <(tr ',' '\n' <"$work/host/$file") <(tr ',' '\n' <"$work/$target/$file") | head -20 || true
        failed=1
      fi
    done
  done
done

for target in $lib_tests; do
  log "$target: library unit tests under qemu ($profile)"
  timed "$target lib tests build + run (qemu)" \
    cargo test --locked --profile "$profile" --target "$target" --lib "${cargo_args[@]}" \
    || failed=1
done

log "timings"
printf '%s\n' "${timings[@]}"
if [ ${#notes[@]} -gt 0 ]; then
  log "notes"
  printf '%s\n' "${notes[@]}"
fi
[ "$failed" = 0 ] || die "some cross checks failed (see FAIL lines above)"
log "cross builds OK: stripped binaries in $target_root/cross/<target>/edgeflow"
