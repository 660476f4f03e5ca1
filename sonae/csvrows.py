"""The shape of a CSV file an operator wrote: every column named once, one cell per column in every row.

``csv.DictReader`` files a cell past the header under the key ``None`` and fills a missing cell with
``None``; a header naming a column twice keeps the second cell only. An importer that takes the named
cells and skips the rest then stores a row other than the one written, without a word: a threshold written
with a decimal comma (``…,5.4,6,4`` for 6.4 m, as a spreadsheet in a European locale writes it) became
氾濫危険水位 6 m and the ``4`` was dropped; a shelter's ``flood,landslide`` unquoted was rated for flood only
(found by break33). :func:`shaped_rows` is the one check, for every importer of an operator's CSV (station
registry, municipality list, shelters, replay series): the importer turns :class:`CsvShapeError` into its
own error type, as it does :class:`sonae.textfile.TextFileError`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator


class CsvShapeError(ValueError):
    """A CSV header naming a column twice, or a row with another number of cells than the header has
    columns; the message names the file and line."""


def shaped_rows(reader: csv.DictReader[str], *, source: str, quote: bool = True) -> Iterator[dict[str, str]]:
    """The rows of ``reader``, each checked to hold one cell per header column.

    ``source`` names the file in a refusal (``"x.csv"``), whose lines are counted as the importers count
    theirs: the header is line 1, the first row line 2 (a quoted value with a line break in it is still
    one row). ``quote=False`` leaves the header's own words out of a refusal (a replay file's errors never
    quote the file: it may be any file the caller named).

    Raises
    ------
    CsvShapeError
        At the header, when it names a column twice; at the first row with more or fewer cells.
    csv.Error
        From the csv module (a field past its size limit, a NUL): the caller says so as it does now.
    """
    header = list(reader.fieldnames or [])
    first: dict[str, int] = {}
    for number, column in enumerate(header, start=1):
        if column in first:
            named = f"column {column!r} is named twice" if quote else "two columns have one name"
            raise CsvShapeError(f"{source} line 1: {named} (columns {first[column]} and {number}); a column is "
                                "read once, so one of its cells would be dropped: rename or remove one")
        first[column] = number
    for line, row in enumerate(reader, start=2):
        extra = row.get(None)  # type: ignore[call-overload]  # DictReader's restkey for cells past the header
        cells = len(header) + len(extra) if extra else sum(value is not None for value in row.values())
        if cells != len(header):
            raise CsvShapeError(
                f"{source} line {line}: {cells} cells where the header has {len(header)} columns: a value with a "
                "comma in it needs double quotes (and a decimal is written 6.4, not 6,4), and every row needs a "
                "cell for every column, an empty one too")
        yield row
