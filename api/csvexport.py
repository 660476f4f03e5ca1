"""Open-data CSV exports, written one way (``GET /api/v1/stations?format=csv``, ``GET /api/v1/shelters?format=csv``):
:func:`csv_response` for every CSV the API serves.

**Formula injection** (OWASP "CSV Injection", ASVS 1.2.10, CWE-1236): a text cell a spreadsheet could read as
a formula gets a leading ``'``, which spreadsheets show as text and never evaluate (:func:`cell`). Station and
shelter names come from imports and partners, so they are untrusted. A cell is guarded when it starts with

* ``=``, ``+``, ``-`` or ``@``, in any form that folds to them (NFKC): the full-width ``＝ ＋ － ＠`` a Japanese
  IME types, the small ``﹦ ﹢ ﹣ ﹫``, and the minus sign ``−`` (U+2212) and other dashes spreadsheets may
  take as minus (found: ``＝HYPERLINK(…)``, ``－1+1``, ``＋``, ``＠`` went through unguarded);
* any control, format or space character: tab, CR, LF and NUL (OWASP's and ASVS's list), the ideographic
  space, zero-width and direction marks: a spreadsheet may skip them and read the formula behind.

Numbers (``int``, ``float``) stay numbers; ``None`` is an empty cell.

**Encoding**: UTF-8 with a byte order mark by default, so that Excel on Japanese Windows reads the Japanese
names (without the BOM it takes the file as Shift_JIS and shows them garbled, found); ``bom=false`` leaves it
out for programs that do not skip one. Sonae's own imports accept either (``evac.shelters``, ``ingest.registry``).
Lines end in CRLF (RFC 4180).
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from api.params import flag

__all__ = ["BOM", "FORMULA_START", "cell", "csv_response", "csv_text", "starts_formula"]

#: what a formula starts with, once the first character is folded (NFKC)
FORMULA_START = ("=", "+", "-", "@")
#: minus and dash forms NFKC does not fold to ``-`` that a spreadsheet may still read as minus
_MINUS_LIKE = frozenset("\u2212\u2010\u2011\u2012\u2013\u2014\u2015")
#: the UTF-8 byte order mark, as the text's first character
BOM = "\ufeff"


def starts_formula(text: str) -> bool:
    """Whether a spreadsheet could read ``text`` as a formula (see the module rule): its first character
    folds (NFKC) to ``= + - @``, is a minus-like dash, or is a control, format, space or separator character."""
    if not text:
        return False
    first = text[0]
    if unicodedata.category(first)[0] in "CZ" or first.isspace():
        return True
    return first in _MINUS_LIKE or unicodedata.normalize("NFKC", first).startswith(FORMULA_START)


def cell(value: Any) -> Any:
    """``value`` safe for a spreadsheet: text that could start a formula (:func:`starts_formula`) is prefixed
    with ``'``; anything else is returned as it is."""
    if isinstance(value, str) and starts_formula(value):
        return "'" + value
    return value


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]], *, bom: bool = False) -> str:
    """RFC 4180 CSV (CRLF line ends) with a header row and guarded cells (:func:`cell`); with ``bom`` the
    text starts with :data:`BOM`."""
    out = io.StringIO()
    if bom:
        out.write(BOM)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([cell(h) for h in header])
    writer.writerows([cell(v) for v in row] for row in rows)
    return out.getvalue()


def csv_response(request: web.Request, header: Sequence[str], rows: Iterable[Sequence[Any]], *, filename: str,
                 disposition: str = "attachment", headers: Mapping[str, str] | None = None) -> web.Response:
    """The response of a CSV export: ``text/csv; charset=utf-8``, a BOM unless the query says ``bom=false``
    (400 for a ``bom`` other than true or false), ``Content-Disposition`` naming ``filename``."""
    bom = flag(request, "bom")
    text = csv_text(header, rows, bom=bom is not False)
    out = {**(headers or {}), "Content-Disposition": f'{disposition}; filename="{filename}"'}
    return web.Response(text=text, content_type="text/csv", charset="utf-8", headers=out)
