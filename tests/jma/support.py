"""JMA sample telegrams (../shared/data/jma) and a way to put a real Fukushima municipality into one."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import shared_data

SAMPLES = shared_data("jma", "samples")
SCHEMA = shared_data("jma", "schema", "jmx.xsd")
REAL = shared_data("jma", "real", "shirasagi")

#: the 2025 神奈川県 landslide sequence: 発表 (小田原市 …), 継続/発表, 解除
LANDSLIDE = ("17_04_01_250630_VXWW50.xml", "17_04_02_250630_VXWW50.xml", "17_04_03_250630_VXWW50.xml")


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def samples() -> list[Path]:
    return sorted(SAMPLES.glob("*.xml"))


def substitute(data: bytes, *, code7: str, name: str, as_code7: str, as_name: str,
               status: str | None = None) -> bytes:
    """The telegram with one area (code and name) replaced by another, optionally another Control/Status."""
    text = data.decode("utf-8")
    text = text.replace(f"<Code>{code7}</Code>", f"<Code>{as_code7}</Code>")
    text = text.replace(f"<Name>{name}</Name>", f"<Name>{as_name}</Name>")
    if status is not None:
        text = re.sub(r"<Status>通常</Status>", f"<Status>{status}</Status>", text, count=1)
    return text.encode("utf-8")
