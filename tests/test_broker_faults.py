"""Nothing lost across broker restarts, broker outages, connection cuts and database outages (issue #23).

Real processes throughout (see ``tests/fault_harness.py``): Mosquitto with Sonae's configuration,
``sonae ingest`` subprocesses with the default settings (and two with ``ingest.partition``), an
independent paho MQTT 5 publisher recording every PUBACK, a TCP proxy for cuts. Modest counts keep
each trial well under a minute; ``bench/broker_faults.py`` runs the 20,000-reading versions.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import pytest

from tests.fault_harness import (
    Rig,
    Trial,
    fault_broker_down,
    fault_broker_restarts,
    fault_connection_cuts,
    fault_database_down,
)

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
                                reason="mosquitto is not installed (apt-get install mosquitto)")

NO_SUBSCRIBERS = "0x10"


def _assert_nothing_lost(trial: Trial) -> None:
    result = trial.result()
    assert trial.stored == trial.distinct == trial.published, result
    assert trial.duplicates == 0, result
    assert NO_SUBSCRIBERS not in trial.pubacks, f"devices were told nobody received their readings: {result}"
    assert set(trial.pubacks) == {"0x00"}, result
    assert trial.peak_unacked <= trial.max_inflight and trial.peak_inbox <= trial.max_inflight, result


@pytest.mark.parametrize("ingestors", [1, 2], ids=["default", "two-partitions"])
async def test_broker_restarted_twice(database_url: str, pool: object, tmp_path: Path, ingestors: int) -> None:
    async with Rig(workdir=tmp_path, database_url=database_url, ingestors=ingestors) as rig:
        trial = await rig.run("broker restarted twice", readings=1800, rate=300, faults=fault_broker_restarts)
    _assert_nothing_lost(trial)


async def test_broker_down_8_s(database_url: str, pool: object, tmp_path: Path) -> None:
    """Down longer than the ingestor's reconnect backoff takes to reach its 5 s cap (0.2 s doubling)."""
    async with Rig(workdir=tmp_path, database_url=database_url) as rig:
        trial = await rig.run("broker down 8 s", readings=2400, rate=200,
                              faults=partial(fault_broker_down, seconds=8))
    _assert_nothing_lost(trial)


async def test_twenty_connection_cuts(database_url: str, pool: object, tmp_path: Path) -> None:
    async with Rig(workdir=tmp_path, database_url=database_url, mqtt_via_proxy=True) as rig:
        trial = await rig.run("20 connection cuts", readings=2000, rate=300,
                              faults=partial(fault_connection_cuts, cuts=20))
    assert rig.mqtt_proxies[0].cuts == 20
    _assert_nothing_lost(trial)
    assert trial.connections and trial.connections[0] >= 21, "every cut was followed by a reconnect"


async def test_database_outage_keeps_memory_bounded_and_the_connection_up(database_url: str, pool: object,
                                                                         tmp_path: Path) -> None:
    """A 12 s database outage, past the broker's 7.5 s keep-alive deadline (1.5 times the 5 s keep-alive, its
    smallest setting), with the unacknowledged limit at 200: the
    ingestor keeps its broker connection (keep-alive answered), never holds more than 200 messages,
    and stores everything once the database is back."""
    try:
        rig = Rig(workdir=tmp_path, database_url=database_url, max_inflight=200, keepalive_s=5, via_db_proxy=True)
        async with rig:
            trial = await rig.run("database down 12 s, limit 200", readings=1200, rate=100,
                                  faults=partial(fault_database_down, seconds=12))
    except RuntimeError as exc:
        pytest.skip(str(exc))
    _assert_nothing_lost(trial)
    assert trial.peak_unacked >= 150, "the outage filled the window (else the bound was not tested)"
    assert trial.connections == [1], "the broker connection survived the outage (keep-alive answered)"
