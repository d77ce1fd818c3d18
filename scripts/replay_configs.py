#!/usr/bin/env python3
"""Replay every shipped config (configs/*.toml) on generated input with one or two binaries,
and say whether their outputs are byte-identical.

A refactor that must not change behaviour (issue 13, point 5) is checked with

    python3 scripts/replay_configs.py --edgeflow OLD --compare NEW

The input of a config is generated from its pipelines: for each MQTT topic filter, topics with
`+` replaced by a few device ids (`#` by one level), payloads with every field pointer set
(numbers from a seasonal series, strings where a model reads a label or an item), the key
pointer and the time pointer; SenML packs for `senml` pipelines, bare numbers for `number`
ones, and the recommend pipelines' request topics. Deterministic: same config, same input.
"""

import argparse
import hashlib
import math
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
import json
from datetime import datetime, timezone

ROOT = Path(__file__).resolve().parent.parent
DEVICES = 4
STEPS = 150


def set_pointer(obj, pointer, value):
    """Set the value at RFC 6901 `pointer` in nested dicts (created on the way)."""
    if pointer in ("", "/"):
        return value
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]
    node = obj
    for token in tokens[:-1]:
        node = node.setdefault(token, {})
    node[tokens[-1]] = value
    return obj


def topics_of(filter_, device):
    if filter_.startswith("$share/"):
        filter_ = filter_.split("/", 2)[2]
    levels = [f"d{device}" if lvl == "+" else ("x" if lvl == "#" else lvl) for lvl in filter_.split("/")]
    return "/".join(levels)


def string_fields(model):
    """Fields a model reads as strings, with the values to cycle through."""
    kind = model.get("kind")
    out = {}
    if kind == "classification":
        out[model["target"]] = (model.get("positive", ["true"])[:1] + model.get("negative", ["false"])[:1])
    if kind == "recommend":
        out[model["item"]] = [f"item{i}" for i in range(7)]
        weights = model.get("event_weights")
        if weights and model.get("weight"):
            out[model["weight"]] = sorted(weights)
    return out


def value(step, device, j):
    t = step / 6.0
    return round(20 + 3 * device + 5 * math.sin(t + j) + 0.7 * math.sin(2.3 * t + device) + (step % 7) * 0.1, 4)


def rfc3339(ms):
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def lines_for(config):
    lines = []
    pipelines = config.get("pipelines", [])
    for step in range(STEPS):
        for p in pipelines:
            if "from" in p:
                continue
            fmt = p.get("format", "json")
            model = p.get("model", {})
            strings = string_fields(model)
            fields = p.get("fields", {})
            for device in range(DEVICES):
                for filter_ in p.get("topics", []):
                    topic = topics_of(filter_, device)
                    ts = 1_700_000_000_000 + step * 60_000 + device
                    if fmt == "number":
                        payload = str(value(step, device, 0))
                    elif fmt == "senml":
                        records = [{"n": name.strip("/"), "v": value(step, device, j)}
                                   for j, name in enumerate(["voltage", "current", "power"])]
                        records[0]["bn"] = f"urn:dev:d{device}:"
                        records[0]["bt"] = ts / 1000
                        payload = records
                    else:
                        payload = {}
                        for j, (name, pointer) in enumerate(sorted(fields.items())):
                            if name in strings:
                                choices = strings[name]
                                v = choices[(step * 3 + device + j) % len(choices)]
                            else:
                                v = value(step, device, j)
                            payload = set_pointer(payload, pointer, v)
                        key = p.get("key", "topic")
                        if key.startswith("/"):
                            payload = set_pointer(payload, key, f"k{device}")
                        time = p.get("time")
                        if time:
                            unit = p.get("time_unit", "auto")
                            stamp = {"s": ts // 1000, "rfc3339": rfc3339(ts)}.get(unit, ts)
                            payload = set_pointer(payload, time, stamp)
                    lines.append({"topic": topic, "payload": payload})
            for request in model.get("requests", []) if step % 10 == 9 else []:
                lines.append({"topic": topics_of(request, 0), "payload": {"user": "k1", "item": "item3"}})
    return "\n".join(json.dumps(line, separators=(",", ":")) for line in lines) + "\n"


def replay(binary, config_path, input_path, workdir):
    """stdout of `edgeflow replay`, with the config's data_dir moved into workdir."""
    text = Path(config_path).read_text()
    moved = Path(workdir) / Path(config_path).name
    moved.write_text(text)
    result = subprocess.run(
        [binary, "replay", "--config", str(moved), "--input", str(input_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir, timeout=300,
    )
    if result.returncode != 0:
        sys.exit(f"{binary} replay {config_path} failed ({result.returncode}):\n{result.stderr.decode()}")
    return result.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edgeflow", default=str(ROOT / "target/release/edgeflow"))
    ap.add_argument("--compare", help="a second binary: outputs must be byte-identical")
    ap.add_argument("--configs", default=str(ROOT / "configs"))
    args = ap.parse_args()
    differ = 0
    for config_path in sorted(Path(args.configs).glob("*.toml")):
        config = tomllib.loads(config_path.read_text())
        with tempfile.TemporaryDirectory() as work:
            input_path = Path(work) / "input.jsonl"
            input_path.write_text(lines_for(config))
            outputs = []
            for binary in [str(Path(b).resolve()) for b in [args.edgeflow] + ([args.compare] if args.compare else [])]:
                with tempfile.TemporaryDirectory() as run_dir:
                    outputs.append(replay(binary, config_path, input_path, run_dir))
        digest = hashlib.sha256(outputs[0]).hexdigest()[:16]
        count = outputs[0].count(b"\n")
        verdict = ""
        if args.compare:
            same = outputs[0] == outputs[1]
            differ += not same
            verdict = "identical" if same else f"DIFFERENT ({hashlib.sha256(outputs[1]).hexdigest()[:16]})"
        print(f"{config_path.name:24} {count:6} outputs  sha256 {digest}  {verdict}")
    if differ:
        sys.exit(f"{differ} config(s) replay differently")


if __name__ == "__main__":
    main()
