"""A negative zero from outside is stored as 0.0 (sonae.numbers): readings of devices (ingest.contract) and the
station registry's files (ingest.registry); the API's bodies: tests/api/test_api_station_edit.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ingest.contract import Parser
from ingest.registry import load_stations
from sonae.numbers import unsigned

ZEROS = ["-0.0", "-1e-400", "-0e5", "-0.000"]


def _positive_zero(value: float) -> bool:
    return value == 0.0 and math.copysign(1.0, value) == 1.0


def test_unsigned_changes_only_the_negative_zero() -> None:
    assert _positive_zero(unsigned(-0.0)) and _positive_zero(unsigned(0.0))
    for value in (1.5, -1.5, 5e-324, -5e-324, math.inf, -math.inf):
        assert unsigned(value) == value and math.copysign(1.0, unsigned(value)) == math.copysign(1.0, value)
    assert math.isnan(unsigned(math.nan))


@pytest.mark.parametrize("zero", ZEROS)
def test_a_reading_of_negative_zero_is_zero(zero: str) -> None:
    now = 1764379200
    for kind, payload in (("level", f'{{"ts": {now}, "value": {zero}}}'),
                          ("level", f'{{"ts": {now}, "value": {zero}, "unit": "cm"}}'),
                          ("rain", f'{{"ts": {now}, "value": {zero}}}'),
                          ("senml", f'[{{"bt": {now}, "n": "level", "u": "m", "v": {zero}}}]')):
        try:
            parsed = Parser().parse(f"sonae/v1/072036/akutsu/{kind}", payload.encode())
        except ValueError as exc:  # (a payload form this deployment's contract refuses: not the point here)
            pytest.fail(f"{kind} {payload}: {exc}")
        assert parsed.readings and all(_positive_zero(r.value) for r in parsed.readings), (kind, parsed.readings)


@pytest.mark.parametrize("zero", ZEROS)
def test_a_registry_threshold_of_negative_zero_is_zero(tmp_path: Path, zero: str) -> None:
    path = tmp_path / "stations.csv"
    # a 0 m threshold needs a gauge without the 0 m 欠測 sentinel (ingest.registry.MISSING_RULE)
    path.write_text(f"id,name,municipality_code,th_standby,lat,lon,missing_at_or_below\n"
                    f"g1,Gauge,072036,{zero},37.4,{zero},none\n", encoding="utf-8")
    [station] = load_stations(path)
    assert _positive_zero(station.th_standby) and _positive_zero(station.lon)  # type: ignore[arg-type]
