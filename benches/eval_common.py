"""Shared helpers of the forecast evaluation scripts (benches/m4_eval.py, benches/forecast_real.py).

Not a script: finding the edgeflow binary, `--param key=value` model parameters (values parsed
as TOML), writing `[pipelines.model]`, `edgeflow check`, and running `edgeflow replay` with its
stdout streamed line by line (the output of a multi-step forecast pipeline can be hundreds of
MB, so it is never held in memory and only the lines a caller asks for are JSON-parsed).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parent.parent
# The shared release build first (the one the evaluation is about), then this checkout's own.
DEFAULT_EDGEFLOW = (Path("/work/main/target/release/edgeflow"),
                    REPO / "target" / "release" / "edgeflow")

# The payload's `key` field (the second field of every output message; the topic before it
# cannot contain `"key":"` because quotes inside a JSON string are escaped).
_KEY_RE = re.compile(rb'"key":"((?:[^"\\]|\\.)*)"')


def die(tool: str, msg: str) -> None:
    sys.exit(f"{tool}: error: {msg}")


def find_edgeflow(arg: str | None, tool: str) -> Path:
    """The edgeflow binary: --edgeflow PATH, else the first of DEFAULT_EDGEFLOW that exists."""
    if arg:
        p = Path(arg)
        if not (p.is_file() and os.access(p, os.X_OK)):
            die(tool, f"--edgeflow {arg} is not an executable file")
        return p
    for p in DEFAULT_EDGEFLOW:
        if p.is_file() and os.access(p, os.X_OK):
            return p
    die(tool, "no edgeflow binary: looked for "
        + " and ".join(str(p) for p in DEFAULT_EDGEFLOW)
        + f".\nBuild one with:\n    cd {REPO} && cargo build --release\nor pass --edgeflow PATH.")
    raise AssertionError  # unreachable


# --------------------------------------------------------------------------------------------
# Model parameters


def toml_value(v) -> str:
    """A Python value as TOML text (for the values the scripts themselves set)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(i) for i in v) + "]"
    raise TypeError(f"no TOML form for {v!r}")


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def parse_params(items: Iterable[str], tool: str) -> dict[str, str]:
    """`--param key=value` arguments → {key: TOML text of the value}, in the given order.

    The value is TOML (`season=[24,168]`, `min=0`, `season='"1d"'`); a value that is not valid
    TOML is taken as a string when it is a plain word (`season=1d` → "1d")."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not _BARE_KEY.match(key) or not raw:
            die(tool, f"--param {item!r}: expected key=value (key [A-Za-z0-9_-]+, value TOML)")
        try:
            tomllib.loads(f"v = {raw}")
        except tomllib.TOMLDecodeError as e:
            if re.fullmatch(r"[A-Za-z0-9_.:-]+", raw):
                raw = json.dumps(raw)
            else:
                die(tool, f"--param {item!r}: the value is not TOML ({e})")
        out[key] = raw
    return out


def param_value(params: dict[str, str], key: str):
    """The Python value of a --param (None when not given)."""
    if key not in params:
        return None
    return tomllib.loads(f"v = {params[key]}")["v"]


def model_section(defaults: dict, params: dict[str, str]) -> list[str]:
    """`[pipelines.model]` lines: the script's own settings (Python values), each overridden by a
    --param of the same key, then the remaining --params in their order."""
    lines = ["[pipelines.model]"]
    for k, v in defaults.items():
        lines.append(f"{k} = {params[k]}" if k in params else f"{k} = {toml_value(v)}")
    lines += [f"{k} = {v}" for k, v in params.items() if k not in defaults]
    return lines


def describe_model(defaults: dict, params: dict[str, str]) -> str:
    """The model settings in one line, for the reports."""
    return ", ".join(line for line in model_section(defaults, params)[1:])


# --------------------------------------------------------------------------------------------
# Running edgeflow


def check_config(exe: Path, cfg: Path, tool: str) -> None:
    r = subprocess.run([str(exe), "check", "--config", str(cfg)], capture_output=True, text=True)
    if r.returncode != 0:
        die(tool, f"`edgeflow check` rejects the generated config {cfg} (exit {r.returncode}):\n"
            + (r.stderr.strip() or r.stdout.strip())
            + "\n(a --param this binary does not accept?) The generated config:\n"
            + cfg.read_text())


@dataclass
class Replay:
    seconds: float  # wall time of the replay process, including our reading of its stdout
    lines: int  # output lines
    summary: dict  # the --summary JSON


def run_replay(exe: Path, cfg: Path, inp: Path, summary: Path, on_line: Callable[[bytes], None],
               tool: str) -> Replay:
    """`edgeflow replay`, calling on_line(raw line) for every stdout line as it arrives."""
    summary.unlink(missing_ok=True)
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [str(exe), "replay", "--config", str(cfg), "--input", str(inp),
             "--summary", str(summary)],
            stdout=subprocess.PIPE, stderr=err, bufsize=1 << 20)
        n = 0
        try:
            for line in proc.stdout:
                n += 1
                on_line(line)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        rc = proc.wait()
        seconds = time.perf_counter() - t0
        err.seek(0)
        stderr = err.read().decode(errors="replace").strip()
    if rc != 0:
        die(tool, f"`edgeflow replay --config {cfg} --input {inp}` failed (exit {rc}):\n"
            + "\n".join(stderr.splitlines()[-15:]))
    try:
        data = json.loads(summary.read_text())
    except (OSError, ValueError) as e:
        die(tool, f"no readable replay summary {summary}: {e}")
    return Replay(seconds, n, data)


def pipeline_summary(rep: Replay, name: str, tool: str) -> dict:
    for p in rep.summary.get("pipelines", []):
        if p.get("name") == name:
            return p
    die(tool, f"pipeline {name} missing from the replay summary")
    raise AssertionError


def line_key(line: bytes) -> str:
    """The `key` of an output line, without parsing the whole (possibly large) line."""
    m = _KEY_RE.search(line, 0, 1024)
    if m:
        return json.loads(b'"' + m.group(1) + b'"')
    return str(json.loads(line)["payload"]["key"])


# --------------------------------------------------------------------------------------------
# Formatting


def num(v) -> float:
    """A JSON number or null as a float (null → NaN)."""
    return math.nan if v is None else float(v)


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}f}"


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def environment(exe: Path, extra: str = "") -> str:
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
    src = exe.resolve().parent.parent.parent  # <repo>/target/release/edgeflow → <repo>
    try:
        rev = subprocess.run(["git", "-C", str(src), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return (f"CPU {cpu} ({os.cpu_count()} logical), Python {platform.python_version()}"
            f"{extra}, edgeflow `{exe}` (built {built}, its tree at {rev})")


def json_safe(v):
    """NaN/±Inf → None, recursively (JSON has no NaN)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v
