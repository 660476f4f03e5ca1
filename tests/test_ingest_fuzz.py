"""A fuzzed stream through the real pipeline: ``sonae ingest`` (a process), a real broker, a real PostgreSQL.

About 2,000 generated malformed payloads, each malformed by construction (numbers beyond a float or an
int, lists and objects where strings go, bad times and units, cut-short JSON, bytes that are not UTF-8,
deep nesting, oversized payloads, broken SenML, bad topics), interleaved with 2,100 known-good
readings (plain JSON and SenML packs with base values). Checked against the stream itself: the
process stays alive, every good reading is stored exactly once with its value, every malformed message
is a dead letter with a reason (found by its SHA-256), none is an ``internal_error``, and the process's
memory stays under a generous bound.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from ingest.contract import topic_for
from sonae.config import Settings
from tests.ingest_support import count, publish_all, publish_raw, readings_for, register, wait_until

SEED = 20261129
MAX_PAYLOAD = 65536
STATIONS = ["f1", "f2", "f3", "f4"]
SENML_STATION = "f5"
#: RSS growth allowed over the whole stream (measured: about 6 MB; the stream itself is about 6 MB)
RSS_GROWTH_BOUND_MB = 100

HUGE = ["1" + "0" * 309, "9" * 5000, "-" + "9" * 400, "1e309", "-1e999", "NaN", "Infinity", "-Infinity"]
NOT_NUMBERS = ['[1.0]', '{"v": 1.0}', '"3.4"', "null", "true", "[" * 600 + "]" * 600]
BAD_TIMES = ["1" + "0" * 309, "1" + "0" * 300, "9" * 5000, '"0001-01-01T00:00:00+01:00"',
             '"9999-12-31T23:59:59-01:00"', '["2026-01-01T00:00:00Z"]', '{"t": 1}', '"yesterday"',
             '"0001-01-01T00:00:00"', "null", "true", "-1", "946684799"]
BAD_UNITS = ['["m"]', '{"m": 1}', '"ft"', "5", "null", '["mm", "m"]']
BAD_STATUS = ['["ok"]', '{"ok": 1}', '"on fire"', "2", "null"]
BAD_SEQ = ["9" * 5000, "-1", "1.5", '"x"', "[1]"]
BAD_EXERCISE = ['"yes"', "1", "[true]", "{}"]


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def malformed(rng: random.Random, i: int, prefix: str, now: datetime) -> tuple[str, bytes]:
    """One message malformed by construction; ``i`` makes it unique."""
    station = rng.choice(STATIONS)
    level = topic_for(prefix, "072036", station, "level")
    ts = f'"{_iso(now - timedelta(minutes=rng.randint(1, 600)))}"'
    family = i % 16
    if family == 0:
        body = f'{{"n":{i},"ts":{ts},"value":{rng.choice(HUGE + NOT_NUMBERS)}}}'
    elif family == 1:
        body = f'{{"n":{i},"ts":{rng.choice(BAD_TIMES)},"value":1.5}}'
    elif family == 2:
        body = f'{{"n":{i},"ts":{ts},"value":1.5,"unit":{rng.choice(BAD_UNITS)}}}'
    elif family == 3:
        return (topic_for(prefix, "072036", station, "telemetry"),
                f'{{"n":{i},"ts":{ts},"status":{rng.choice(BAD_STATUS)}}}'.encode())
    elif family == 4:
        rec = rng.choice([f'{{"n":"level","v":{rng.choice(HUGE + NOT_NUMBERS)}}}',
                          f'{{"bt":{rng.choice(["1" + "0" * 309, "1e309", "9" * 5000])},"n":"level","v":1}}',
                          f'{{"n":"status","vs":{rng.choice(BAD_STATUS)}}}',
                          '{"bver":11,"n":"level","v":1}', '{"bn":"a\\n/","n":"level","v":1}',
                          '{"n":"level","v":1,"calib_":2}', '{"n":"rain","s":3.5}', '{"n":["level"],"v":1}',
                          f'{{"n":"level","u":{rng.choice(BAD_UNITS)},"v":1}}'])
        return topic_for(prefix, "072036", station, "senml"), f'[{{"x":{i}}},{rec}]'.encode()
    elif family == 5:  # a good payload cut short: never valid JSON
        good = f'{{"n":{i},"ts":{ts},"value":1.5,"unit":"m"}}'.encode()
        return level, good[: rng.randint(len(str(i)) + 5, len(good) - 1)]
    elif family == 6:  # a byte that is never UTF-8
        good = f'{{"n":{i},"ts":{ts},"value":1.5}}'.encode()
        at = rng.randint(0, len(good))
        return level, good[:at] + bytes([rng.choice([0xFF, 0xFE, 0xC0, 0x80])]) + good[at:]
    elif family == 7:  # random bytes, led by one that is never UTF-8
        return level, b"\xfe" + str(i).encode() + rng.randbytes(rng.randint(0, 200))
    elif family == 8:
        depth = rng.randint(1000, 20000)
        return level, (f'{{"n":{i},"value":' + "[" * depth + "]" * depth + "}").encode()
    elif family == 9:
        body = f'{{"n":{i},"ts":{ts},"value":1.5,"seq":{rng.choice(BAD_SEQ)}}}'
    elif family == 10:
        body = f'{{"n":{i},"ts":{ts},"value":1.5,"exercise":{rng.choice(BAD_EXERCISE)}}}'
    elif family == 11:  # a topic outside the contract (under the prefix, so the ingestor receives it)
        topic = rng.choice([f"{prefix}/072036/{station}/pressure", f"{prefix}/072036/{station}",
                            f"{prefix}/07 2036/{station}/level", f"{prefix}/072036/{station}/level/x",
                            f"{prefix}/072036/bad station/level"])
        return topic, f'{{"n":{i},"ts":{ts},"value":1.5}}'.encode()
    elif family == 12:
        return level, f'[{{"n":{i},"value":1.5}},{{"ts":{ts},"value":{rng.choice(HUGE)}}}]'.encode()
    elif family == 13:
        return level, rng.choice([b"", b"[]", b'"text"', b"42", b"null"]) + b" " * (i % 97)
    elif family == 14 and i % 64 == 14:  # oversized (a few: they cost memory on purpose)
        return level, f'{{"n":{i},"pad":"'.encode() + b"x" * rng.randint(MAX_PAYLOAD, 4 * MAX_PAYLOAD) + b'"}'
    else:
        body = f'{{"n":{i},"ts":"{_iso(now + timedelta(days=rng.randint(1, 9000)))}","value":1.5}}'
    return level, body.encode()


def good_stream(prefix: str, now: datetime) -> tuple[list[tuple[str, bytes]], dict[tuple[str, str, datetime], float]]:
    """2,100 good readings: 1,900 plain JSON and 100 SenML packs of 2 records with base values."""
    messages: list[tuple[str, bytes]] = []
    expected: dict[tuple[str, str, datetime], float] = {}
    start = now - timedelta(hours=10)
    for i in range(1900):
        station = STATIONS[i % 4]
        ts = start + timedelta(seconds=10 * i)
        value = round(0.5 + (i * 7919 % 4500) / 1000, 3)
        unit, sent = ("cm", round(value * 100, 1)) if i % 5 == 0 else ("m", value)
        messages.append((topic_for(prefix, "072036", station, "level"),
                         json.dumps({"ts": _iso(ts), "value": sent, "unit": unit, "seq": i}).encode()))
        expected[(station, "level", ts)] = value
    for j in range(100):
        bt = (start + timedelta(minutes=5 * j)).timestamp()
        pack = [{"bn": f"{SENML_STATION}/", "bt": bt, "bu": "m", "bv": 3.0, "n": "level", "v": j / 1000},
                {"n": "level", "t": 60, "v": 0.5 + j / 1000}]
        messages.append((topic_for(prefix, "072036", SENML_STATION, "senml"), json.dumps(pack).encode()))
        expected[(SENML_STATION, "level", datetime.fromtimestamp(bt, UTC))] = 3.0 + j / 1000
        expected[(SENML_STATION, "level", datetime.fromtimestamp(bt + 60, UTC))] = 3.5 + j / 1000
    return messages, expected


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _start_ingest(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``sonae ingest`` as its own process, its log in a file (a pipe nobody reads could stall it)."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "app.cli", "ingest"], env=env,
                                stdout=subprocess.DEVNULL, stderr=out)


async def test_fuzzed_stream_through_the_running_pipeline(settings: Settings, pool: asyncpg.Pool,
                                                          tmp_path: Path) -> None:
    await register(pool, *STATIONS, SENML_STATION, "probe")
    prefix = settings["mqtt.topic_prefix"]
    now = datetime.now(UTC).replace(microsecond=0)
    rng = random.Random(SEED)
    bad = [malformed(rng, i, prefix, now) for i in range(2000)]
    good, expected = good_stream(prefix, now)
    stream = good + bad
    rng.shuffle(stream)

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SONAE_DATABASE_URL": settings["database.url"],
           "SONAE_MQTT_URL": settings["mqtt.url"], "SONAE_MQTT_PROTOCOL": settings["mqtt.protocol"],
           "SONAE_MQTT_TOPIC_PREFIX": prefix, "SONAE_MQTT_CLIENT_ID": f"fuzz-{uuid.uuid4().hex[:8]}",
           "SONAE_INGEST_SHARED_GROUP": settings["ingest.shared_group"],
           "SONAE_INGEST_MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD), "SONAE_INGEST_BATCH_SIZE": "500",
           "SONAE_NOTIFY_ENABLED": "false", "SONAE_STATE_DIR": settings["state.dir"], "SONAE_LOG_LEVEL": "warning"}
    log = tmp_path / "ingest.log"
    proc = _start_ingest(env, log)
    peak = 0.0

    def alive() -> None:
        nonlocal peak
        if proc.poll() is not None:
            raise AssertionError(f"ingest exited ({proc.returncode}): {log.read_text(errors='replace')[-3000:]}")
        peak = max(peak, _rss_mb(proc.pid))

    try:
        probe = readings_for("probe", 1)[0][1]

        async def consuming() -> bool:
            alive()
            await publish_all(settings, [("probe", "level", probe)])
            return await count(pool, "SELECT count(*) FROM readings WHERE station_id = 'probe'") > 0

        await wait_until(consuming, timeout=60, what="ingest process consuming")
        baseline = _rss_mb(proc.pid)
        await publish_raw(settings, stream)

        progress = [0, 0]

        async def done() -> bool:
            alive()
            progress[0] = await count(pool, "SELECT count(*) FROM readings WHERE station_id <> 'probe'")
            progress[1] = await count(pool, "SELECT coalesce(sum(deliveries), 0) FROM dead_letters")
            return progress[0] >= len(expected) and progress[1] >= len(bad)

        try:
            await wait_until(done, timeout=120, what="every message stored or dead-lettered")
        except AssertionError:
            raise AssertionError(f"after 120 s: {progress[0]} of {len(expected)} readings, "
                                 f"{progress[1]} of {len(bad)} dead letters") from None
        alive()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT station_id, kind, ts, value FROM readings WHERE station_id <> 'probe'")
        dead = await conn.fetch("SELECT message_key, reason, detail, deliveries FROM dead_letters")
        quarantined = await conn.fetchval("SELECT count(*) FROM quarantined_readings")
    stored = {(r["station_id"], r["kind"], r["ts"]): r["value"] for r in rows}
    assert len(rows) == len(stored) == len(expected), "every good reading exactly once, nothing else"
    assert stored.keys() == expected.keys()
    wrong = [(k, stored[k], v) for k, v in expected.items() if abs(stored[k] - v) > 1e-9]
    assert not wrong, f"{len(wrong)} readings stored with another value, e.g. {wrong[:3]}"

    sent: dict[bytes, int] = {}
    for topic, payload in bad:
        key = hashlib.sha256(topic.encode() + b"\x00" + payload).digest()
        sent[key] = sent.get(key, 0) + 1
    by_key = {bytes(r["message_key"]): r for r in dead}
    assert by_key.keys() == sent.keys(), "every malformed message is a dead letter, and only those"
    assert all(by_key[k]["deliveries"] == n for k, n in sent.items())
    assert all(r["reason"] and r["detail"] for r in dead)
    reasons = {r["reason"] for r in dead}
    assert "internal_error" not in reasons, "the parser handled every payload itself"
    assert {"not_finite", "bad_timestamp", "bad_unit", "bad_value", "bad_json", "not_utf8", "bad_senml",
            "bad_topic", "oversized", "future_timestamp", "unsupported_senml_version"} <= reasons
    assert quarantined == 0
    assert peak - baseline < RSS_GROWTH_BOUND_MB, f"RSS grew {peak - baseline:.0f} MB (baseline {baseline:.0f} MB)"
    print(f"fuzz: {len(bad)} malformed, {len(expected)} good readings; RSS {baseline:.0f} → peak {peak:.0f} MB")
