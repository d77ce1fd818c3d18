#!/usr/bin/env bash
# Runs the property ("fuzz") tests — every unit test named fuzz_* — for a time budget with many
# cases per round, each round with a new seed. Prints rounds, cases run per target and crashes
# (failed cases); exits non-zero on the first failing round.
#
#   scripts/fuzz.sh [SECONDS] [CASES_PER_ROUND]     (defaults: 300 s, 2000 cases)
#
# Not on CI's critical path: `cargo test` runs the same targets with a few cases. A failure
# prints the (shrunk) input; fix the bug and keep the input as a plain regression test.
set -euo pipefail
cd "$(dirname "$0")/.."

budget=${1:-300}
cases=${2:-2000}

# Build once; the test binary is run directly so rounds do not pay for cargo.
bin=$(cargo test --release --lib --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
if [[ -z "$bin" || ! -x "$bin" ]]; then
  echo "fuzz.sh: could not build the library's test binary" >&2
  exit 2
fi
targets=$("$bin" --list fuzz 2>/dev/null | sed -n 's/: test$//p')
count=$(wc -l <<<"$targets")
echo "fuzz.sh: $count targets, $cases cases per round, budget ${budget}s"

start=$SECONDS
rounds=0
while (( SECONDS - start < budget )); do
  rounds=$((rounds + 1))
  # proptest draws a fresh random seed per run unless told otherwise.
  if ! PROPTEST_CASES=$cases "$bin" fuzz --test-threads 2 -q >/tmp/edgeflow-fuzz.$$ 2>&1; then
    cat /tmp/edgeflow-fuzz.$$
    rm -f /tmp/edgeflow-fuzz.$$
    echo "fuzz.sh: CRASH in round $rounds after $(( (rounds - 1) * cases )) cases per target"
    exit 1
  fi
  rm -f /tmp/edgeflow-fuzz.$$
done
echo "fuzz.sh: $rounds rounds in $((SECONDS - start))s: $((rounds * cases)) cases per property target ($count targets; the plain fuzz_* tests run once a round), 0 crashes"
