"""Where a reading may come from: its topic's municipality against the registry's place of its station.

The broker's ACL (``sonae devices add``) lets a device publish only under its own topic
``{prefix}/{municipality}/{station}/…``, but the municipality and the station named by a payload are the
device's word. The registry is the authority on where a station is (``stations.municipality_code``), so
a reading is kept only when

* its topic's station is its own station, or a station registered as a ``gateway`` (one gateway relays
  many stations); otherwise ``foreign_station``;
* its station, when registered, is registered in the topic's municipality; otherwise
  ``wrong_municipality`` (found: ``sonae/v1/072010/bk-ff/level`` for a Koriyama gauge was stored);
* for a gateway's report for another station: the gateway is registered in the topic's municipality and so
  is the station (a gateway's scope is its own municipality, the only place the registry gives it);
  otherwise ``wrong_municipality`` (found: a Koriyama gateway's SenML record ``bn: "bk-other/"`` for a
  Fukushima City gauge was stored, and could raise Fukushima City's alerts);
* its station, when registered, is registered in a municipality: a station with none (imported without
  ``municipality_code``) has no topic of its own, so its readings are refused on every path, direct or through
  a gateway, ``wrong_municipality`` (found: ``bk-h`` with no municipality was stored from the drill town's
  topic and from Koriyama's, and raised a real alert published under ``sonae/alerts/none/…``); give it its
  municipality (``sonae stations edit`` or an import with the code) and it is kept;
* a reading on the drill town's topic (:data:`~sonae.municipality_code.DRILL_TOWN_CODE`, which holds exercise
  stations only, ``ingest.municipalities.DRILL_TOWN_RULE``) is marked ``"exercise": true``; otherwise
  ``real_in_drill_town`` (found: a real ``{"value": 9.5}`` for drill-town ``DT-G02`` was shown publicly as
  real). It is refused rather than stored as an exercise: the dead letter keeps the message as sent, with
  the reason, so nothing is lost and the device's missing flag is seen, while nothing real is kept for a
  fictional town and no real alert can follow.

A station the registry does not know yet is not judged here (but for the drill town's rule, which needs
no registry): it waits in quarantine, and is judged by the same rule when it is registered (:func:`ingest.registry.release_quarantine`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sonae.municipality_code import DRILL_TOWN_CODE


@dataclass(frozen=True, slots=True)
class Place:
    """What the registry says of one station: its 6-digit 団体コード (None: not given) and its kind."""

    municipality: str | None
    kind: str


def misplaced(*, station: str, sender: str, municipality: str, exercise: bool,
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
    exercise
        Whether the reading is marked as an exercise (``"exercise": true``).
    places
        The registry's :class:`Place` of the stations it knows among ``station`` and ``sender``.

    Returns
    -------
    ``(reason, detail)``: ``reason`` ``foreign_station``, ``wrong_municipality`` or ``real_in_drill_town`` (a
    dead letter's reason
    and metric label), ``detail`` one readable sentence; None when the reading may be stored (or, its
    station being unknown, quarantined).
    """
    if municipality == DRILL_TOWN_CODE and not exercise:
        return ("real_in_drill_town", f"{municipality} is the drill town (Kunren Town), for exercises only: a reading "
                                      f"of {station!r} on its topic must be marked \"exercise\": true")
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
    if own is not None and own.municipality != municipality:
        return ("wrong_municipality", f"station {station!r} is registered in "
                                      f"{own.municipality or 'no municipality'}, not in {municipality} of its "
                                      f"topic; a station is kept only on its registered municipality's topic")
    return None
