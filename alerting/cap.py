"""CAP 1.2 messages (OASIS Common Alerting Protocol) for alerts, and an Atom feed of active alerts.

Choices, per field:

* ``sender`` and ``identifier``: from the installation's :class:`~alerting.cap_identity.CapProfile` —
  ``sonae-{installation}-alert-{id}-v{version}``, one per message, unique across installations; each
  state change of an alert is a new version. ``references`` lists every earlier message of the same
  alert (``sender,identifier,sent``) — of a public alert, every earlier public one.
* ``msgType``: ``Alert`` when raised (or first public: an alert raised at 水防団待機 for staff and raised to
  警戒レベル2相当 later references none of its Restricted messages, :func:`public_messages`), ``Update`` when escalated, de-escalated or moved with its station
  to another municipality (the area's geocode changes; earlier messages are referenced by the sender
  they were sent with), ``Cancel`` when
  cleared or an order is cancelled (with ``responseType`` AllClear in its infos).
* ``status``: ``Exercise`` for every drill alert, ``Actual`` otherwise — drills never look real.
* ``scope``: ``Public`` for alerts residents are told about; ``Restricted`` (restriction "staff") for
  standby, device health and silent gauges.
* ``category``: ``Met`` for river levels and evacuation orders — CAP 1.2 defines Met as
  "Meteorological (inc. flood)"; ``Geo`` is for geophysical events (landslides, earthquakes). Device
  conditions are ``Infra``.
* urgency/severity/certainty by level: 5 Immediate/Extreme/Observed, 4 Immediate/Severe/Observed,
  3 Expected/Severe (Likely when raised by the trend rule, Observed otherwise), 2 Expected/Moderate,
  standby Future/Minor, staff conditions Unknown/Minor, cleared Past/Minor.
* one ``info`` per language: ``ja-JP``, ``en-US`` and ``ja-JP-x-easy`` (やさしい日本語, a private-use
  subtag, valid as xs:language).
* ``expires``: ``sent`` + ``cap.expires_hours`` on every message; the Atom feed keeps a Cancel until
  it expires, so feed readers see it.
* ``description``: the measured value, threshold and trend, in each info's language (やさしい日本語 too:
  :func:`alerting.texts.description`). Never an order's note or cancellation note:
  those are staff memos (the console's メモ), and a CAP message is public (issue #16: public reads show
  no internal note); the public words of an order are its ``area_desc``.
* ``area``: ``areaDesc``; ``polygon`` elements (lat,lon pairs, closed rings) for orders given as a
  polygon — CAP has no holes, so an area with holes is published as hole-free polygons whose union is
  the area (:mod:`alerting.cap_area`); a ``circle`` of ``gauge_radius_km`` around a gauge; a
  ``geocode`` "JIS X 0402" with the municipality's code (団体コード).
* all text goes through :mod:`sonae.xmltext`, so characters XML cannot carry never break a message.
* ``sent`` and the other times are Japan time with an explicit +09:00 offset and no fractions, as the
  schema's pattern requires.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from alerting.cap_area import cap_rings
from alerting.cap_identity import CapProfile
from alerting.texts import LANGUAGES, cleared_text, description, is_withdrawal, text_for
from sonae.municipality_code import DRILL_TOWN_CODE, DRILL_TOWN_NAMES
from sonae.xmltext import to_xml_bytes

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM_NS = "http://www.w3.org/2005/Atom"
JST = timezone(timedelta(hours=9), "JST")
GAUGE_RADIUS_KM = 2.0


def cap_time(ts: datetime) -> str:
    return ts.astimezone(JST).replace(microsecond=0).isoformat()


def place_name(alert: dict[str, Any], *, lang: str = "ja-JP") -> str:
    """The place an alert is about, as residents name it.

    Gauges: ``<river> <station>`` (Japanese; the station alone when its name already begins with the
    river's, as the drill town's 訓練川 第1水位観測所 does) or the station's English name; evacuation orders: the
    order's area description, else the municipality's name. ``lang`` is a CAP language tag
    (``en-US`` gives English; anything else Japanese). Never empty (falls back to ids or ``—``).
    """
    return _place_en(alert) if lang == "en-US" else _place(alert)


def _town(alert: dict[str, Any], lang: str) -> str | None:
    """The name of the alert's municipality in ``lang`` when no name was joined to its code: the drill
    town's (``sonae.municipality_code.DRILL_TOWN_NAMES``), never its code; else None."""
    return DRILL_TOWN_NAMES[lang] if alert.get("municipality_code") == DRILL_TOWN_CODE else None


