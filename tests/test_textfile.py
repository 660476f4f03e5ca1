"""The one reader of operators' text files (``sonae.textfile``) and the importers that use it.

The reader is total: any bytes (raw, gzip- or xz-compressed) give text PostgreSQL can store or a
TextFileError naming the file, never another exception. Text written in an accepted way (UTF-8 with or
without a BOM, UTF-16/32 with one, compressed or not) comes back unchanged. The importers (station
registry, municipality list, N03 boundaries) share it, so they refuse the same files the same way, each
with its own error type; hypothesis draws hostile bytes for them too.
"""

from __future__ import annotations

import codecs
import gzip
import lzma
import re
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ingest.boundaries import BoundaryError, read_n03
from ingest.municipalities import MunicipalityListError, load_municipalities
from ingest.registry import RegistryError, load_stations
from sonae.pgtext import unstorable
from sonae.textfile import TextFileError, decode_text, read_text_file
from tests.conftest import SHARED

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# text PostgreSQL can store (no NUL; the utf-8 codec excludes surrogates)
STORABLE = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=200)
ENCODINGS = [("utf-8", b""), ("utf-8", codecs.BOM_UTF8), ("utf-16-le", codecs.BOM_UTF16_LE),
             ("utf-16-be", codecs.BOM_UTF16_BE), ("utf-32-le", codecs.BOM_UTF32_LE), ("utf-32-be", codecs.BOM_UTF32_BE)]
# bytes that exercise every branch: BOMs, magic numbers, NUL, CP932 and UTF-8 fragments, invalid sequences
FRAGMENTS = st.sampled_from([codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE,
                             b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x00", b"\n", b",", b"\xed\xa0\x80", b"\xd8\x00",
                             "郡山市".encode("cp932"), "郡山市".encode(), b"\xff", b"\xc3", b"id,name\n"])
HOSTILE = st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(FRAGMENTS, st.binary(max_size=8)), max_size=20).map(b"".join),
    st.builds(lambda body, cut: gzip.compress(body)[:cut], st.binary(max_size=200), st.integers(0, 300)),
    st.builds(lambda body, cut: lzma.compress(body)[:cut], st.binary(max_size=200), st.integers(0, 300)),
)
COMPRESS = [("plain", lambda b: b), ("gzip", gzip.compress), ("xz", lzma.compress)]


@PROPERTY
@given(raw=HOSTILE)
def test_any_bytes_give_storable_text_or_an_error_naming_the_file(raw: bytes) -> None:
    try:
        text = decode_text(raw, source="hostile.csv", max_bytes=10_000)
    except TextFileError as exc:
        assert str(exc).startswith("hostile.csv")
    else:
        assert unstorable(text) is None
        if not raw.startswith((b"\x1f\x8b", b"\xfd7zXZ\x00", codecs.BOM_UTF8, codecs.BOM_UTF16_LE,
                               codecs.BOM_UTF16_BE)):
            assert text == raw.decode("utf-8")  # plain UTF-8 without a BOM: the bytes as they are


@PROPERTY
@given(text=STORABLE, encoding=st.sampled_from(ENCODINGS), compress=st.sampled_from(COMPRESS))
def test_text_written_an_accepted_way_comes_back_unchanged(text: str, encoding: tuple[str, bytes],
                                                           compress: tuple[str, object]) -> None:
    codec, bom = encoding
    if not bom and text.startswith("\ufeff"):
        text = "x" + text  # without a BOM, a leading U+FEFF would be read as one (as Excel does)
    raw = compress[1](bom + text.encode(codec))  # type: ignore[operator]
    assert decode_text(raw, source="t.csv") == text


@PROPERTY
@given(head=STORABLE, tail=STORABLE, compress=st.sampled_from(COMPRESS))
def test_a_nul_character_is_refused_with_its_line(head: str, tail: str, compress: tuple[str, object]) -> None:
    raw = compress[1]((head + "\x00" + tail).encode())  # type: ignore[operator]
    line = head.count("\n") + 1
    with pytest.raises(TextFileError, match=rf"^t\.csv line {line}: contains a NUL character"):
        decode_text(raw, source="t.csv")


@pytest.mark.parametrize(("name", "compress"), COMPRESS)
def test_the_size_limit_holds_for_the_file_and_its_decompressed_content(tmp_path: Path, name: str,
                                                                        compress: object) -> None:
    path = tmp_path / f"big.{name}"
    path.write_bytes(compress(b"a" * 4096))  # type: ignore[operator]
    assert read_text_file(path, max_bytes=4096) == "a" * 4096
    with pytest.raises(TextFileError, match=re.escape(str(path)) + ": (larger than|decompresses to more than) "
                                            "the limit of 4,095 bytes"):
        read_text_file(path, max_bytes=4095)


