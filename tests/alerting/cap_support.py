"""Validating CAP against the official OASIS CAP 1.2 schema (two validators: xmlschema and lxml)."""

from __future__ import annotations

import functools

import xmlschema
from lxml import etree

from tests.conftest import shared_data


@functools.cache
def cap_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(shared_data("cap", "CAP-v1.2.xsd")))


@functools.cache
def cap_lxml() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(shared_data("cap", "CAP-v1.2.xsd"))))


def assert_valid_cap(xml: bytes) -> None:
    cap_schema().validate(xml.decode("utf-8").split("?>", 1)[1] if xml.startswith(b"<?xml") else xml.decode())
    doc = etree.fromstring(xml)
    assert cap_lxml().validate(doc), cap_lxml().error_log
