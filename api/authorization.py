"""Who may do what to which object: the authorisation model of the API, enforced here and only here.

The model is role × scope × operation × object:

* **role** — ``staff`` (municipal disaster staff), ``operator`` (sensor fleets, simulations, drills),
  ``admin`` (accounts, partner integrations, the on-call roster, the audit log, and everything staff
  and operators may do);
* **scope** — an account's municipality (its 団体コード), or the whole prefecture when it has none;
* **operation** — every operation of the OpenAPI document has exactly one :class:`Rule` in
  :data:`POLICY` (``tests/api/test_api_authorization.py`` checks that, and runs the whole table);
* **object** — what the operation touches belongs to one municipality (an alert, an order, a shelter,
  a hazard area, a webhook, a roster entry, an account, the stations of a simulation); an account acts
  on objects of its scope only.

Rules the handlers apply through the functions below:

1. :func:`authorization_middleware` refuses every non-public operation without a valid token (401) or
   with a role the rule does not list (403), before any handler runs.
2. An object that exists but lies outside the account's scope is answered **404**, exactly like an
   object that does not exist (:func:`require_object_scope`), so ids of other municipalities cannot be
   enumerated. A municipality named in a request body outside the scope is **403**
   (:func:`require_target_scope`): that reveals nothing.
3. Lists (accounts, audit log, webhooks, roster, sensor health) are filtered to the scope.
4. Accounts: an admin creates accounts only in its own scope; only a prefecture-wide admin creates
   prefecture-wide accounts (:func:`require_may_create_account`).
5. Operators run simulations on stations of their scope only, and only as exercises: real
   (non-exercise) readings may be injected by an admin, or by an operator an admin of its scope has
   allowed to (``PUT /api/v1/accounts/{username}/real-injection``, audited;
   :func:`require_may_grant_real_injection`, :func:`require_may_simulate`); both act within their scope.
6. Public endpoints never show staff identities or internal notes (:func:`public_alert_event`).
7. Permission before content: what an account may not ask for at all is **403** before the request's
   content is judged; **422** is for content the account may ask for but that cannot be carried out (a
   real replay that would play out in the drill town, :func:`require_may_run`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from api.operations import PerOperation
from api.problems import Problem

STAFF, OPERATOR, ADMIN = "staff", "operator", "admin"


@dataclass(frozen=True)
class Rule:
    """Who may call one operation.

    ``roles`` empty: public (no login). Otherwise the roles that may call it (``admin`` is always
    listed explicitly). ``scope`` says how the objects are confined: ``"none"`` (public, or no
    municipal object), ``"object"`` (an object of a municipality, checked in the handler with
    :func:`require_object_scope`/:func:`require_target_scope`) or ``"list"`` (a list filtered to the
    scope). ``self_only`` marks operations a non-admin may apply to its own account only.
    """

    roles: frozenset[str] = frozenset()
    scope: str = "none"
    self_only: bool = False

    @property
    def public(self) -> bool:
        return not self.roles


PUBLIC = Rule()
ANY = Rule(frozenset({STAFF, OPERATOR, ADMIN}))
_S = frozenset({STAFF, ADMIN})
_O = frozenset({OPERATOR, ADMIN})
_SO = frozenset({STAFF, OPERATOR, ADMIN})
_A = frozenset({ADMIN})

#: (method, path) of every operation of the OpenAPI document → its rule
POLICY: dict[tuple[str, str], Rule] = {
    ("get", "/healthz"): PUBLIC, ("get", "/readyz"): PUBLIC, ("get", "/metrics"): PUBLIC,
    ("get", "/api/v1/openapi.json"): PUBLIC,
    ("get", "/api/v1/stations"): PUBLIC, ("get", "/api/v1/stations/{station_id}"): PUBLIC,
    ("get", "/api/v1/stations/{station_id}/readings"): PUBLIC, ("get", "/api/v1/municipalities"): PUBLIC,
    # public; audience=staff|all needs a staff or operator login, scoped (see api/alerts.py)
    ("get", "/api/v1/alerts"): PUBLIC, ("get", "/api/v1/alerts/history"): PUBLIC,
    ("get", "/api/v1/alerts/feed.atom"): PUBLIC, ("get", "/api/v1/alerts/{alert_id}.cap"): PUBLIC,
    ("get", "/api/v1/alerts/{alert_id}"): PUBLIC, ("get", "/api/v1/events"): PUBLIC,
    ("get", "/api/v1/route"): PUBLIC, ("get", "/api/v1/shelters/nearest"): PUBLIC, ("get", "/api/v1/level"): PUBLIC,
    ("get", "/api/v1/shelters"): PUBLIC, ("get", "/api/v1/hazards"): PUBLIC,
    ("get", "/api/v1/network.geojson"): PUBLIC, ("get", "/api/v1/service"): PUBLIC,
    ("get", "/api/v1/official"): PUBLIC, ("get", "/api/v1/attribution"): PUBLIC,
    ("get", "/api/v1/push/vapid-public-key"): PUBLIC, ("post", "/api/v1/push/subscriptions"): PUBLIC,
    ("delete", "/api/v1/push/subscriptions/{subscription_id}"): PUBLIC,
    ("post", "/api/v1/auth/token"): PUBLIC,
    # NGSI-LD: public entities only (staff-only alerts and staff names never become entities)
    ("get", "/ngsi-ld/v1/entities"): PUBLIC, ("get", "/ngsi-ld/v1/entities/{entity_id}"): PUBLIC,
    ("get", "/ngsi-ld/v1/temporal/entities/{entity_id}"): PUBLIC, ("get", "/ngsi-ld/v1/vocab"): PUBLIC,
    ("get", "/ngsi-ld/v1/contexts/sonae.jsonld"): PUBLIC,
    ("delete", "/api/v1/auth/token"): ANY, ("get", "/api/v1/auth/me"): ANY,
    # staff work, in the account's municipality
    ("post", "/api/v1/alerts/{alert_id}/acknowledge"): Rule(_S, "object"),
    ("post", "/api/v1/orders"): Rule(_S, "object"),
    ("post", "/api/v1/orders/{order_id}/cancel"): Rule(_S, "object"),
    ("patch", "/api/v1/shelters/{shelter_id}"): Rule(_S, "object"),
    ("patch", "/api/v1/stations/{station_id}"): Rule(_S, "object"),
    ("post", "/api/v1/hazards"): Rule(_S, "object"),
    ("delete", "/api/v1/hazards/{area_id}"): Rule(_S, "object"),
    ("get", "/api/v1/hazard-maps"): Rule(_S, "list"),
    ("put", "/api/v1/hazard-maps/{map_id}/link"): Rule(_S, "object"),
    ("delete", "/api/v1/hazard-maps/{map_id}/link"): Rule(_S, "object"),
    ("get", "/api/v1/sensors/health"): Rule(_SO, "list"),
    ("get", "/api/v1/webhooks"): Rule(_S, "list"),
    ("get", "/api/v1/webhooks/{webhook_id}/deliveries"): Rule(_S, "object"),
    ("get", "/api/v1/roster"): Rule(_S, "list"),
    ("put", "/api/v1/roster/{username}"): Rule(_S, "object", self_only=True),
    # operators
    ("get", "/api/v1/simulations"): Rule(_O),
    ("post", "/api/v1/simulations"): Rule(_O, "object"),
    ("delete", "/api/v1/simulations/current"): Rule(_O, "object"),
    # admins, in their scope
    ("get", "/api/v1/accounts"): Rule(_A, "list"),
    ("put", "/api/v1/accounts/{username}/real-injection"): Rule(_A, "object"),
    ("post", "/api/v1/accounts"): Rule(_A, "object"),
    ("get", "/api/v1/audit"): Rule(_A, "list"),
    ("post", "/api/v1/webhooks"): Rule(_A, "object"),
    ("delete", "/api/v1/webhooks/{webhook_id}"): Rule(_A, "object"),
    ("delete", "/api/v1/roster/{username}"): Rule(_A, "object"),
}

#: the request's account, set by the middleware (a typed key where aiohttp has them, ≥ 3.12)
ACCOUNT_KEY: Any = web.RequestKey("account", object) if hasattr(web, "RequestKey") else "sonae.account"


def operation_key(request: web.Request) -> tuple[str, str] | None:
    """(method, path) of the route ``request`` is routed to, as the OpenAPI document names operations
    (HEAD is GET); None when it matched no route."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    info = resource.get_info()
    path = info.get("path") or info.get("formatter")
    method = request.method.lower()
    if method == "head":
        method = "get"
    return (method, path) if path is not None else None


