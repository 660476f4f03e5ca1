"""How fast the message contract parses, against ``json.loads`` of the same bytes in the same run.

    .venv/bin/python bench/parser.py            # about 20 seconds
    .venv/bin/python bench/parser.py --quick

``json.loads`` is the floor: every payload is JSON, so the parser's cost above it is what validation,
unit conversion, time parsing and SenML resolution add. Rounds alternate the two so both see the same
machine load; the best round of each counts. Payloads: a ``level`` reading, a ``telemetry`` message,
a SenML pack of 101 records with base fields, and malformed messages (huge numbers, lists where
strings go, cut-short JSON) that end as dead letters.

``--ref REV`` also measures ``ingest/contract.py`` as it is at git revision ``REV`` (e.g. ``main``),
in the same rounds: the ratio of this parser to that one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.contract import Parser, encode_reading  # noqa: E402


def payloads(now: datetime) -> dict[str, tuple[str, list[bytes]]]:
    iso = now.isoformat().replace("+00:00", "Z")
    pack = [{"bn": "g1/", "bt": now.timestamp() - 6000, "bu": "m", "bv": 3.0, "n": "level", "v": 0.42}]
    pack += [{"n": "level", "t": 60 * i, "v": 0.4 + i / 1000} for i in range(1, 101)]
    bad = [b'{"ts":"%s","value":1%s}' % (iso.encode(), b"0" * 309), b'{"ts":"%s","value":%s}' % (iso.encode(), b"9" * 5000),
           b'{"ts":"%s","value":1.0,"unit":["m"]}' % iso.encode(), b'{"ts":"%s","value":1.0' % iso.encode()]
    return {
        "level": ("sonae/v1/072036/g1/level", [encode_reading(value=3.42, ts=now, seq=17)]),
        "telemetry": ("sonae/v1/072036/g1/telemetry",
                      [json.dumps({"ts": iso, "battery_pct": 87, "battery_v": 3.61, "rssi_dbm": -71,
                                   "temperature_c": 12.5, "status": "ok"}).encode()]),
        "senml_101": ("sonae/v1/072036/g1/senml", [json.dumps(pack).encode()]),
        "malformed": ("sonae/v1/072036/g1/level", bad),
    }


def json_floor(item: bytes) -> object:
    """``json.loads``, its errors caught (bare, it raises on a 5,000-digit integer: the fault the parser handles)."""
    try:
        return json.loads(item)
    except ValueError as exc:
        return exc


def contract_at(rev: str) -> ModuleType:
    """``ingest/contract.py`` as it is at git revision ``rev``, loaded as a module of its own."""
    source = subprocess.run(["git", "show", f"{rev}:ingest/contract.py"], cwd=ROOT, check=True,
                            capture_output=True).stdout
    path = Path(tempfile.mkdtemp()) / "contract_at_ref.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("contract_at_ref", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["contract_at_ref"] = module
    spec.loader.exec_module(module)
    return module


def best_per_message(fn: Callable[[bytes], object], items: list[bytes], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        for item in items:
            fn(item)
    return (time.perf_counter() - start) / (number * len(items))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ref", help="also measure ingest/contract.py at this git revision (e.g. main)")
    args = ap.parse_args()
    rounds, budget = (3, 0.1) if args.quick else (10, 0.5)
    now = datetime.now(UTC)
    parsers: dict[str, Any] = {"parse": Parser()}
    if args.ref:
        parsers[f"parse@{args.ref}"] = contract_at(args.ref).Parser()
    results: dict[str, dict[str, float]] = {}
    for name, (topic, items) in payloads(now).items():
        fns: dict[str, Callable[[bytes], object]] = {"json.loads": json_floor}
        for label, parser in parsers.items():
            def parse(item: bytes, topic: str = topic, parser: Any = parser) -> object:
                try:
                    return parser.parse(topic, item, now=now)
                except Exception as exc:  # PayloadError, or what an older parser raised instead
                    return exc
            fns[label] = parse
        probe = best_per_message(fns["parse"], items, 1)
        number = max(1, int(budget / max(probe * len(items), 1e-7)))
        best = dict.fromkeys(fns, float("inf"))
        for _ in range(rounds):  # alternate, so every function sees the same machine load
            for label, fn in fns.items():
                best[label] = min(best[label], best_per_message(fn, items, number))
        row = {f"{label}_us": round(t * 1e6, 2) for label, t in best.items()}
        row["parse/json.loads"] = round(best["parse"] / best["json.loads"], 2)
        if args.ref:
            row[f"parse/parse@{args.ref}"] = round(best["parse"] / best[f"parse@{args.ref}"], 2)
        results[name] = row
        print(f"{name:10s} " + "  ".join(f"{k} {v}" for k, v in row.items()))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
