"""Numbers from outside (the public's requests, devices' payloads, registry files) as Sonae stores them.

IEEE 754 has a negative zero: ``-0.0``, ``-1e-400`` (which underflows to it) and ``-0e5`` parse to it, and it
is kept and shown as ``-0.0`` (a threshold of "-0.0 m", a reading of "-0.0"), which no one meant: a zero has
no sign in a river level, a threshold or a coordinate. Every place that turns outside text into a stored
float passes it through :func:`unsigned`: the API's JSON bodies (``api.bodies.loads``, thresholds, hazard and
shelter coordinates, push areas), readings (``ingest.contract``) and the station registry's files
(``ingest.registry``).
"""

from __future__ import annotations

import re

#: a decimal number as text from outside: optional sign, digits with an optional point, an optional short
#: exponent, ASCII only and nothing around it (``re``'s [0-9] is ASCII; float() would also take blanks, line
#: breaks, "1_0" and Unicode digits)
DECIMAL = re.compile(r"^-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?\Z")


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``west,south,east,north`` in degrees: raises ValueError unless four :data:`DECIMAL` numbers with
    west < east and south < north (the API's ``bbox`` parameters and the command line's ``--bbox``).

    Taken exactly as written: a blank or line break around a number is refused, not trimmed (found:
    ``bbox=140,37,141,38%0A`` was taken)."""
    parts = text.split(",")
    if len(parts) != 4 or not all(DECIMAL.match(p) for p in parts):
        raise ValueError("four numbers: west,south,east,north (ASCII decimal numbers joined by commas, "
                         "no spaces or line breaks)")
    west, south, east, north = (float(p) for p in parts)
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise ValueError("west < east within ±180 and south < north within ±90")
    return west, south, east, north


#: a whole number as text from outside: optional sign and ASCII digits
INTEGER = re.compile(r"^-?[0-9]+\Z")


def file_number(value: object, *, whole: bool = False) -> float:
    """A number from a cell of an operator's file (a CSV cell, a GeoJSON property): a JSON number as it is, a
    text only as a :data:`DECIMAL` (:data:`INTEGER` with ``whole``), spaces and tabs around it taken (CSV cells
    carry them). Raises ValueError otherwise (TypeError for a boolean, list or object).

    Found: ``float()`` takes ``6_4`` as 64 and ``６.４`` as 6.4, so a station file's 氾濫危険水位 written
    ``6_4`` was stored as 64 m, a level the river never reaches (no 警戒レベル4 for residents)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError("not a number")
    if isinstance(value, str):
        text = value.strip(" \t")
        if not (text.isascii() and (INTEGER if whole else DECIMAL).match(text)):
            raise ValueError("not a number in ASCII digits (no digit separators)")
        return float(int(text)) if whole else float(text)
    if whole and isinstance(value, float) and not value.is_integer():
        raise ValueError("not a whole number")
    return float(value)


def unsigned(value: float) -> float:
    """``value`` with a negative zero made ``0.0`` (every other float unchanged, NaN and infinities included).

    ``-0.0 + 0.0`` is ``+0.0`` in IEEE 754's round-to-nearest; for any other value adding zero changes nothing.
    """
    return value + 0.0
