"""What the API says of a request aiohttp could not parse, and of a body it could not read.

aiohttp's parser meets a fault in one of two places:

* the request head (request line, headers), or a body's framing broken in the same bytes as its head:
  aiohttp answers before any application code runs (:class:`api.server.ProblemRequestHandler`);
* a body whose head was already handed to the application: the chunked framing breaks after the head
  (an invalid chunk-size line, a chunk longer than announced, no CRLF after a chunk, a bad trailer), or
  its ``Content-Encoding`` cannot be decoded. Reading the body then raises :class:`UnreadableBody` (set
  by ``ProblemRequestHandler``) or aiohttp's ``RequestPayloadError`` (the decoding fault is its
  ``__cause__``); the edge middleware (:mod:`api.edge`) answers with a 400 problem (:func:`body_fault`).

Both are counted the same way, under route ``unparsable`` and method ``UNKNOWN`` (:data:`api.edge.UNPARSABLE`):
the same bytes are one fault whether they reach the server in one TCP segment or two.
"""

from __future__ import annotations

from aiohttp import http_exceptions as hx
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError


class VersionNotSupported(HttpProcessingError):
    """A request line well formed but naming an HTTP version other than 1.0 and 1.1 (``HTTP/2.0``,
    ``HTTP/3.7``, ``HTTP/0.9``): aiohttp parsed it and would have answered 200 in that version on an
    HTTP/1.1 connection. Answered 505 HTTP Version Not Supported (RFC 9110 §15.6.6) by
    :class:`api.server.ProblemRequestHandler`, in HTTP/1.1, and the connection closed."""

    code = 505
    message = "HTTP Version Not Supported"


#: the versions a request line may name (HTTP/1.x; HTTP/2 and HTTP/3 are not spoken on this connection)
SUPPORTED_VERSIONS = ((1, 0), (1, 1))
#: llhttp's reason for a request line whose version is ``HTTP/<digit>.<digit>`` but none it parses (it parses
#: 0.9, 1.0, 1.1, 2.0 and 3.0 itself: HPE_INVALID_VERSION); other malformed versions have other reasons
_LLHTTP_INVALID_VERSION = "Invalid HTTP version"


def unsupported_version(exc: BaseException) -> bool:
    """Whether aiohttp's parse error ``exc`` is llhttp's refusal of a well-formed but unknown HTTP version
    (``HTTP/3.7``, ``HTTP/1.2``), which is answered 505 like a parsed ``HTTP/2.0``, not 400."""
    return isinstance(exc, hx.BadStatusLine) and _LLHTTP_INVALID_VERSION in str(exc.message)


#: what the 505 problem says
FAULT_VERSION = ("the request's HTTP version is not supported: this server speaks HTTP/1.1 (and HTTP/1.0); "
                 "send the request line as METHOD target HTTP/1.1")

#: what a problem answer says of a request aiohttp could not parse, by the class of aiohttp's parse error
#: (aiohttp.http_exceptions; the most specific class first): a fixed text, never the error's own message,
#: which quotes the request line or header (a resident's position may be in the query)
FAULTS: tuple[tuple[type[HttpProcessingError], str], ...] = (
    (VersionNotSupported, FAULT_VERSION),
    (hx.BadHttpMethod, "the request line's method is not a valid HTTP method"),
    (hx.BadStatusLine, "the request line is malformed (expected: METHOD target HTTP/1.x)"),
    (hx.InvalidURLError, "the request target is not a valid URL"),
    (hx.LineTooLong, "a line of the request head (the request line or a header) is too long"),
    (hx.InvalidHeader, "a header's name or value has bytes HTTP does not allow"),
    (hx.TransferEncodingError, "the chunked body's framing is malformed"),
    (hx.ContentLengthError, "the body does not match its Content-Length"),
    (hx.ContentEncodingError, "the body cannot be decoded with its Content-Encoding"),
    (hx.DecompressSizeError, "the body is too large once decompressed"),
)

#: what it says of any other parse error (llhttp reports most faults of headers and framing as a
#: plain BadHttpMessage: a bad chunk size, a bad Content-Length, a header byte, a missing Host)
FAULT_OTHER = "the request could not be parsed as HTTP/1.1 (its request line, a header or the body's framing)"
#: what it says of a chunked body whose framing broke after its head was read (llhttp's error there is a
#: plain BadHttpMessage too; aiohttp's Python parser raises TransferEncodingError)
FAULT_CHUNKED = dict(FAULTS)[hx.TransferEncodingError]


def unparsable_detail(exc: BaseException) -> str:
    """The problem detail for aiohttp's parse error ``exc``: its kind in words (:data:`FAULTS`), never
    its message (which quotes the request)."""
    for cls, text in FAULTS:
        if isinstance(exc, cls):
            return text
    return FAULT_OTHER


class UnreadableBody(Exception):
    """The body of a request whose head was read cannot be read: its framing broke afterwards.

    Set on the request's payload by :class:`api.server.ProblemRequestHandler` (every reader of the body
    gets it at once, instead of waiting for bytes the parser will never deliver); ``detail`` is the
    problem's text, ``__cause__`` aiohttp's parse error.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def body_fault(exc: BaseException | None) -> str | None:
    """The problem detail when ``exc`` (raised by reading a request's body, or set on its payload) says the
    body cannot be read: :class:`UnreadableBody`; aiohttp's ``RequestPayloadError``; a parse error itself
    (aiohttp's Python parser, ``AIOHTTP_NO_EXTENSIONS``, hands a framing error to the body's reader before
    the connection handler sees it); None otherwise."""
    if isinstance(exc, UnreadableBody):
        return exc.detail
    if isinstance(exc, HttpProcessingError):
        return unparsable_detail(exc)
    if isinstance(exc, RequestPayloadError):
        cause = exc.__cause__
        return unparsable_detail(cause) if isinstance(cause, HttpProcessingError) else FAULT_OTHER
    return None
