"""One 気象庁防災情報XML telegram → the statements that drive evacuation.

Types read (the telegram type is recognised by ``Control/Title``):

=================================  ======================  =====================================
Control/Title                      type                    statements from
=================================  ======================  =====================================
指定河川洪水予報                    VXKO                    Head/Headline ``（河川）`` items; the
                                                           municipalities of Body 浸水想定地区
水位周知河川に関する情報             VXSU                    same, R06 names (レベル２氾濫注意報 …)
土砂災害警戒情報                    VXWW50                  Body ``Warning[@type=土砂災害警戒情報]``
気象警報・注意報（Ｈ２７）           VPWW54                  Body ``Warning[@type=…（市町村等）]``
気象警報・注意報（Ｒ０６）（…）      VPWW55–61               same, level in the name (レベル４…)
津波警報・注意報・予報a              VTSE41                  Body ``Tsunami/Forecast/Item``
=================================  ======================  =====================================

警戒レベル相当 follows 内閣府「避難情報に関するガイドライン」(令和3年5月, 令和6年の防災気象情報の見直し):
氾濫注意情報 2, 氾濫警戒情報 3, 氾濫危険情報 4, 氾濫発生情報 5; 土砂災害警戒情報 4; 大雨・洪水注意報 2,
大雨・洪水警報 3 (H27: 大雨警報 as 土砂災害 3), 大雨特別警報 5, 高潮注意報 2, 高潮警報 4, 高潮特別警報 5;
the R06 names carry their level (レベル４土砂災害危険警報 → 4). Tsunami lies outside the five levels;
the guideline asks for 避難指示 on 大津波警報/津波警報 and on 津波注意報 (for the shore), so Sonae uses
4 for warnings and 3 for 津波注意報 (route to 津波-rated sites at once). Other phenomena (暴風, 雷 …)
give no statement.

A telegram that cannot be read raises :class:`TelegramError` with a short ``reason`` (the caller
keeps the raw bytes with it); nothing else escapes :func:`parse`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from lxml import etree

from sonae.japantime import from_iso_format

NS = {
    "r": "http://xml.kishou.go.jp/jmaxml1/",
    "h": "http://xml.kishou.go.jp/jmaxml1/informationBasis1/",
    "m": "http://xml.kishou.go.jp/jmaxml1/body/meteorology1/",
    "s": "http://xml.kishou.go.jp/jmaxml1/body/seismology1/",
}

#: Control/Status values (jmx.xsd): 通常 real, 訓練 drill (exercise), 試験 test (ignored and counted)
STATUSES = ("通常", "訓練", "試験")
#: Head/InfoType values: 発表, 訂正 (replaces the same EventID), 取消 (retracts the EventID)
INFO_TYPES = ("発表", "訂正", "取消")

_RIVER = {"氾濫注意情報": 2, "氾濫警戒情報": 3, "氾濫危険情報": 4, "氾濫発生情報": 5}
_WARNING_H27 = {
    "大雨注意報": ("大雨", 2), "大雨警報": ("大雨", 3), "大雨特別警報": ("大雨", 5),
    "洪水注意報": ("洪水", 2), "洪水警報": ("洪水", 3),
    "高潮注意報": ("高潮", 2), "高潮警報": ("高潮", 4), "高潮特別警報": ("高潮", 5),
}
_TSUNAMI = {"大津波警報": 4, "大津波警報：発表": 4, "津波警報": 4, "津波注意報": 3}
_TSUNAMI_CLEARED = ("警報解除", "津波注意報解除", "津波なし")
_LEVEL_NAME = re.compile(r"^レベル([１-５1-5])(.+)$")
_DIGITS = str.maketrans("１２３４５", "12345")
#: phenomenon named in an R06 warning name (first match wins)
_PHENOMENA = ("土砂災害", "氾濫", "洪水", "大雨", "高潮", "津波")


class TelegramError(ValueError):
    """A telegram Sonae cannot read; ``reason`` is a short machine-readable cause."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Statement:
    """One thing a telegram says about one area.

    ``area_code`` is JMA's code as written (7-digit 市町村等, 3-digit 津波予報区, a river code …) in the
    code system ``area_type``; ``level`` is the 警戒レベル相当 (None: stated but no level, e.g. 津波予報);
    ``status`` 発表 / 継続 / 解除.
    """

    area_type: str
    area_code: str
    area_name: str
    phenomenon: str
    kind: str
    level: int | None
    status: str
    municipality_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Telegram:
    """A parsed telegram: its identity and ordering (``event_id``, ``serial``) and its statements."""

    type: str
    control_title: str
    title: str
    status: str
    info_type: str
    event_id: str
    serial: int
    date_time: datetime
    report_time: datetime
    valid_until: datetime | None
    editorial_office: str
    headline: str
    statements: tuple[Statement, ...] = field(default=())

    @property
    def exercise(self) -> bool:
        return self.status == "訓練"


def _text(node: etree._Element | None, path: str) -> str:
    if node is None:
        return ""
    found = node.find(path, NS)
    return (found.text or "").strip() if found is not None else ""


