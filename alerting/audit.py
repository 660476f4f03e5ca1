"""The shared audit log: who did what to which object, and when.

Every staff or operator action (alerts acknowledged, orders issued, accounts changed, notification
rosters edited, simulations started) writes one row of ``audit_log``; the row's time is the database's.

Each row also names the municipality (6-digit 団体コード) the action concerns, when it concerns one: an order's,
an alert's, a station's, shelter's, hazard area's or webhook's, an account's own. ``GET /api/v1/audit`` shows a
municipal admin the rows about its municipality or by its accounts, so what a prefecture admin or the rule
engine did there is in the municipality's trail (found: only rows by its own accounts were, as the log had no
municipality). The argument has no default, so no call can leave it out by forgetting (None is said, not
assumed: a prefecture-wide action, or an object of no municipality).
"""
from __future__ import annotations

import json
from typing import Any

import asyncpg

#: actors that are no account: the rule engine (``rules``); no account may take such a name
#: (:func:`api.auth.create_account`), and the audit log never files their rows under an account of that name
#: (found: a municipal admin created an account named ``rules`` and then saw the rule engine's rows about
#: every other municipality). The command line's actors (``command line``, ``cli:NAME``) hold characters no
#: username may.
SYSTEM_ACTORS = ("rules",)


async def record_audit(conn: asyncpg.Connection, actor: str, action: str, object_type: str, object_id: Any,
                       detail: dict[str, Any], *, municipality_code: str | None) -> None:
    """Append one audit row.

    Parameters
    ----------
    conn : an open connection (call inside the transaction that makes the change, so both land or neither).
    actor : user name, or ``rules`` for the rule engine.
    action : dotted verb, e.g. ``order.issued``.
    object_type, object_id : what was acted on; ``object_id`` is stored as text.
    detail : JSON-serialisable context (non-JSON values are stored via ``str``).
    municipality_code : the municipality the action concerns (the object's; for an object moved between two,
        the one it is in after the action, the other named in ``detail``), or None when it concerns none (a
        prefecture-wide account, map or run). Keyword-only and required: every call says it.
    """
    await conn.execute(
        "INSERT INTO audit_log (actor, action, object_type, object_id, detail, municipality_code) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        actor, action, object_type, str(object_id), json.dumps(detail, ensure_ascii=False, default=str),
        municipality_code)
