"""How fast JMA telegrams are read, against lxml parsing the same bytes in the same run.

    .venv/bin/python bench/jma.py            # a few seconds

``lxml.etree.fromstring`` is the floor: every telegram is XML, so ``jma.telegram.parse``'s cost above it
is what reading the statements and their levels adds; ``parse + map`` adds the area mapping. Input: the
readable sample telegrams of ``../shared/data/jma/samples`` (the types Sonae reads). Rounds alternate the
three so they see the same machine load; the best round of each counts. Prints telegrams/s and ratios.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lxml import etree  # noqa: E402

from jma.areas import map_statement  # noqa: E402
from jma.telegram import TelegramError, parse  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "data" / "jma" / "samples"


def main() -> int:
    telegrams = []
    for path in sorted(SAMPLES.glob("*.xml")):
        data = path.read_bytes()
        try:
            parse(data)
        except TelegramError:
            continue
        telegrams.append(data)
    if not telegrams:
        print(f"no readable telegrams in {SAMPLES}", file=sys.stderr)
        return 2

    def floor() -> None:
        for data in telegrams:
            etree.fromstring(data)

    def read() -> None:
        for data in telegrams:
            parse(data)

    def read_map() -> None:
        for data in telegrams:
            for statement in parse(data).statements:
                map_statement(statement)

    runs: dict[str, Callable[[], None]] = {"lxml fromstring": floor, "parse": read, "parse + map": read_map}
    best = {name: float("inf") for name in runs}
    for _ in range(7):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(5):
                run()
            best[name] = min(best[name], (time.perf_counter() - start) / 5)
    base = best["lxml fromstring"]
    print(f"{len(telegrams)} telegrams ({sum(map(len, telegrams)) / 1e6:.2f} MB), best of 7 rounds")
    for name, seconds in best.items():
        print(f"{name:16s} {len(telegrams) / seconds:9.0f} telegrams/s  {seconds / base:5.2f}x lxml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