def _place(alert: dict[str, Any]) -> str:
    if alert.get("condition") == "evacuation_order":
        return (alert.get("area_desc") or alert.get("municipality_name") or _town(alert, "ja-JP")
                or alert.get("municipality_code") or "—")
    name = str(alert.get("station_name") or alert.get("station_id") or "—")
    river = alert.get("river")
    return f"{river} {name}" if river and not name.startswith(river) else name


def _place_en(alert: dict[str, Any]) -> str:
    if alert.get("condition") == "evacuation_order":
        return (alert.get("area_desc") or alert.get("municipality_name_en") or _town(alert, "en-US")
                or alert.get("municipality_name") or f"municipality {alert.get('municipality_code')}")
    return str(alert.get("station_name_en") or alert.get("station_name") or alert.get("station_id"))


def grading(alert: dict[str, Any]) -> tuple[str, str, str]:
    """(urgency, severity, certainty)."""
    if alert.get("cleared_at") is not None:
        return "Past", "Minor", "Observed"
    level = int(alert["level"])
    if alert["condition"] in ("silent", "low_battery", "fault"):
        return "Unknown", "Minor", "Observed"
    if level >= 5:
        return "Immediate", "Extreme", "Observed"
    if level == 4:
        return "Immediate", "Severe", "Observed"
    if level == 3:
        return "Expected", "Severe", "Likely" if alert.get("reason") == "trend" else "Observed"
    if level == 2:
        return "Expected", "Moderate", "Observed"
    return "Future", "Minor", "Observed"


def msg_type(alert: dict[str, Any], *, first_public: bool = False) -> str:
    """``Cancel`` when cleared; ``Alert`` for the alert's first message — or its first public one
    (``first_public``: its earlier messages were Restricted, :func:`public_messages`) —, ``Update`` after it."""
    if alert.get("cleared_at") is not None:
        return "Cancel"
    return "Alert" if int(alert["version"]) == 1 or first_public else "Update"


def public_messages(alert: dict[str, Any], previous: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages a message of ``alert`` may reference: all of them for a staff alert; for a public alert
    only those that were public (their ``audience``, the alert's at each message:
    :func:`alerting.store.messages_of`): an alert raised at 水防団待機 for staff and raised to 警戒レベル2相当 later
    had Restricted messages first; its first public message is an ``Alert`` and never names them. Messages
    without a recorded audience are kept."""
    if alert.get("audience") != "public":
        return previous
    return [p for p in previous if p.get("audience") in (None, "public")]


def polygon_text(ring: list[list[float]]) -> str:
    """A GeoJSON ring ([lon, lat] …) as CAP's "lat,lon lat,lon …", closed."""
    pts = [(float(p[1]), float(p[0])) for p in ring]
    if pts[0] != pts[-1]:
        pts.append(pts[0])
    return " ".join(f"{lat:.6f},{lon:.6f}" for lat, lon in pts)


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, f"{{{CAP_NS}}}{tag}")
    if text is not None:
        el.text = text
    return el


def sent_at(alert: dict[str, Any], previous: list[dict[str, Any]]) -> datetime:
    """When the alert's current version was sent: its event's time, else the alert's last update."""
    times = {int(p["version"]): p["recorded_at"] for p in previous}
    found: datetime | None = times.get(int(alert["version"])) or alert.get("updated_at")
    return found or datetime.now(UTC)