def _time(value: str, what: str) -> datetime:
    try:
        parsed = from_iso_format(value.replace("Z", "+00:00"))  # a leap second too (sonae.japantime)
    except ValueError:
        raise TelegramError("bad_datetime", f"{what} {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise TelegramError("bad_datetime", f"{what} {value!r} has no time zone")
    return parsed


#: how far ahead of this host's clock a telegram's ordering times may be, s: the tolerance MQTT ingest gives a
#: device (``ingest.max_future_s``, 300 s by default) for clocks a little apart; JMA stamps telegrams as it
#: issues them, so any more is a wrong or forged clock
MAX_FUTURE_S = 300.0


def check_clock(telegram: Telegram, *, now: datetime, max_future_s: float = MAX_FUTURE_S) -> None:
    """Refuse a telegram whose ordering times lie implausibly in the future.

    ``Head/ReportDateTime`` orders an event's telegrams (:mod:`jma.store`: a telegram older than the newest
    applied one is ``stale``), and ``Control/DateTime`` is when it was sent; ``Head/ValidDateTime`` is an end
    of validity, in the future by nature, and orders nothing. Found: a 取消 dated 2099-01-01T00:00:00+09:00
    was applied, and every genuine telegram of its event after it was filed ``stale`` and ignored.

    Raises
    ------
    TelegramError
        ``future_datetime``, naming the field and its time, when it is more than ``max_future_s`` seconds
        after ``now`` (an aware datetime).
    """
    latest = now + timedelta(seconds=max_future_s)
    for what, when in (("Head/ReportDateTime", telegram.report_time), ("Control/DateTime", telegram.date_time)):
        if when > latest:
            raise TelegramError("future_datetime", f"{what} {when.isoformat()} is more than {max_future_s:g} s "
                                                   f"ahead of this host's clock ({now.isoformat()})")


def kind_of(control_title: str) -> str | None:
    """Telegram type code for a ``Control/Title``, or None for a type Sonae does not read."""
    if control_title == "指定河川洪水予報":
        return "VXKO"
    if control_title == "水位周知河川に関する情報":
        return "VXSU"
    if control_title == "土砂災害警戒情報":
        return "VXWW50"
    if control_title == "気象警報・注意報（Ｈ２７）":
        return "VPWW54"
    if control_title.startswith("気象警報・注意報（Ｒ０６）"):
        return "VPWW55-61"
    if control_title.startswith("津波警報・注意報・予報"):
        return "VTSE41"
    return None


def _level_name(name: str) -> tuple[str, int] | None:
    """(phenomenon, level) of an R06 level name such as レベル４土砂災害危険警報."""
    match = _LEVEL_NAME.match(name)
    if not match:
        return None
    level = int(match[1].translate(_DIGITS))
    phenomenon = next((p for p in _PHENOMENA if p in match[2]), match[2])
    return ("洪水" if phenomenon == "氾濫" else phenomenon), level


def parse(data: bytes) -> Telegram:
    """Parse one telegram.

    Parameters
    ----------
    data : bytes
        The telegram as received (UTF-8 XML).

    Returns
    -------
    Telegram
        With its statements; a type Sonae does not read raises ``TelegramError('unsupported_type')``.

    Raises
    ------
    TelegramError
        ``not_xml``, ``not_jmx``, ``missing_field``, ``bad_status``, ``bad_info_type``, ``bad_serial``,
        ``bad_datetime``, ``unsupported_type``.
    """
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise TelegramError("not_xml", str(exc)[:200]) from None
    if root.tag != f"{{{NS['r']}}}Report":
        raise TelegramError("not_jmx", f"root element is {root.tag!r}, not jmx Report")
    control = root.find("r:Control", NS)
    head = root.find("h:Head", NS)
    if control is None or head is None:
        raise TelegramError("missing_field", "Control or Head is missing")
    control_title = _text(control, "r:Title")
    status = _text(control, "r:Status")
    if status not in STATUSES:
        raise TelegramError("bad_status", f"Control/Status {status!r}")
    info_type = _text(head, "h:InfoType")
    if info_type not in INFO_TYPES:
        raise TelegramError("bad_info_type", f"Head/InfoType {info_type!r}")
    # Warnings (VPWW5x) carry an empty EventID: each telegram restates the whole office's warnings,
    # so the office and the telegram title are the event.
    event_id = _text(head, "h:EventID") or f"{control_title}/{_text(control, 'r:EditorialOffice')}"
    serial_text = _text(head, "h:Serial") or "0"
    if not serial_text.isascii() or not serial_text.isdigit() or len(serial_text) > 9:
        raise TelegramError("bad_serial", f"Head/Serial {serial_text!r}")
    kind = kind_of(control_title)
    if kind is None:
        raise TelegramError("unsupported_type", f"Control/Title {control_title!r}")
    valid = _text(head, "h:ValidDateTime")
    telegram = Telegram(
        type=kind, control_title=control_title, title=_text(head, "h:Title"), status=status,
        info_type=info_type, event_id=event_id, serial=int(serial_text),
        date_time=_time(_text(control, "r:DateTime"), "Control/DateTime"),
        report_time=_time(_text(head, "h:ReportDateTime"), "Head/ReportDateTime"),
        valid_until=_time(valid, "Head/ValidDateTime") if valid else None,
        editorial_office=_text(control, "r:EditorialOffice"),
        headline=_text(head, "h:Headline/h:Text"),
    )
    if info_type == "取消":
        return telegram  # retracts the EventID: no statements
    body = root.find("m:Body", NS) if kind != "VTSE41" else root.find("s:Body", NS)
    if body is None:
        raise TelegramError("missing_field", "Body is missing")
    if kind in ("VXKO", "VXSU"):
        statements = _river(head, body)
    elif kind == "VXWW50":
        statements = _landslide(body)
    elif kind == "VTSE41":
        statements = _tsunami(body)
    else:
        statements = _warnings(body)
    return _replace(telegram, statements)


def _replace(telegram: Telegram, statements: list[Statement]) -> Telegram:
    from dataclasses import replace

    return replace(telegram, statements=tuple(statements))


def _river(head: etree._Element, body: etree._Element) -> list[Statement]:
    """VXKO/VXSU: the river (Headline ``…（河川）``) and the municipalities of 浸水想定地区."""
    cities: list[str] = []
    for area in body.iterfind(".//m:Warning/m:Item/m:Areas/m:Area", NS):
        code = _text(area, "m:CityCode")
        if code and code not in cities:
            cities.append(code)
    out = []
    for info in head.iterfind("h:Headline/h:Information", NS):
        if not (info.get("type") or "").endswith("（河川）"):
            continue
        for item in info.iterfind("h:Item", NS):
            name = _text(item, "h:Kind/h:Name")
            level = _RIVER.get(name)
            if level is None and name.startswith("氾濫発生情報"):
                level = 5
            named = _level_name(name)
            if named is not None:
                level = named[1]
            cleared = "解除" in name
            if level is None and not cleared:
                continue
            for area in item.iterfind("h:Areas/h:Area", NS):
                out.append(Statement("河川", _text(area, "h:Code"), _text(area, "h:Name"), "洪水", name,
                                     None if cleared else level, "解除" if cleared else "発表",
                                     tuple(cities)))
    return out


def _landslide(body: etree._Element) -> list[Statement]:
    """VXWW50: each municipality's Kind (警戒 → レベル4相当, 解除, なし → no statement)."""
    out = []
    for warning in body.iterfind("m:Warning", NS):
        if warning.get("type") != "土砂災害警戒情報":
            continue
        for item in warning.iterfind("m:Item", NS):
            name = _text(item, "m:Kind/m:Name")
            status = _text(item, "m:Kind/m:Status")
            if name == "なし" or status == "なし":
                continue
            cleared = status == "解除" or name == "解除"
            for area in item.iterfind("m:Area", NS):
                out.append(Statement("市町村等", _text(area, "m:Code"), _text(area, "m:Name"), "土砂災害",
                                     "土砂災害警戒情報", None if cleared else 4,
                                     "解除" if cleared else (status or "発表")))
    return out


def _warnings(body: etree._Element) -> list[Statement]:
    """VPWW54/VPWW55–61: ``Warning[@type=気象警報・注意報（市町村等）]`` items by municipality."""
    out = []
    for warning in body.iterfind("m:Warning", NS):
        if warning.get("type") != "気象警報・注意報（市町村等）":
            continue
        for item in warning.iterfind("m:Item", NS):
            areas = [(_text(a, "m:Code"), _text(a, "m:Name")) for a in item.iterfind("m:Area", NS)]
            for kind in item.iterfind("m:Kind", NS):
                name = _text(kind, "m:Name")
                status = _text(kind, "m:Status")
                named = _level_name(name) or _WARNING_H27.get(name)
                if status == "解除":
                    last = _text(kind, "m:LastKind/m:Name")
                    named = _level_name(last) or _WARNING_H27.get(last)
                    if named is None:
                        continue
                    for code, area_name in areas:
                        out.append(Statement("市町村等", code, area_name, named[0], last, None, "解除"))
                    continue
                if named is None:
                    continue
                for code, area_name in areas:
                    out.append(Statement("市町村等", code, area_name, named[0], name, named[1],
                                         "継続" if status == "継続" else "発表"))
    return out


def _tsunami(body: etree._Element) -> list[Statement]:
    """VTSE41: ``Tsunami/Forecast/Item`` per 津波予報区 (福島県 = 250)."""
    out = []
    for item in body.iterfind("s:Tsunami/s:Forecast/s:Item", NS):
        code, name = _text(item, "s:Area/s:Code"), _text(item, "s:Area/s:Name")
        kind = _text(item, "s:Category/s:Kind/s:Name")
        last = _text(item, "s:Category/s:LastKind/s:Name")
        if kind in _TSUNAMI:
            status = "継続" if last == kind or last.split("：")[0] == kind.split("：")[0] else "発表"
            out.append(Statement("津波予報区", code, name, "津波", kind, _TSUNAMI[kind], status))
        elif kind in _TSUNAMI_CLEARED or (kind.startswith("津波予報") and last in _TSUNAMI):
            out.append(Statement("津波予報区", code, name, "津波", kind, None, "解除"))
    return out
