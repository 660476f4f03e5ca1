"""Reading an operator's text file: the one reader every import of a list or map from a file uses.

Station registries, municipality lists and N03 boundaries arrive as files an operator saved from Excel,
a GIS or a download: compressed or not, with or without a byte-order mark, sometimes in Shift_JIS.
:func:`read_text_file` turns such a file into text every importer can trust, or refuses it with one
:class:`TextFileError` that names the file and says what to do:

- **compression** is recognised by its magic bytes, not the name: gzip (``1f 8b``) and xz
  (``fd 37 7a 58 5a 00``); decompression is streamed and stops at the size limit, so a small
  compressed file cannot expand into all of memory (a "decompression bomb");
- **encoding**: UTF-8, with or without a BOM (Excel's "CSV UTF-8" writes one); UTF-16 and UTF-32 only
  with a BOM, which makes them unambiguous. Nothing else is guessed: a wrong guess would store garbled
  names that residents then read. A file that is not UTF-8 but decodes as Shift_JIS (CP932, Excel's
  "CSV" on a Japanese Windows) is refused with a message saying so and how to convert it;
- **text PostgreSQL cannot store** (:mod:`sonae.pgtext`): a NUL character is refused here with its
  line, rather than at the database with a raw ``DataError`` half-way through an import. (A lone
  surrogate cannot survive the strict decoders used here; one written as a JSON escape ``"\\ud800"``
  appears only when the importer parses JSON, so importers still check their fields with
  :func:`sonae.pgtext.unstorable`.)
- **size**: the file and its decompressed text are each limited to ``max_bytes``
  (:data:`DEFAULT_MAX_BYTES` unless the caller says otherwise).

Importers turn :class:`TextFileError` into their own error type (``RegistryError``,
``MunicipalityListError``, ``BoundaryError``) so their callers keep catching one exception.
"""

from __future__ import annotations

import codecs
import gzip
import io
import lzma
import zlib
from importlib import resources
from pathlib import Path

from sonae.pgtext import unstorable_at

#: default limit on a file's size and on its decompressed size, bytes (a municipality list of all of
#: Japan is 0.3 MB, a station registry far less)
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

_GZIP = b"\x1f\x8b"
_XZ = b"\xfd7zXZ\x00"
#: BOMs longest first (UTF-32-LE's starts with UTF-16-LE's)
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class TextFileError(ValueError):
    """A file that cannot be read as text; the message names the file and says what to do."""


def read_text_file(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """The text of a file (plain, gzip or xz; UTF-8, or UTF-16/32 with a BOM), without its BOM.

    Parameters
    ----------
    path
        The file.
    max_bytes
        Largest accepted size of the file and of its decompressed content, bytes.

    Raises
    ------
    TextFileError
        The file is missing, a folder, unreadable, too large, damaged compressed data, not text in an
        accepted encoding, or contains a NUL character; the message names the file (and line).
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise TextFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TextFileError(f"{path}: is a folder, not a file") from None
    except OSError as exc:
        raise TextFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return decode_text(raw, source=str(path), max_bytes=max_bytes)


def read_packaged_text(package: str, resource: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """:func:`read_text_file` of package data (``resource`` inside the importable ``package``)."""
    raw = (resources.files(package) / resource).read_bytes()
    return decode_text(raw, source=resource, max_bytes=max_bytes)


def decode_text(raw: bytes, *, source: str, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """:func:`read_text_file` of bytes already read; ``source`` names them in errors (a file name)."""
    if len(raw) > max_bytes:
        raise TextFileError(f"{source}: larger than the limit of {max_bytes:,} bytes")
    raw = _decompressed(raw, source=source, max_bytes=max_bytes)
    text = _decoded(raw, source=source)
    found = unstorable_at(text)
    if found is not None:
        at, problem = found
        line = text.count("\n", 0, at) + 1
        raise TextFileError(f"{source} line {line}: contains {problem}; remove it from the file")
    return text


def _decompressed(raw: bytes, *, source: str, max_bytes: int) -> bytes:
    reader: gzip.GzipFile | lzma.LZMAFile
    if raw.startswith(_GZIP):
        kind, reader = "gzip", gzip.GzipFile(fileobj=io.BytesIO(raw))
        errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error)
    elif raw.startswith(_XZ):
        kind, reader = "xz", lzma.LZMAFile(io.BytesIO(raw))
        errors = (lzma.LZMAError, EOFError)
    else:
        return raw
    try:
        with reader:
            out = reader.read(max_bytes + 1)  # streamed: stops one byte past the limit
    except errors as exc:
        raise TextFileError(f"{source}: a damaged {kind} file ({exc})") from None
    if len(out) > max_bytes:
        raise TextFileError(f"{source}: decompresses to more than the limit of {max_bytes:,} bytes")
    return out


def _decoded(raw: bytes, *, source: str) -> str:
    encoding = next((enc for bom, enc in _BOMS if raw.startswith(bom)), "utf-8")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].decode(encoding, errors="replace").count("\n") + 1  # decodes up to there
        where = f"{source} line {line}"
        if encoding != "utf-8":
            raise TextFileError(f"{where}: damaged {encoding.upper().removesuffix('-SIG')} text ({exc.reason}); "
                                "save the file again as UTF-8") from None
        if _is_cp932(raw):
            raise TextFileError(
                f"{where}: not UTF-8 text but Shift_JIS (CP932, as Excel saves a CSV on Japanese Windows); save it "
                "as \"CSV UTF-8\" or convert it: iconv -f CP932 -t UTF-8") from None
        raise TextFileError(f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                            "save it as UTF-8") from None
    return text  # the codecs chosen by BOM drop the BOM


def _is_cp932(raw: bytes) -> bool:
    """Whether the bytes decode strictly as CP932 and hold at least one double-byte (kanji/kana) character."""
    try:
        text = raw.decode("cp932")
    except UnicodeDecodeError:
        return False
    return any(len(ch.encode("cp932")) == 2 for ch in text if ord(ch) > 0x7F)
