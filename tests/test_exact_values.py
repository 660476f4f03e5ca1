"""Values from the public are taken exactly as sent, or refused: nothing around them is trimmed.

Found by a tester: parsers ``strip()``-ed what the public sends, so ``?municipality=07203%0A``,
``from=2026-12-02%0A``, ``bbox=…%0A``, ``SONAE_API_PORT=$'2\\n'`` (or ８０９１, ٨٠٩١, 8_091) and ``--overpass-url
$'https://x/api\\n'`` were taken as if clean. The oracle of each property: a value the parser accepts, with a
blank, line break or other control character added at either end, is refused.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ngsi.query import QueryError, compile_pattern, parse_geo, parse_q
from sonae import arguments
from sonae.config import ConfigError, load_settings
from sonae.exacttext import loose_end
from sonae.japantime import QUERY_TIME_RULE, TIME_RULE, parse_iso_time, parse_query_time
from sonae.municipality_code import MunicipalityCodeError, normalise, normalise_municipality
from sonae.numbers import parse_bbox

#: what the tester added: \n \r \t \v \f, NEL, U+2028/2029, a space; and other controls and separators
AROUND = ["\n", "\r", "\t", "\v", "\f", "\x85", "\u2028", "\u2029", " ", "\x00", "\x1f", "\u3000", "\ufeff", "\r\n"]
around = st.sampled_from(AROUND)
sides = st.sampled_from(["start", "end", "both"])


def _wrapped(value: str, extra: str, side: str) -> str:
    return (extra if side != "end" else "") + value + (extra if side != "start" else "")


def test_loose_end_names_what_is_around() -> None:
    assert loose_end("07203") is None and loose_end("a b") is None and loose_end("") is None
    assert loose_end("07203\n") == "U+000A at its end" and loose_end("\u2028x") == "U+2028 at its start"


# -- municipality codes -----------------------------------------------------------------------------------------
codes = st.sampled_from(["07203", "072036", "07201", "13101", "131016"])


@given(codes, around, sides)
def test_a_municipality_code_with_anything_around_it_is_refused(code: str, extra: str, side: str) -> None:
    assert normalise(code) == normalise_municipality(code)
    with pytest.raises(MunicipalityCodeError, match="without spaces or line breaks"):
        normalise(_wrapped(code, extra, side))


# -- times ------------------------------------------------------------------------------------------------------
times = st.datetimes(min_value=__import__("datetime").datetime(1901, 1, 1),
                     max_value=__import__("datetime").datetime(2198, 1, 1)).flatmap(
    lambda t: st.sampled_from([t.date().isoformat(), t.isoformat(timespec="minutes"), t.isoformat() + "Z",
                               t.isoformat(timespec="seconds") + "+09:00"]))


@given(times, around, sides)
def test_a_time_with_anything_around_it_is_refused_in_words(text: str, extra: str, side: str) -> None:
    parse_query_time(text)
    with pytest.raises(ValueError) as err:
        parse_query_time(_wrapped(text, extra, side))
    assert str(err.value) == QUERY_TIME_RULE and QUERY_TIME_RULE.startswith(TIME_RULE)


@pytest.mark.parametrize("text", ["2026-12-02T09:00+99:00", "٢٠٢٦-07-12", "２０２６-07-12", "2026-13-01", "x",
                                  "2026-12-02\n"])
def test_a_refused_time_says_the_rule_and_no_python_internals(text: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_iso_time(text)
    message = str(err.value)
    assert message == TIME_RULE and "timedelta" not in message and "isoformat" not in message
    assert "±24 h" in message and "ASCII digits" in message


# -- bounding boxes ---------------------------------------------------------------------------------------------
boxes = st.tuples(st.integers(-179, 178), st.integers(-89, 88)).map(
    lambda ws: f"{ws[0]},{ws[1]},{ws[0] + 1}.5,{ws[1] + 1}")


@given(boxes, around, sides, st.integers(0, 3))
def test_a_bbox_with_anything_around_it_or_a_number_is_refused(box: str, extra: str, side: str, at: int) -> None:
    parse_bbox(box)
    with pytest.raises(ValueError):
        parse_bbox(_wrapped(box, extra, side))
    parts = box.split(",")
    parts[at] = _wrapped(parts[at], extra, side)
    with pytest.raises(ValueError, match="no spaces or line breaks"):
        parse_bbox(",".join(parts))
    with pytest.raises(argparse.ArgumentTypeError):
        arguments.bbox(",".join(parts))
    assert arguments.bbox(box) == parse_bbox(box)


# -- NGSI-LD q, idPattern, coordinates --------------------------------------------------------------------------
ngsi_texts: list[tuple[str, Callable[[str], Any]]] = [
    ("waterLevel>2.5", parse_q), ("waterLevel", parse_q), ("a==1;b<2", parse_q),
    ("urn:ngsi-ld:WaterObserved:.*", lambda t: compile_pattern(t, name="idPattern")),
    ("[140.47,37.75]", lambda t: parse_geo("near;maxDistance==100", "Point", t, None)),
]


@given(st.sampled_from(ngsi_texts), around, sides)
def test_ngsi_ld_texts_with_anything_around_them_are_refused(case: tuple[str, Callable[[str], Any]], extra: str,
                                                             side: str) -> None:
    text, parse = case
    parse(text)
    with pytest.raises(QueryError, match="exactly as sent"):
        parse(_wrapped(text, extra, side))


# -- environment numbers ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("written", ["８０９１", "٨٠٩١", "8_091", "2\n", " 8091", "8091 ", "abc", "", "0x1F9B"])
def test_an_environment_port_is_ascii_digits_only_and_a_refusal_says_the_range(written: str) -> None:
    if written == "":
        return  # an empty variable is unset
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"SONAE_API_PORT": written})
    message = str(err.value)
    assert message.startswith(f"SONAE_API_PORT={written!r}: ") and "ASCII digits" in message, message
    assert "expected a port number from" in message, message  # the range, also for what is no number at all


@pytest.mark.parametrize("written", ["abc", "nan", "inf", "-inf", "1_0", " 5", "5\n", "５", "1e9", "0x10"])
def test_an_environment_decimal_is_ascii_and_a_refusal_says_the_range(written: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"SONAE_SIMULATORS_DEMO_TIME_SCALE": written})
    message = str(err.value)
    assert message.startswith(f"SONAE_SIMULATORS_DEMO_TIME_SCALE={written!r}: ") and "from 1 (real time) to 600" \
        in message, message


@given(st.integers(1024, 65535), around, sides)
def test_an_environment_number_with_anything_around_it_is_refused(port: int, extra: str, side: str) -> None:
    assert load_settings(environ={"SONAE_API_PORT": str(port)})["api.port"] == port
    with pytest.raises(ConfigError, match="ASCII digits"):
        load_settings(environ={"SONAE_API_PORT": _wrapped(str(port), extra, side)})


@given(st.sampled_from(["true", "false", "1", "0"]), around, sides)
def test_an_environment_flag_with_anything_around_it_is_refused(flag: str, extra: str, side: str) -> None:
    load_settings(environ={"SONAE_NOTIFY_PUSH_ALLOW_HTTP": flag})
    with pytest.raises(ConfigError, match="expected true or false"):
        load_settings(environ={"SONAE_NOTIFY_PUSH_ALLOW_HTTP": _wrapped(flag, extra, side)})


# -- command-line arguments -------------------------------------------------------------------------------------
arg_cases: list[tuple[str, Callable[[str], Any]]] = [
    ("https://x.example/api", arguments.http_url), ("072036", arguments.municipality_code),
    ("8091", arguments.port), ("12", arguments.row_id), ("郡山市, 福島県", arguments.text),
]


@given(st.sampled_from(arg_cases), around, sides)
def test_a_command_line_value_with_anything_around_it_is_refused(case: tuple[str, Callable[[str], Any]], extra: str,
                                                                 side: str) -> None:
    value, parse = case
    parse(value)
    with pytest.raises(argparse.ArgumentTypeError):
        parse(_wrapped(value, extra, side))


@pytest.mark.parametrize("place", ["", "\n", " ", "\t\r\n", "a\x00b"])
def test_a_blank_or_control_place_is_refused(place: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        arguments.text(place)
