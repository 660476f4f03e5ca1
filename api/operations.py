"""A value per API operation (the matched route and the method), worked out on its first request.

The middlewares that look a request's rule up in the OpenAPI document (:mod:`api.authorization`: who may
call it; :mod:`api.validation`: what its parameters and body must be) depend on the operation alone, so
each keeps what it found per operation here instead of finding it again on every request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from aiohttp import web

T = TypeVar("T")

#: operations kept at most: routes are few, but a method is any token a client sends
MAX_OPERATIONS = 4096


class PerOperation(Generic[T]):
    """``compute(request)`` for the request's operation (matched resource, method), computed once per
    operation and kept; past ``max_operations`` kept, computed for each request (nothing is evicted)."""

    __slots__ = ("_compute", "_kept", "max_operations")

    def __init__(self, compute: Callable[[web.Request], T], *, max_operations: int = MAX_OPERATIONS) -> None:
        self._compute = compute
        self._kept: dict[tuple[Any, str], T] = {}
        self.max_operations = max_operations

    def __call__(self, request: web.Request) -> T:
        pair = (request.match_info.route.resource, request.method)
        try:
            return self._kept[pair]
        except KeyError:
            value = self._compute(request)
            if len(self._kept) < self.max_operations:
                self._kept[pair] = value
            return value