def test_a_decompression_bomb_is_refused_without_expanding_it(tmp_path: Path) -> None:
    """1 GiB of zeros in a 1 MB gzip: refused at the limit, having held no more than a few times the limit."""
    path = tmp_path / "bomb.csv.gz"
    block = gzip.compress(b"\x00" * (64 << 20), compresslevel=9)
    path.write_bytes(block * 16)  # 16 gzip members: 1 GiB decompressed
    limit = 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(TextFileError, match="decompresses to more than the limit of 1,048,576 bytes"):
            read_text_file(path, max_bytes=limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * limit + path.stat().st_size, f"peak {peak:,} bytes"


def test_shift_jis_is_named_with_how_to_convert(tmp_path: Path) -> None:
    """The real municipality list saved as Excel saves a CSV on Japanese Windows (CP932)."""
    source = SHARED / "municipalities" / "japan_municipalities.csv"
    path = tmp_path / "municipalities.csv"
    path.write_bytes(source.read_text(encoding="utf-8").encode("cp932"))
    with pytest.raises(MunicipalityListError, match="Shift_JIS .*iconv -f CP932 -t UTF-8"):
        load_municipalities(path)
    path.write_bytes(codecs.BOM_UTF16_LE + source.read_text(encoding="utf-8").encode("utf-16-le"))
    assert len(load_municipalities(path)) == len(load_municipalities(source))


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"),
    ("folder", "is a folder, not a file"),
    (b"\x1f\x8b\x08\x00garbage", "a damaged gzip file"),
    (b"\xfd7zXZ\x00garbage", "a damaged xz file"),
    (b"id,name\n\xff\xfeg\n", "line 2: not UTF-8 text"),
    (codecs.BOM_UTF16_LE + b"i\x00\n\x00\x00\xdc", "line 2: damaged UTF-16 text"),
])
def test_every_importer_refuses_an_unreadable_file_with_its_own_error(tmp_path: Path, content: object,
                                                                      message: str) -> None:
    path = tmp_path / "list.csv"
    if content == "folder":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    for load, error in [(load_stations, RegistryError), (load_municipalities, MunicipalityListError),
                        (read_n03, BoundaryError)]:
        with pytest.raises(error, match=re.escape(str(path)) + ".*" + re.escape(message)):
            load(path)


@PROPERTY
@given(raw=HOSTILE)
@example(raw=b"\xe0\xa0\x80\xe0\xa0\x80,\x01")  # a station id of U+0800: the station's own rule named no file
def test_importers_meet_hostile_bytes_with_their_own_error(tmp_path_factory: pytest.TempPathFactory,
                                                          raw: bytes) -> None:
    where = tmp_path_factory.mktemp("hostile")
    for name, load, error in [("s.csv", load_stations, RegistryError), ("s.geojson", load_stations, RegistryError),
                              ("m.csv", load_municipalities, MunicipalityListError),
                              ("b.geojson", read_n03, BoundaryError)]:
        path = where / name
        path.write_bytes(b"id,name\n" + raw if name == "s.csv" else raw)
        try:
            load(path)
        except error as exc:
            assert name in str(exc)


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress, lambda b: codecs.BOM_UTF8 + b])
def test_real_files_load_the_same_however_they_are_saved(tmp_path: Path, compress: object) -> None:
    """The shared data's municipality list and N03 boundaries, compressed or with a BOM."""
    municipalities = SHARED / "municipalities" / "japan_municipalities.csv"
    boundaries = SHARED / "boundaries" / "fukushima_n03_2021_s0010_simplified.geojson"
    (tmp_path / municipalities.name).write_bytes(compress(municipalities.read_bytes()))  # type: ignore[operator]
    (tmp_path / boundaries.name).write_bytes(compress(boundaries.read_bytes()))  # type: ignore[operator]
    assert load_municipalities(tmp_path / municipalities.name) == load_municipalities(municipalities)
    assert len(load_municipalities(municipalities)) == 1916  # PROVENANCE.md: japan_municipalities 1,916
    copied, original = read_n03(tmp_path / boundaries.name), read_n03(boundaries)
    assert [(c, n, g.wkb) for c, n, g in copied] == [(c, n, g.wkb) for c, n, g in original]


def test_csv_the_csv_module_refuses_is_an_importers_error(tmp_path: Path) -> None:
    """A field past the csv module's 131,072-character limit (a raw ``_csv.Error`` before)."""
    row = '"' + "x" * 200_000 + '"'
    for header, load, error in [("id,name", load_stations, RegistryError),
                                ("code,name_ja", load_municipalities, MunicipalityListError)]:
        path = tmp_path / "list.csv"
        path.write_text(f"{header}\n072036,{row}\n", encoding="utf-8")
        with pytest.raises(error, match=r"^list\.csv line \d+: not CSV"):
            load(path)