def render_cap(alert: dict[str, Any], previous: list[dict[str, Any]], *, profile: CapProfile,
               sent: datetime | None = None) -> bytes:
    """The CAP 1.2 message of an alert's current version.

    ``previous``: earlier messages of the alert as dicts with ``version``, ``recorded_at`` and optionally
    ``municipality_code``, the one each was sent for (from :func:`alerting.store.messages_of`; default the
    alert's); ``sent`` defaults to the current version's time; ``profile``:
    the installation's sender, identifiers and validity (:mod:`alerting.cap_identity`).
    """
    sender = profile.sender_for(alert.get("municipality_code"))
    version = int(alert["version"])
    shown = public_messages(alert, previous)
    first_public = len(shown) < len(previous) and not any(int(p["version"]) < version for p in shown)
    previous = shown
    times = {int(p["version"]): p["recorded_at"] for p in previous}
    sent = sent or sent_at(alert, previous)
    expires = sent + timedelta(hours=profile.expires_hours)
    root = ET.Element(f"{{{CAP_NS}}}alert")
    _sub(root, "identifier", profile.identifier(alert["id"], version))
    _sub(root, "sender", sender)
    _sub(root, "sent", cap_time(sent))
    _sub(root, "status", "Exercise" if alert["exercise"] else "Actual")
    _sub(root, "msgType", msg_type(alert, first_public=first_public))
    _sub(root, "source", "Sonae river-gauge rules" if alert.get("station_id") else "Sonae staff")
    public = alert.get("audience") == "public"
    _sub(root, "scope", "Public" if public else "Restricted")
    if not public:
        _sub(root, "restriction", "Municipal disaster-management staff only")
    if alert["exercise"]:
        _sub(root, "note", "訓練 / EXERCISE — this is a drill, not a real alert")
    # each earlier message by its own sender: an alert moved to another municipality (event "moved") was
    # sent for the old one before, and a sender may name the municipality (cap.sender "{municipality}")
    senders = {int(p["version"]): profile.sender_for(p.get("municipality_code", alert.get("municipality_code")))
               for p in previous}
    refs = [f"{senders[v]},{profile.identifier(alert['id'], v)},{cap_time(t)}"
            for v, t in sorted(times.items()) if v < version]
    if refs:
        _sub(root, "references", " ".join(refs))
    _sub(root, "incidents", profile.incident(alert["id"]))
    urgency, severity, certainty = grading(alert)
    cleared = alert.get("cleared_at") is not None
    level = int(alert["level"])
    for lang in LANGUAGES:
        place = place_name(alert, lang=lang)
        if cleared:
            t = cleared_text(alert["condition"], level, lang, place, reason=alert.get("reason"))
        else:
            t = text_for(alert["condition"], level, lang, reason=alert.get("reason"),
                         falling=alert.get("state") == "de-escalated", dwell_s=alert.get("dwell_s"))
        info = _sub(root, "info")
        _sub(info, "language", lang)
        _sub(info, "category", "Infra" if alert["condition"] in ("silent", "low_battery", "fault") else "Met")
        event = t.event
        if alert["exercise"]:
            event = ("[EXERCISE] " if lang == "en-US" else "【訓練】") + event
        _sub(info, "event", event)
        if cleared:  # withdrawn with its station's registration: not an all-clear, keep watching
            _sub(info, "responseType", "Monitor" if is_withdrawal(alert.get("reason")) else "AllClear")
        elif alert["condition"] in ("river_level", "evacuation_order") and level >= 3:
            _sub(info, "responseType", "Evacuate")
        elif level == 2:
            _sub(info, "responseType", "Prepare")
        else:
            _sub(info, "responseType", "Monitor")
        _sub(info, "urgency", urgency)
        _sub(info, "severity", severity)
        _sub(info, "certainty", certainty)
        _sub(info, "eventCode")
        code = info[-1]
        _sub(code, "valueName", "警戒レベル" if lang != "en-US" else "JP alert level")
        _sub(code, "value", str(level))
        _sub(info, "effective", cap_time(alert["changed_at"]))
        _sub(info, "expires", cap_time(expires))
        _sub(info, "senderName", "Sonae" if lang == "en-US" else "Sonae（備え）")
        headline = t.headline.format(place=place) if not cleared else t.headline
        if alert["exercise"]:
            headline = ("[EXERCISE] " if lang == "en-US" else "【訓練】") + headline
        _sub(info, "headline", headline[:160])
        desc = description(lang, value=alert.get("value"), threshold=alert.get("threshold"),
                           trend=alert.get("reason") == "trend", value_at=alert.get("value_at"))
        if desc:
            _sub(info, "description", desc)
        _sub(info, "instruction", t.instruction)
        for name, value in (("sonae:alert_id", str(alert["id"])), ("sonae:condition", alert["condition"]),
                            ("sonae:state", alert["state"])):
            p = _sub(info, "parameter")
            _sub(p, "valueName", name)
            _sub(p, "value", value)
        area = _sub(info, "area")
        _sub(area, "areaDesc", place)
        geo = alert.get("area")
        if geo:
            for ring in cap_rings(geo):
                _sub(area, "polygon", polygon_text(ring))
        if alert.get("lat") is not None and alert.get("lon") is not None:
            _sub(area, "circle", f"{alert['lat']:.6f},{alert['lon']:.6f} {GAUGE_RADIUS_KM}")
        if alert.get("municipality_code"):
            gc = _sub(area, "geocode")
            _sub(gc, "valueName", "JIS X 0402")
            _sub(gc, "value", str(alert["municipality_code"]))
    return to_xml_bytes(root, default_namespace=CAP_NS)


