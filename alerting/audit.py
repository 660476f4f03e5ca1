"""The shared audit log: who did what to which object, and when.

Every staff or operator action (alerts acknowledged, orders issued, accounts changed, notification
rosters edited, simulations started) writes one row of ``audit_log``; the row's time is the database's.
"""
from __future__ import annotations

import json
from typing import Any

import asyncpg


async def record_audit(conn: asyncpg.Connection, actor: str, action: str, object_type: str, object_id: Any,
                       detail: dict[str, Any]) -> None:
    """Append one audit row.

    Parameters
    ----------
    conn : an open connection (call inside the transaction that makes the change, so both land or neither).
    actor : user name, or ``rules`` for the rule engine.
    action : dotted verb, e.g. ``order.issued``.
    object_type, object_id : what was acted on; ``object_id`` is stored as text.
    detail : JSON-serialisable context (non-JSON values are stored via ``str``).
    """
    await conn.execute(
        "INSERT INTO audit_log (actor, action, object_type, object_id, detail) VALUES ($1, $2, $3, $4, $5)",
        actor, action, object_type, str(object_id), json.dumps(detail, ensure_ascii=False, default=str))
