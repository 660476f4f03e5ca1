"""Where a reading may come from: its topic's municipality against the registry's place of its station.

The broker's ACL (``sonae devices add``) lets a device publish only under its own topic
``{prefix}/{municipality}/{station}/…``, but the municipality and the station named by a payload are the
device's word. The registry is the authority on where a station is (``stations.municipality_code``), so
a reading is kept only when

* its topic's station is its own station, or a station registered as a ``gateway`` (one gateway relays
  many stations); otherwise ``foreign_station``;
* its station, when registered with a municipality, is registered in the topic's municipality; otherwise
  ``wrong_municipality`` (found: ``sonae/v1/072010/bk-ff/level`` for a Koriyama gauge was stored);
* for a gateway's report for another station: the gateway is registered in the topic's municipality and so
  is the station (a gateway's scope is its own municipality, the only place the registry gives it);
  otherwise ``wrong_municipality`` (found: a Koriyama gateway's SenML record ``bn: "bk-other/"`` for a
  Fukushima City gauge was stored, and could raise Fukushima City's alerts).

A station the registry does not know yet is not judged here: it waits in quarantine, and is judged by the
same rule when it is registered (:func:`ingest.registry.release_quarantine`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Place:
    """What the registry says of one station: its 6-digit 団体コード (None: not given) and its kind."""

    municipality: str | None
    kind: str


def misplaced(*, station: str, sender: str, municipality: str,
              places: Mapping[str, Place]) -> tuple[str, str] | None:
    """Why a reading of ``station`` on a topic of ``sender`` in ``municipality`` may not be stored, or None.

    Parameters
    ----------
    station
        The reading's station id (from the payload, or the topic).
    sender
        The topic's station id (the device or gateway that published).
    municipality
        The topic's municipality, the 6-digit 団体コード (:func:`ingest.contract.parse_topic`).
    places
        The registry's :class:`Place` of the stations it knows among ``station`` and ``sender``.

    Returns
    -------
    ``(reason, detail)``: ``reason`` ``foreign_station`` or ``wrong_municipality`` (a dead letter's reason
    and metric label), ``detail`` one readable sentence; None when the reading may be stored (or, its
    station being unknown, quarantined).
    """
    own = places.get(station)
    if station != sender:
        gateway = places.get(sender)
        if gateway is None or gateway.kind != "gateway":
            return ("foreign_station", f"{sender!r} is not a gateway and may only report for itself, "
                                       f"not for {station!r}")
        if gateway.municipality != municipality:
            return ("wrong_municipality", f"gateway {sender!r} is registered in "
                                          f"{gateway.municipality or 'no municipality'}, not in {municipality} "
                                          f"of its topic; it reports only under its own municipality")
        if own is not None and own.municipality != municipality:
            return ("wrong_municipality", f"station {station!r} is registered in "
                                          f"{own.municipality or 'no municipality'}, outside gateway {sender!r}'s "
                                          f"municipality {municipality}; a gateway reports only for stations of "
                                          f"its own municipality")
        return None
    if own is not None and own.municipality is not None and own.municipality != municipality:
        return ("wrong_municipality", f"station {station!r} is registered in {own.municipality}, "
                                      f"not in {municipality} of its topic")
    return None
