"""Argument types of the ``sonae`` command line: numbers and ports checked where they are parsed.

An argparse ``type=`` that raises :class:`argparse.ArgumentTypeError` makes argparse print the usage and a
one-line ``sonae <command>: error: argument --x: …`` and exit with status 2, before anything starts (found:
``sonae simulate --jma-interval-s -1`` and ``nan`` started the JMA feed, "one every -1 s"; ``--jma-port
70000`` ended in "unexpected error (OverflowError…)", status 1). One place for every numeric option.
"""

from __future__ import annotations

import argparse
import math

from sonae.config import LISTEN_PORTS, http_url_problem
from sonae.exacttext import EXACT_RULE, loose_end
from sonae.municipality_code import MunicipalityCodeError, normalise
from sonae.nametext import refused_text
from sonae.numbers import parse_bbox


def port(raw: str) -> int:
    """A TCP port a service listens on, 1 to 65535: the rule of the setting ``api.port``
    (:data:`sonae.config.LISTEN_PORTS`)."""
    return _port(raw, low=LISTEN_PORTS[0], high=LISTEN_PORTS[1])


def port_or_any(raw: str) -> int:
    """A TCP port, 1 to 65535, or 0: any free port (the program names the one it got)."""
    return _port(raw, low=0)


def _whole(raw: str, *, low: int, high: int) -> int | None:
    """``raw`` as a whole number written in ASCII digits from ``low`` to ``high``, else None."""
    text = raw  # as typed: "8091\n" is not a number (found: surrounding blanks were trimmed)
    return int(text) if text.isascii() and text.isdigit() and low <= int(text) <= high else None


def _port(raw: str, *, low: int, high: int = 65535) -> int:
    value = _whole(raw, low=low, high=high)
    if value is None:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port number from {low} to {high}")
    return value


def positive_seconds(raw: str) -> float:
    """A finite number of seconds greater than 0 (not nan, inf, 0 or negative)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{raw!r} is not a finite number of seconds greater than 0")
    return value


def row_id(raw: str) -> int:
    """A database id (``bigserial``): a whole number from 1 to 2**63 - 1 (larger ones overflow the column)."""
    value = _whole(raw, low=1, high=2**63 - 1)
    if value is None:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an id (a whole number from 1, as `list` shows)")
    return value


def municipality_code(raw: str) -> str:
    """A 団体コード in its 6-digit form (:func:`sonae.municipality_code.normalise`): the 5-digit JIS X 0402 code
    (``07203``) gets its check digit, a 6-digit one (``072036``) is kept, and one with a wrong check digit is
    refused naming the code it should have been. The type of every ``--municipality`` option (found: ``sonae
    graph fetch --municipality 07203`` was refused while ``sonae users add`` took it)."""
    try:
        return normalise(raw)
    except MunicipalityCodeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def bbox(raw: str) -> tuple[float, float, float, float]:
    """``west,south,east,north`` in degrees (:func:`sonae.numbers.parse_bbox`, the API's rule), exactly as typed;
    a refusal is argparse's "argument --bbox: …" (found: it was told as a "configuration error")."""
    try:
        return parse_bbox(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{raw!r}: expected {exc}, in degrees") from None


def text(raw: str) -> str:
    """A name or other free text, exactly as typed: not empty, no control character, nothing blank before or
    after it (found: ``--place $'\\n'`` was taken and sent to the geocoder)."""
    if raw == "" or raw.isspace():
        raise argparse.ArgumentTypeError(f"{raw!r}: expected a name, not an empty or blank one")
    if (where := loose_end(raw)) is not None or not raw.isprintable():
        where = where or "a control character"
        raise argparse.ArgumentTypeError(f"{raw!r}: {where}; a name is {EXACT_RULE}, with no control characters")
    return raw


def http_url(raw: str) -> str:
    """An http(s) URL with a host (:func:`sonae.config.http_url_problem`, the rule of the settings that hold one),
    exactly as typed (found: ``--overpass-url $'https://x/api\n'`` was taken, the line break trimmed)."""
    problem = http_url_problem(raw)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{raw!r}: {problem}")
    return raw


def shown_line(raw: str) -> str:
    """A one-line text staff write for others to read (an account's display name, a webhook's description):
    the rule of the API's fields (:func:`sonae.nametext.refused_text`), no control, bidirectional, zero-width
    or other invisible character (found: ``sonae users add --name $'Bob\\u202e'`` was accepted)."""
    why = refused_text("the text", raw)
    if why:
        raise argparse.ArgumentTypeError(why)
    return raw
