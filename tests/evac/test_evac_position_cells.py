"""EvacService.placed: the rounding of positions to ~10 m cells and the service area's box agree (pure logic)."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from evac.service import HALF_CELL_DEG, POSITION_DECIMALS, EvacService

coords = st.floats(min_value=-0.01, max_value=0.01, allow_nan=False)
boxes = st.tuples(st.floats(130.0, 145.0), st.floats(30.0, 45.0), st.floats(0.001, 0.5), st.floats(0.001, 0.5))


def _in(box: tuple[float, float, float, float], lat: float, lon: float) -> bool:
    return box[0] <= lon <= box[2] and box[1] <= lat <= box[3]


@given(boxes, st.floats(0.0, 1.0), st.floats(0.0, 1.0), coords, coords)
def test_a_cell_touching_the_area_is_answered_within_it(raw: tuple[float, float, float, float], fy: float, fx: float,
                                                        dy: float, dx: float) -> None:
    w, s, dw, dh = raw
    box = (w, s, w + dw, s + dh)
    fake = SimpleNamespace(service_area=box)
    lat = round(s + dh * fy + dy, 6)  # 6 decimals, as phones and the published area give them
    lon = round(w + dw * fx + dx, 6)
    placed = EvacService.placed(fake, lat, lon)  # type: ignore[arg-type]
    near = (box[0] - HALF_CELL_DEG <= lon <= box[2] + HALF_CELL_DEG
            and box[1] - HALF_CELL_DEG <= lat <= box[3] + HALF_CELL_DEG)
    assert (placed is not None) == near
    if placed is not None:
        (plat, plon), (clat, clon) = placed
        assert _in(box, plat, plon) and _in(box, clat, clon)
        # the cell is the rounded position unless that lies over the edge
        assert abs(clat - lat) <= HALF_CELL_DEG + 1e-12 and abs(clon - lon) <= HALF_CELL_DEG + 1e-12
        if _in(box, round(lat, POSITION_DECIMALS), round(lon, POSITION_DECIMALS)):
            assert (clat, clon) == (round(lat, POSITION_DECIMALS), round(lon, POSITION_DECIMALS))


def test_nothing_is_placed_before_the_network_is_loaded() -> None:
    assert EvacService.placed(SimpleNamespace(service_area=None), 37.0, 140.0) is None  # type: ignore[arg-type]
