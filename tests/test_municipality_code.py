"""The municipality code: one 6-digit form, JIS X 0402 check digit (issue #14 item 2)."""

from __future__ import annotations

import argparse
import csv

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evac.drilltown import DRILL_TOWN_CODE
from ingest.contract import Parser, PayloadError, parse_topic
from ingest.municipalities import packaged_municipalities
from sonae.municipality_code import (
    MunicipalityCodeError,
    check_digit,
    is_valid,
    normalise,
    normalise_optional,
)
from tests.conftest import shared_data


def _shared_rows(name: str) -> list[dict[str, str]]:
    path = shared_data("municipalities", name)
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def test_known_codes() -> None:
    assert normalise("07203") == normalise("072036") == "072036"  # 郡山市
    assert normalise("07201") == "072010"  # 福島市
    assert normalise("13101") == "131016"  # 千代田区
    # taken exactly as written (found: ?municipality=07203%0A was 07203): the CSV reader trims its own cells
    with pytest.raises(MunicipalityCodeError, match="without spaces or line breaks"):
        normalise(" 072036 ")
    assert normalise_optional("") is None and normalise_optional(None) is None


def test_every_published_code_passes_and_its_five_digits_give_it_back() -> None:
    """Oracle: the 総務省 list and the J-LIS list carry the 6-digit codes as published."""
    soumu = _shared_rows("soumu_000562730_lgcode_2018.csv")
    japan = _shared_rows("japan_municipalities.csv")
    codes = {r["code"] for r in soumu} | {r["lgcode6"] for r in japan}
    assert len(codes) > 1900
    for code in codes:
        assert normalise(code[:5]) == code and is_valid(code)
    assert {r["lgcode6"][:5] for r in japan} == {r["code5"] for r in japan}
    # the remainders 0 and 1 (check digits 1 and 0) both occur in the list
    assert {check_digit(c[:5]) for c in codes} == set("0123456789")


def test_wrong_check_digit_names_the_right_code() -> None:
    with pytest.raises(MunicipalityCodeError, match="072036"):
        normalise("072037")
    for bad in ("7203", "0720366", "KORI", "07 03", "０７２０３", ""):
        with pytest.raises(MunicipalityCodeError, match="団体コード"):
            normalise(bad)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789", min_size=5, max_size=5), st.integers(min_value=1, max_value=9))
def test_any_five_digits_and_any_other_check_digit(code5: str, shift: int) -> None:
    six = normalise(code5)
    assert six[:5] == code5 and normalise(six) == six and is_valid(six)
    wrong = code5 + str((int(six[5]) + shift) % 10)
    with pytest.raises(MunicipalityCodeError) as info:
        normalise(wrong)
    assert six in str(info.value)


def test_drill_town_code_is_valid_and_no_municipality() -> None:
    assert is_valid(DRILL_TOWN_CODE) and DRILL_TOWN_CODE.startswith("07")
    shipped = {m.code for m in packaged_municipalities()}
    assert DRILL_TOWN_CODE not in shipped
    soumu = {r["code"] for r in _shared_rows("soumu_000562730_lgcode_2018.csv")}
    assert DRILL_TOWN_CODE not in soumu
    assert not is_valid("079999")  # the former code, rewritten by the migrations


def test_topic_codes_are_normalised_and_a_bad_check_digit_is_a_reason() -> None:
    assert parse_topic("sonae/v1/07203/akutsu/level", "sonae/v1").municipality == "072036"
    assert parse_topic("sonae/v1/072036/akutsu/level", "sonae/v1").municipality == "072036"
    with pytest.raises(PayloadError) as info:
        Parser().parse("sonae/v1/072037/akutsu/level", b'{"ts": 1764379200, "value": 1.0}')
    assert info.value.reason == "bad_municipality_code" and "072036" in info.value.detail
    with pytest.raises(PayloadError) as info:
        parse_topic("sonae/v1/koriyama/akutsu/level", "sonae/v1")
    assert info.value.reason == "bad_topic"


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=0, max_size=8))
def test_any_topic_segment_is_a_normal_code_or_a_reasoned_error(segment: str) -> None:
    topic = f"sonae/v1/{segment}/akutsu/level"
    try:
        got = parse_topic(topic, "sonae/v1").municipality
    except PayloadError as exc:
        assert exc.reason in ("bad_topic", "bad_municipality_code") and exc.detail
    else:
        assert is_valid(got) and got[:5] == segment[:5]


