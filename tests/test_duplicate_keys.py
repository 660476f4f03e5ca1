"""A key given twice in one JSON object, from outside, is refused everywhere by one rule (``sonae.jsonkeys``):
an MQTT payload of any kind is a ``duplicate_key`` dead letter naming the key and where (found: a SenML record
``{"n": "level", "n": "rain", ...}`` was read as rain and dead-lettered as ``implausible_value``), an API body
a 400, a station, shelter or hazard file an error naming the file and the feature."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from api.bodies import loads as body_loads
from evac.hazards import load_hazard_geojson
from evac.shelters import load_shelters
from ingest.contract import Parser, PayloadError, decode_json, topic_for
from ingest.registry import RegistryError, load_stations
from sonae.config import Settings
from sonae.jsonkeys import DuplicateKeyError, loads_unique
from tests.ingest_support import count, publish_raw, register, running_ingestor, wait_until

KEYS = st.text(min_size=1, max_size=6)
SCALARS = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8) \
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                      max_leaves=20)


def dumps_pairs(value: Any) -> str:
    """JSON text of ``value``, where a :class:`Pairs` list is written as an object with its keys as given."""
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps_pairs(v)}" for k, v in value) + "}"
    if isinstance(value, dict):
        return dumps_pairs(Pairs(value.items()))
    if isinstance(value, list):
        return "[" + ",".join(dumps_pairs(v) for v in value) + "]"
    return json.dumps(value)


class Pairs(list):  # type: ignore[type-arg]
    pass


@st.composite
def with_duplicate(draw: st.DrawFn) -> tuple[Any, str]:
    """A JSON value holding, somewhere at any depth, one object that gives a key twice; and that key."""
    doc = draw(VALUES)
    key = draw(KEYS)
    pairs = Pairs(draw(st.dictionaries(KEYS, VALUES, max_size=3)).items())
    pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(VALUES)))
    pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(VALUES)))
    # wrap it into the drawn document at a random depth
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            pairs = Pairs([(draw(KEYS), pairs)])
        else:
            pairs = [doc, pairs] if draw(st.booleans()) else [pairs, doc]  # type: ignore[assignment]
    return pairs, key


@hsettings(max_examples=300, deadline=None)
@given(with_duplicate())
def test_any_object_with_a_key_twice_at_any_depth_is_refused(case: tuple[Any, str]) -> None:
    doc, key = case
    text = dumps_pairs(doc)
    with pytest.raises(DuplicateKeyError) as caught:
        loads_unique(text)
    assert caught.value.where.startswith("$")
    with pytest.raises(PayloadError) as dead:
        decode_json(text.encode())
    assert dead.value.reason == "duplicate_key"
    with pytest.raises(ValueError, match="is given more than once"):
        body_loads(text)


@hsettings(max_examples=300, deadline=None)
@given(VALUES)
def test_without_duplicates_parsing_is_as_before(doc: Any) -> None:
    text = json.dumps(doc)
    assert loads_unique(text) == json.loads(text)
    assert decode_json(text.encode()) == json.loads(text)


def test_the_dead_letter_names_the_key_and_where() -> None:
    parser = Parser(prefix="sonae/v1")
    now = datetime.now(UTC)
    pack = f'[{{"bn": "g1/", "bt": {now.timestamp()}}}, {{"n": "level", "v": 0.5}}, {{"n": "level", "n": "rain"}}]'
    with pytest.raises(PayloadError) as caught:
        parser.parse("sonae/v1/072036/g1/senml", pack.encode(), now=now)
    assert caught.value.reason == "duplicate_key"
    assert "'n'" in caught.value.detail and "$[2]" in caught.value.detail, caught.value.detail
    for kind, payload in (("level", b'{"ts": 1764500000, "value": 1.0, "value": 2.0}'),
                          ("telemetry", b'{"ts": 1764500000, "battery_pct": 80, "extra": {"a": 1, "a": 2}}')):
        with pytest.raises(PayloadError) as caught:
            parser.parse(f"sonae/v1/072036/g1/{kind}", payload, now=now)
        assert caught.value.reason == "duplicate_key", (kind, caught.value)


async def test_a_senml_record_naming_n_twice_is_a_duplicate_key_dead_letter(settings: Settings,
                                                                            pool: asyncpg.Pool) -> None:
    """Through the real broker into PostgreSQL: the dead letter is kept with its own reason, not stored as rain."""
    await register(pool, "dk1")
    prefix = settings["mqtt.topic_prefix"]
    now = datetime.now(UTC).timestamp()
    bad = b'[{"bn": "dk1/", "bt": %f, "n": "level", "n": "rain", "u": "m", "v": 0.42}]' % now
    good = b'[{"bn": "dk1/", "bt": %f, "n": "level", "u": "m", "v": 0.42}]' % now
    async with running_ingestor(settings, pool):
        await publish_raw(settings, [(topic_for(prefix, "072036", "dk1", "senml"), bad),
                                     (topic_for(prefix, "072036", "dk1", "senml"), good)])
        await wait_until(lambda: count(pool, "SELECT count(*) = 1 FROM dead_letters"), what="the dead letter")
        await wait_until(lambda: count(pool, "SELECT count(*) = 1 FROM readings"), what="the good reading")
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT reason, detail, payload FROM dead_letters")
    assert row["reason"] == "duplicate_key" and bytes(row["payload"]) == bad
    assert "'n'" in row["detail"] and "$[0]" in row["detail"], row["detail"]


FEATURE = '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [140.47, 37.75]}, "properties": %s}'


def collection(*props: str) -> str:
    return '{"type": "FeatureCollection", "features": [' + ",".join(FEATURE % p for p in props) + "]}"


def test_a_station_file_with_a_key_twice_is_refused_naming_the_file_and_feature(tmp_path: Path) -> None:
    path = tmp_path / "stations.geojson"
    path.write_text(collection('{"id": "s1", "name": "A"}', '{"id": "s2", "name": "B", "name": "C"}'))
    with pytest.raises(RegistryError, match=r"stations\.geojson.*'name'.*\$\.features\[1\]\.properties"):
        load_stations(path)


def test_shelter_and_hazard_files_with_a_key_twice_are_refused_naming_the_file_and_feature(tmp_path: Path) -> None:
    shelters = tmp_path / "shelters.geojson"
    shelters.write_text(collection('{"name": "A", "name": "B", "capacity": 10}'))
    with pytest.raises(DuplicateKeyError, match=r"'name'.*\$\.features\[0\]\.properties"):
        load_shelters(shelters)
    hazards = tmp_path / "hazards.geojson"
    hazards.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, '
                       '"geometry": {"type": "Polygon", "type": "Point", "coordinates": []}}]}')
    with pytest.raises(DuplicateKeyError, match=r"'type'.*\$\.features\[0\]\.geometry"):
        load_hazard_geojson(hazards, hazard="flood")
