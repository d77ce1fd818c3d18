#!/usr/bin/env python3
"""Input for `edgeflow replay` with many keys, and the config it is replayed with.

Writes `--rounds` rounds of one reading per key (`--keys` keys), key after key in each round,
so with more keys than fit in memory every key comes back after it was passivated: the worst
case for the bounded replay (BENCHMARKS.md, "Memory budget under key churn").

    python3 benches/replay_keys.py --keys 1000000 --rounds 2 --out /tmp/keys-1m.jsonl
    /usr/bin/time -v target/release/edgeflow replay --config benches/replay_keys.toml \\
        --input /tmp/keys-1m.jsonl > /dev/null

    # 1M readings over 10,000 keys (the replay bench's shape), through the binary:
    python3 benches/replay_keys.py --keys 10000 --rounds 100 --out /tmp/keys-10k.jsonl

Values are a deterministic per-key sine with a little pseudo-random noise (no dependency).
"""

import argparse
import math


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    state = 0x2545F4914F6CDD1D
    with open(args.out, "w", buffering=1 << 20) as out:
        for round_no in range(args.rounds):
            ts = 1_700_000_000_000 + round_no * 1000
            phase = math.sin(round_no / 10.0)
            lines = []
            for key in range(args.keys):
                # xorshift64: noise in [-0.5, 0.5)
                state ^= (state << 13) & 0xFFFFFFFFFFFFFFFF
                state ^= state >> 7
                state ^= (state << 17) & 0xFFFFFFFFFFFFFFFF
                noise = (state >> 11) / float(1 << 53) - 0.5
                value = 20.0 + (key % 50) * 0.1 + 3.0 * phase + noise
                lines.append(
                    f'{{"topic":"sensors/k{key}/temperature","payload":{{"ts":{ts},"value":{value:.3f}}}}}\n'
                )
                if len(lines) >= 100_000:
                    out.writelines(lines)
                    lines.clear()
            out.writelines(lines)


if __name__ == "__main__":
    main()
