"""Numbers from outside (the public's requests, devices' payloads, registry files) as Sonae stores them.

IEEE 754 has a negative zero: ``-0.0``, ``-1e-400`` (which underflows to it) and ``-0e5`` parse to it, and it
is kept and shown as ``-0.0`` (a threshold of "-0.0 m", a reading of "-0.0"), which no one meant: a zero has
no sign in a river level, a threshold or a coordinate. Every place that turns outside text into a stored
float passes it through :func:`unsigned`: the API's JSON bodies (``api.bodies.loads``, thresholds, hazard and
shelter coordinates, push areas), readings (``ingest.contract``) and the station registry's files
(``ingest.registry``).
"""

from __future__ import annotations


def unsigned(value: float) -> float:
    """``value`` with a negative zero made ``0.0`` (every other float unchanged, NaN and infinities included).

    ``-0.0 + 0.0`` is ``+0.0`` in IEEE 754's round-to-nearest; for any other value adding zero changes nothing.
    """
    return value + 0.0
