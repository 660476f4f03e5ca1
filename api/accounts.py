"""Staff login: ``/api/v1/auth/token`` (bearer tokens) and account administration."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from api.auth import (
    AccountError,
    account_scope,
    authenticate,
    bearer_token,
    create_account,
    list_accounts,
    login,
    revoke,
    set_real_injection,
)
from api.authorization import require_may_create_account, require_may_grant_real_injection, scope_filter
from api.bodies import covered_municipality, field, json_object, municipality_code, shown_field
from api.context import POOL, SETTINGS
from api.loginlimit import LoginLimits, retry_after
from api.problems import Problem
from api.ratelimit import client_address

routes = web.RouteTableDef()

#: password guessing: per client address and per account (api/loginlimit.py), whatever the global limit
LOGIN_LIMITS = web.AppKey("login_limits", LoginLimits)


@routes.post("/api/v1/auth/token")
async def create_token(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await json_object(request)
    username = field(body, "username", str)
    password = field(body, "password", str)
    limits = request.app[LOGIN_LIMITS]
    address = client_address(request, trust_forwarded_for=settings["api.trust_forwarded_for"])
    wait = limits.admit(address=address, username=username)
    if wait > 0:
        raise Problem(429, "Too Many Requests", "too many login attempts; retry after the given time",
                      headers={"Retry-After": retry_after(wait)})
    async with request.app[POOL].acquire() as conn:
        result = await login(conn, username, password, ttl=timedelta(hours=settings["api.token_ttl_hours"]))
        limits.record(username=username, success=result is not None, address=address)
        if result is not None:
            from alerting.audit import record_audit as audit

            await audit(conn, result[2].username, "account.login", "account", result[2].username, {},
                        municipality_code=result[2].municipality_code)
    if result is None:
        raise Problem(401, "Unauthorized", "wrong username or password", headers={"WWW-Authenticate": 'Bearer realm="sonae"'})
    token, expires, account = result
    return web.json_response({"access_token": token, "token_type": "Bearer",
                              "expires_at": expires.isoformat().replace("+00:00", "Z"), "account": account.as_json()},
                             status=201, headers={"Cache-Control": "no-store"})


@routes.delete("/api/v1/auth/token")
async def delete_token(request: web.Request) -> web.Response:
    await authenticate(request)
    token = bearer_token(request)
    assert token is not None
    async with request.app[POOL].acquire() as conn:
        await revoke(conn, token)
    return web.Response(status=204)


@routes.get("/api/v1/auth/me")
async def me(request: web.Request) -> web.Response:
    account = await authenticate(request)
    return web.json_response(account.as_json())


@routes.get("/api/v1/accounts")
async def get_accounts(request: web.Request) -> web.Response:
    admin = await authenticate(request)
    async with request.app[POOL].acquire() as conn:
        rows = await list_accounts(conn, municipality=scope_filter(admin))
    return web.json_response({"accounts": [{**r, "created_at": r["created_at"].isoformat()} for r in rows]})


@routes.post("/api/v1/accounts")
async def post_account(request: web.Request) -> web.Response:
    admin = await authenticate(request)
    body = await json_object(request)
    municipality = municipality_code(field(body, "municipality_code", str, default=None))
    require_may_create_account(admin, municipality_code=municipality)
    async with request.app[POOL].acquire() as conn:
        # 422, as at every entry (create_account's rule: an account names its staff, staff=True)
        await covered_municipality(conn, municipality, exercise=False, staff=True)
        try:
            account = await create_account(
                conn, username=field(body, "username", str), password=field(body, "password", str),
                role=field(body, "role", str), municipality_code=municipality,
                display_name=shown_field(body, "display_name", default=None))
        except AccountError as exc:
            conflict = "exists already" in str(exc)
            raise Problem(409 if conflict else 400, "Conflict" if conflict else "Bad Request", str(exc)) from None
        from alerting.audit import record_audit as audit

        await audit(conn, admin.username, "account.created", "account", account.username,
                    {"role": account.role, "municipality_code": account.municipality_code},
                    municipality_code=account.municipality_code)
    return web.json_response(account.as_json(), status=201)


@routes.put("/api/v1/accounts/{username}/real-injection")
async def put_real_injection(request: web.Request) -> web.Response:
    """An admin allows (``{"allowed": true}``) or stops an operator of its scope injecting real readings.

    Answers ``{"username", "may_inject_real", "repeated"}``. A grant (or withdrawal) the account has already is
    the same fact: answered ``"repeated": true``, nothing written or audited again, whichever admin sends it
    (found: a second admin's identical grant was audited again), as repeated acknowledgements are. The
    account's row is locked while deciding, so requests at once are as one after the other: one writes.
    """
    admin = await authenticate(request)
    body = await json_object(request)
    allowed = field(body, "allowed", bool)
    username = request.match_info["username"]
    from alerting.audit import record_audit as audit

    async with request.app[POOL].acquire() as conn, conn.transaction():
        target = await account_scope(conn, username, lock=True)
        require_may_grant_real_injection(admin, target)
        assert target is not None  # checked above, in the same transaction
        repeated = target["may_inject_real"] == allowed
        if not repeated:
            row = await set_real_injection(conn, username, allowed=allowed)
            assert row is not None  # locked above
            await audit(conn, admin.username, "account.real_injection_" + ("granted" if allowed else "revoked"),
                        "account", username, {"may_inject_real": allowed},
                        municipality_code=target["municipality_code"])
    return web.json_response({"username": target["username"], "may_inject_real": allowed, "repeated": repeated})