def rule_for(request: web.Request) -> Rule | None:
    """The rule of the operation ``request`` is routed to; None for routes outside the API (pages)."""
    key = operation_key(request)
    return POLICY.get(key) if key is not None else None


def check_role(account: Any, roles: Iterable[str]) -> None:
    """403 unless the account holds one of ``roles``."""
    allowed = set(roles)
    if allowed and account.role not in allowed:
        raise Problem(403, "Forbidden", f"this action needs the role {' or '.join(sorted(allowed - {ADMIN})) or ADMIN}")


def authorization_middleware(lookup: Callable[[web.Request], Awaitable[Any]]) -> Any:
    """Enforce :data:`POLICY` for every request; ``lookup`` turns the request's bearer token into an
    account (401 when missing or invalid). The account is kept on the request for the handler."""

    rule_of = PerOperation(rule_for)  # operation_key depends on the route and the method alone

    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        rule = rule_of(request)
        if rule is None:
            # (the decoded path only here: most requests have a rule, and need not decode it)
            if request.path.startswith(("/api/", "/ngsi-ld/")) and request.match_info.http_exception is None:
                # a route of the API without a rule: refuse rather than guess (the tests keep this empty)
                raise Problem(403, "Forbidden", "this operation has no authorisation rule")
            return await handler(request)
        if not rule.public:
            account = await lookup(request)
            check_role(account, rule.roles)
            request[ACCOUNT_KEY] = account
        return await handler(request)

    return middleware