def test_shipped_list_covers_japan_with_kana_and_romaji() -> None:
    shipped = {m.code: m for m in packaged_municipalities()}
    japan = _shared_rows("japan_municipalities.csv")
    assert set(shipped) == {r["lgcode6"] for r in japan}
    kori = shipped["072036"]
    assert (kori.name_ja, kori.name_kana, kori.name_en, kori.prefecture) == ("郡山市", "こおりやまし", "Koriyama City",
                                                                             "福島県")
    fukushima = [m for m in shipped.values() if m.code.startswith("07")]
    assert len(fukushima) == 59 and all(m.name_kana and m.name_en for m in fukushima)


def _municipality_options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The commands (as their words) that have a ``--municipality`` option, anywhere in the parser's tree."""
    found = [path] if any("--municipality" in a.option_strings for a in parser._actions) else []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _municipality_options(sub, (*path, name))
    return found


#: each command with a --municipality option, with the other arguments it needs to parse
_WITH_MUNICIPALITY = {
    ("users", "add"): ["kori", "--role", "staff"],
    ("webhooks", "add"): ["https://partner.example/h"],
    ("graph", "fetch"): [],
    ("devices", "add"): ["gauge-1"],
    ("simulate",): ["--replay", "jiseiji"],
}


@pytest.mark.parametrize("command", list(_WITH_MUNICIPALITY))
def test_cli_arguments_take_either_form_and_name_the_right_code(command: tuple[str, ...],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Every ``--municipality`` takes the 5-digit code as the 6-digit one (found: ``sonae graph fetch
    --municipality 07203`` was refused, ``sonae devices add`` checked it only after asking for the database);
    a wrong check digit is one usage line naming the right code, status 2."""
    from app.cli import build_parser

    args = build_parser().parse_args([*command, *_WITH_MUNICIPALITY[command], "--municipality", "07203"])
    assert args.municipality in ("072036", ["072036"]), command
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*command, *_WITH_MUNICIPALITY[command], "--municipality", "072037"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "check digit" in err and "'072036'" in err and "Traceback" not in err, err


def test_every_municipality_option_is_among_those_tested() -> None:
    from app.cli import build_parser

    assert sorted(_municipality_options(build_parser())) == sorted(_WITH_MUNICIPALITY)


def test_imported_shelters_and_device_acls_use_the_six_digit_code() -> None:
    from app.provisioning import ProvisioningError, grants_for
    from evac.shelters import shelter_from_properties

    shelter = shelter_from_properties({"id": "a", "municipality_code": "07203"}, lon=140.36, lat=37.4, fallback_id="x")
    assert shelter.municipality_code == "072036"
    legacy = shelter_from_properties({"id": "b", "municipality_code": "079999"}, lon=140.36, lat=37.4, fallback_id="x")
    assert legacy.municipality_code == DRILL_TOWN_CODE
    with pytest.raises(ValueError, match="072036"):
        shelter_from_properties({"id": "c", "municipality_code": "072037"}, lon=140.36, lat=37.4, fallback_id="x")
    (grant,) = grants_for("device", "gauge-1", municipalities=["07203"])
    assert grant.topic == "sonae/v1/072036/gauge-1/+"
    with pytest.raises(ProvisioningError, match="072036"):
        grants_for("device", "gauge-1", municipalities=["072037"])
