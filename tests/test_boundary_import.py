"""Importing boundaries over loaded ones (breakit7 F2): a coarser map never silently replaces a finer one.

Real files: ``shared/data/boundaries`` holds N03-22 at full resolution (the shipped boundaries' source) and
N03-21 simplified to 1 % (59 polygons). Importing the latter moved the point P below, inside 郡山市 on the
full map, to 須賀川市: the import must say so and refuse unless ``--replace``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely import affinity
from shapely.geometry import box

from ingest.boundaries import (
    ADDED,
    MOVED,
    REPLACE_TOLERANCE_M,
    SAME,
    Boundary,
    compare_boundaries,
    load_index,
    packaged_boundaries,
    read_n03,
    seed_if_empty,
    simplify,
)
from sonae.config import Settings as SonaeSettings
from tests.conftest import shared_data

#: inside 郡山市 on the full-resolution map, in 須賀川市 on the 1 % simplification (breakit7 repro)
P = (37.27745, 140.51711)
NEIGHBOURS = {"072036", "072079", "073423"}  # 郡山市, 須賀川市, 鏡石町


def _loaded() -> dict[str, tuple[Boundary, str | None]]:
    return {b.code: (b, "package") for b in packaged_boundaries()}


def test_the_coarse_file_moves_every_border_and_a_reimport_of_the_source_moves_none() -> None:
    loaded = _loaded()
    coarse, _ = simplify(read_n03(shared_data("boundaries", "fukushima_n03_2021_s0010_simplified.geojson")))
    changes = {c.code: c for c in compare_boundaries(loaded, coarse)}
    assert set(changes) == set(loaded) and {c.kind for c in changes.values()} == {MOVED}
    koriyama = changes["072036"]
    assert koriyama.vertices_after < koriyama.vertices_before  # coarser
    assert koriyama.moved_km2 > 1.0 and 0.005 < koriyama.moved_share < 0.05
    assert "072036" in koriyama.describe() and "km²" in koriyama.describe()
    # the same N03-22 polygons, simplified as the shipped ones were: only slivers (rounding) differ
    parts = [p for p in read_n03(shared_data("boundaries", "fukushima_n03_2022_full.geojson")) if p[0] in NEIGHBOURS]
    same, _ = simplify(parts)
    again = compare_boundaries(loaded, same)
    assert {c.code for c in again} == NEIGHBOURS and {c.kind for c in again} == {SAME}
    assert all(c.moved_share < 1e-4 for c in again)


def test_a_strip_wider_than_the_tolerance_is_a_move_and_a_narrower_one_is_not() -> None:
    loaded = {"072036": (next(b for b in packaged_boundaries() if b.code == "072036"), "package")}
    koriyama = loaded["072036"][0]
    kx = 111_320.0 * 0.7955  # metres per degree of longitude at 37.3°
    for metres, kind in ((REPLACE_TOLERANCE_M * 0.4, SAME), (REPLACE_TOLERANCE_M * 2, MOVED)):
        shifted = koriyama.geometry.buffer(metres / kx, join_style="mitre")  # every border moved out by `metres`
        (change,) = compare_boundaries(loaded, [Boundary("072036", "郡山市", shifted)])
        assert change.kind == kind, (metres, change)
    (added,) = compare_boundaries({}, [koriyama])
    assert added.kind == ADDED and added.moved_km2 == 0


#: metres per degree at 37.3° N (longitude, latitude), as ingest.boundaries projects
KX, KY = 111_320.0 * 0.79547, 110_574.0
SQUARE = box(140.3, 37.3, 140.3 + 1000 / KX, 37.3 + 1000 / KY)  # 1 km × 1 km


@settings(max_examples=40, deadline=None)
@given(metres=st.one_of(st.floats(0.0, REPLACE_TOLERANCE_M * 0.9), st.floats(REPLACE_TOLERANCE_M * 1.1, 900.0)),
       north=st.booleans())
def test_a_border_shifted_by_more_than_the_tolerance_is_moved(metres: float, north: bool) -> None:
    """A square shifted by ``metres`` leaves strips ``metres`` wide between the two borders."""
    dx, dy = (0.0, metres / KY) if north else (metres / KX, 0.0)
    (change,) = compare_boundaries({"072036": (Boundary("072036", "x", SQUARE), None)},
                                   [Boundary("072036", "x", affinity.translate(SQUARE, dx, dy))])
    assert change.kind == (MOVED if metres > REPLACE_TOLERANCE_M else SAME)
    assert abs(change.moved_km2 - 2 * metres * 1000 / 1e6) < 1e-3  # two strips, 1 km long


def _sonae(settings: SonaeSettings, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "SONAE_DATABASE_URL": settings["database.url"], "SONAE_MQTT_URL": settings["mqtt.url"],
           "SONAE_STATE_DIR": str(tmp_path / "state")}
    return subprocess.run([sys.executable, "-m", "app.cli", "municipalities", "import", *args], env=env,
                          capture_output=True, text=True, timeout=300)


async def _at_p(pool: asyncpg.Pool) -> str | None:
    async with pool.acquire() as conn:
        return (await load_index(conn)).municipality_at(*P)


async def test_cli_refuses_the_coarse_file_without_replace_and_says_what_moves(settings: SonaeSettings, pool: asyncpg.Pool,
                                                                             tmp_path: Path) -> None:
    async with pool.acquire() as conn:
        assert await seed_if_empty(conn) > 0
        before = await conn.fetch("SELECT code, geometry, source, updated_at FROM municipality_boundaries ORDER BY code")
    assert await _at_p(pool) == "072036"
    coarse = str(shared_data("boundaries", "fukushima_n03_2021_s0010_simplified.geojson"))
    refused = _sonae(settings, tmp_path, coarse)
    assert refused.returncode == 2, refused.stderr
    assert "refused" in refused.stderr and "072036 郡山市" in refused.stderr and "--replace" in refused.stderr
    assert "km²" in refused.stderr and "coarser" in refused.stderr and "package:" in refused.stderr
    async with pool.acquire() as conn:  # nothing stored
        assert await conn.fetch("SELECT code, geometry, source, updated_at FROM municipality_boundaries "
                                "ORDER BY code") == before
    replaced = _sonae(settings, tmp_path, coarse, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    lines = replaced.stdout.splitlines()
    assert sum("replaced, border moved" in line for line in lines) == 59
    assert any(line.startswith("072036 郡山市") for line in lines) and "59 moved" in lines[-1]
    assert await _at_p(pool) == "072079"  # what the operator accepted, with --replace
    # back to the full-resolution map: it moves the borders again, so it needs --replace too
    full = str(shared_data("boundaries", "fukushima_n03_2022_full.geojson"))
    assert _sonae(settings, tmp_path, full).returncode == 2
    restored = _sonae(settings, tmp_path, full, "--replace")
    assert restored.returncode == 0, restored.stderr
    assert await _at_p(pool) == "072036"
    again = _sonae(settings, tmp_path, full)  # the same map again: accepted, nothing moves
    assert again.returncode == 0, again.stderr
    assert sum("replaced, same border" in line for line in again.stdout.splitlines()) == 59
    listed = _sonae(settings, tmp_path, str(shared_data("municipalities", "fukushima_municipalities.csv")), "--replace")
    assert listed.returncode == 2 and "--replace applies to boundaries" in listed.stderr