def render_atom(alerts: list[dict[str, Any]], *, base_url: str, profile: CapProfile,
                updated: datetime | None = None) -> bytes:
    """An Atom feed (RFC 4287) of alerts, each entry linking to its CAP message.

    ``alerts``: the active alerts and the cleared ones whose Cancel has not expired yet (see
    :func:`alerting.store.list_feed`); a cleared one's entry is its Cancel (title "解除", summary
    ``Cancel``), so feed readers learn that it ended. Each entry's summary names its CAP message's type
    (:func:`msg_type`): ``Alert`` for an alert's first public message — its first version, or the first after
    staff-only ones (``first_public``, from :func:`alerting.store.list_feed`): an alert raised at 水防団待機 and
    made public later is new to feed readers, as its CAP message says —, ``Update`` after it.
    """
    def a(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, tag, attrs)  # unprefixed: the root declares the Atom namespace
        if text is not None:
            el.text = text
        return el

    base = base_url.rstrip("/")
    newest = max((x["updated_at"] for x in alerts), default=None)
    feed = ET.Element("feed", {"xmlns": ATOM_NS})
    a(feed, "id", f"{base}/api/v1/alerts/feed.atom")
    a(feed, "title", "Sonae 防災情報 — active alerts")
    a(feed, "updated", cap_time(updated or newest or datetime.now(UTC)))
    author = a(feed, "author")
    a(author, "name", "Sonae")
    a(feed, "link", rel="self", href=f"{base}/api/v1/alerts/feed.atom", type="application/atom+xml")
    for x in alerts:
        entry = a(feed, "entry")
        a(entry, "id", profile.atom_id(x["id"], x["version"]))
        level = int(x["level"])
        if x.get("cleared_at") is not None:
            title = cleared_text(x["condition"], level, "ja-JP", _place(x), reason=x.get("reason")).headline
        else:
            title = text_for(x["condition"], level, "ja-JP", reason=x.get("reason"),
                             falling=x.get("state") == "de-escalated",
                             dwell_s=x.get("dwell_s")).headline.format(place=_place(x))
        if x["exercise"]:
            title = "【訓練】" + title
        a(entry, "title", title)
        a(entry, "updated", cap_time(x["updated_at"]))
        a(entry, "link", rel="alternate", type="application/cap+xml", href=f"{base}/api/v1/alerts/{x['id']}.cap")
        urgency, severity, certainty = grading(x)
        kind = msg_type(x, first_public=bool(x.get("first_public")))
        a(entry, "summary", f"{'EXERCISE ' if x['exercise'] else ''}{kind}: {x['condition']} level {x['level']} "
                            f"({severity}, {urgency}, {certainty})")
    return to_xml_bytes(feed)