# -- scope -------------------------------------------------------------------------------------------
def in_scope(account: Any, municipality_code: str | None) -> bool:
    """True when the account's scope covers ``municipality_code`` (None: a prefecture-wide object)."""
    return account.municipality_code is None or (municipality_code is not None
                                                  and municipality_code == account.municipality_code)


def require_object_scope(account: Any, municipality_code: str | None, *, what: str = "such object") -> None:
    """An existing object outside the account's scope is answered as if it did not exist (404)."""
    if not in_scope(account, municipality_code):
        raise Problem(404, "Not Found", f"no {what}")


def require_target_scope(account: Any, municipality_code: str | None) -> None:
    """A municipality named in the request outside the account's scope: 403 (reveals nothing)."""
    if not in_scope(account, municipality_code):
        raise Problem(403, "Forbidden", "your account acts only in its own municipality "
                                        f"({account.municipality_code}); this names another")


def scope_filter(account: Any) -> str | None:
    """The municipality lists are filtered to (None: everything, for prefecture-wide accounts)."""
    return account.municipality_code  # type: ignore[no-any-return]


def require_may_create_account(admin: Any, *, municipality_code: str | None) -> None:
    """An admin creates accounts in its own scope; prefecture-wide accounts only a prefecture-wide admin."""
    if municipality_code is None and admin.municipality_code is not None:
        raise Problem(403, "Forbidden", "only a prefecture-wide admin may create prefecture-wide accounts; "
                                        f"give municipality_code {admin.municipality_code}")
    require_target_scope(admin, municipality_code)


def may_inject_real(account: Any) -> bool:
    """Admins, and operators an admin has allowed to, may inject real (non-exercise) readings."""
    return account.role == ADMIN or (account.role == OPERATOR and bool(getattr(account, "may_inject_real", False)))


def require_may_grant_real_injection(admin: Any, target: Mapping[str, Any] | None) -> None:
    """An admin allows real injection to an operator of its own scope: another municipality's account is
    answered 404 like a missing one; only operators take the grant (admins have it, staff never run
    simulations), else 400. A municipal admin cannot grant it to a prefecture-wide operator."""
    if target is None or not in_scope(admin, target["municipality_code"]):
        raise Problem(404, "Not Found", "no such account")
    if target["role"] != OPERATOR:
        raise Problem(409, "Conflict", f"only operators take this grant; {target['username']!r} is "
                                          f"{target['role']}")


def require_may_run(account: Any, *, exercise: bool) -> None:
    """403 unless ``account`` may start a run of this kind at all: an exercise anyone the operation's rule lets
    in may; a real (non-exercise) run only an account that :func:`may_inject_real`.

    Called as soon as the request says which kind (the body's ``exercise``), before the scenario is read or
    placed: a refusal of permission comes before any judgement of content (found: an operator without the
    grant asking for a real 持世寺 replay got the 422 of its placement in the drill town, as if the run were
    only misplaced)."""
    if not exercise and not may_inject_real(account):
        raise Problem(403, "Forbidden", f"account {account.username!r} ({account.role}) may not start a real "
                                        "(non-exercise) run: real readings may be injected by an admin, or an "
                                        "operator an admin has allowed to (PUT /api/v1/accounts/{username}/"
                                        "real-injection); run it as an exercise (\"exercise\": true) or ask an admin")


def require_may_simulate(account: Any, *, exercise: bool,
                         station_municipalities: Iterable[tuple[str, str | None]]) -> None:
    """Operators run exercises on stations of their scope; real readings only an admin may inject.

    ``station_municipalities`` pairs every station a run would publish for with its municipality, both as
    the scenario declares it and as the station registry records it (the stricter wins: either out of
    scope refuses the run), so a station may come more than once; the refusal counts each station once
    (found: both places of each station were counted, 6 stations answered "12 station(s)"). The kind of run
    is checked again (:func:`require_may_run`).
    """
    require_may_run(account, exercise=exercise)
    outside = sorted({s for s, m in station_municipalities if not in_scope(account, m)})
    if outside:
        raise Problem(403, "Forbidden", f"{len(outside)} station(s) of the run are outside your municipality "
                                        f"({account.municipality_code}), e.g. {outside[0]!r}")


# -- what the public may see -------------------------------------------------------------------------
STAFF_ONLY_FIELDS = ("actor", "acknowledged_by", "note", "issued_by", "cancelled_by", "created_by", "updated_by")


def public_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` without staff identities and internal notes (for anonymous readers)."""
    out = {k: v for k, v in record.items() if k not in STAFF_ONLY_FIELDS}
    for k, v in out.items():
        if isinstance(v, list):
            out[k] = [public_view(x) if isinstance(x, Mapping) else x for x in v]
        elif isinstance(v, Mapping):
            out[k] = public_view(v)
    return out
