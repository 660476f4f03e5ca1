"""What each channel says about one alert change, in each language.

* **Push**: a short notification (title, body ≤ 240 characters, a link to the resident page in the
  subscriber's language) — the texts of :mod:`alerting.texts`, prefixed 【訓練】/[EXERCISE] for drills.
* **Webhook**: a JSON document (the event, the alert as the API shows it, the three languages' texts
  and links), or the CAP 1.2 message of the alert's version for partners that asked for CAP.
* **Email**: a subject and a plain-text body for on-call staff.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from alerting.cap import place_name, render_cap
from alerting.cap_identity import CapProfile
from alerting.store import alert_json
from alerting.texts import LANGUAGES, Text, cleared_text, last_reading, text_for

#: the resident page's own language codes
PAGE_LANG = {"ja-JP": "ja", "en-US": "en", "ja-JP-x-easy": "ja-easy"}
#: event kinds that are notified (acknowledgements are staff bookkeeping, not news); ``moved`` (the alert's
#: station now lies in another municipality: alerting.store.move_alert) reaches the targets of the new one,
#: whose webhooks, on-call staff and residents' areas had not been told of the alert
NOTIFIED_KINDS = ("raised", "escalated", "de-escalated", "cleared", "moved")
_DRILL = {"ja-JP": "【訓練】", "en-US": "[EXERCISE] ", "ja-JP-x-easy": "【くんれん】"}
_LEVEL_WORD = {"ja-JP": "警戒レベル{n}", "en-US": "Alert level {n}", "ja-JP-x-easy": "けいかいレベル{n}"}


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z") if ts else None


def is_ending(event: dict[str, Any]) -> bool:
    """The change ends what residents were told: cleared, or down below the public levels."""
    return event["kind"] == "cleared" or (event["kind"] == "de-escalated" and (event["level"] or 0) < 2)


def text_of(alert: dict[str, Any], event: dict[str, Any], lang: str) -> Text:
    place = place_name(alert, lang=lang)
    level = int(event["level"] if event["level"] is not None else alert["level"])
    if is_ending(event):
        return cleared_text(alert["condition"], int(event["old_level"] or alert["level"] or 1), lang, place,
                            reason=event.get("reason") or alert.get("reason"))
    if event["kind"] in ("raised", "escalated", "de-escalated"):
        reason, falling = event.get("reason") or alert.get("reason"), event["kind"] == "de-escalated"
    else:
        # an event that does not change the level (``moved``: the reason is the move) is worded by what holds the
        # level, as the alert stood at the event — a level the river fell to, a trend's forecast —, never "reached"
        reason, falling = alert.get("reason"), alert.get("state") == "de-escalated"
    t = text_for(alert["condition"], level, lang, reason=reason, falling=falling, dwell_s=alert.get("dwell_s"))
    headline = t.headline.format(place=place)
    # a level lowered by time: its last reading as such, with that reading's time (the alert as the event left it)
    last = last_reading(lang, value=alert.get("value"), at=alert.get("value_at"))
    if last is not None:
        headline = f"{headline} {last}"
    return Text(t.event, headline, t.instruction)


def page_url(base_url: str, lang: str, alert_id: int) -> str:
    return f"{base_url}/?lang={PAGE_LANG[lang]}&alert={alert_id}"


def push_payload(alert: dict[str, Any], event: dict[str, Any], lang: str, base_url: str) -> dict[str, Any]:
    t = text_of(alert, event, lang)
    drill = _DRILL[lang] if alert["exercise"] else ""
    body = f"{t.headline} {t.instruction}"
    if len(body) > 240:
        body = body[:239] + "…"
    return {"title": f"{drill}{t.event}"[:120], "body": body, "url": page_url(base_url, lang, alert["id"]),
            "lang": lang, "alert_id": alert["id"], "event_id": event["id"], "level": event["level"],
            "kind": event["kind"], "exercise": alert["exercise"],
            # a newer message about the same alert replaces this one on the device
            "tag": f"sonae-alert-{alert['id']}"}


def webhook_json(alert: dict[str, Any], event: dict[str, Any], base_url: str) -> dict[str, Any]:
    texts = {}
    for lang in LANGUAGES:
        t = text_of(alert, event, lang)
        texts[lang] = {"event": (_DRILL[lang] if alert["exercise"] else "") + t.event, "headline": t.headline,
                       "instruction": t.instruction}
    return {
        "type": "sonae.alert",
        "exercise": alert["exercise"],
        "event": {"id": event["id"], "kind": event["kind"], "level": event["level"], "old_level": event["old_level"],
                  "recorded_at": _iso(event["recorded_at"]), "actor": event["actor"]},
        "alert": alert_json(alert),
        "texts": texts,
        "links": {"cap": f"{base_url}/api/v1/alerts/{alert['id']}.cap",
                  "page": {lang: page_url(base_url, lang, alert["id"]) for lang in LANGUAGES}},
    }


def webhook_cap(alert: dict[str, Any], previous: list[dict[str, Any]], profile: CapProfile) -> str:
    return render_cap(alert, previous, profile=profile).decode()


def email_payload(alert: dict[str, Any], event: dict[str, Any], lang: str, base_url: str) -> dict[str, Any]:
    t = text_of(alert, event, lang)
    drill = _DRILL[lang] if alert["exercise"] else ""
    level = event["level"] if event["level"] is not None else event["old_level"]
    subject = f"[Sonae] {drill}{_LEVEL_WORD[lang].format(n=level)} {t.event}"
    lines = [t.headline, t.instruction, ""]
    if alert.get("value") is not None and alert.get("station_id"):
        lines.append(f"{alert['station_id']}: {alert['value']:.2f} m")
    lines += [f"alert {alert['id']} / event {event['id']} ({event['kind']})",
              f"{base_url}/staff", f"{base_url}/api/v1/alerts/{alert['id']}.cap"]
    if alert["exercise"]:
        lines.insert(0, "訓練 / EXERCISE — this is a drill.")
    return {"subject": subject[:200], "body": "\n".join(lines), "lang": lang}
