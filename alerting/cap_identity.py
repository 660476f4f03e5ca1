"""Who sends Sonae's CAP messages, and identifiers no other installation can send.

CAP 1.2 §3.2.1: ``sender`` "identifies the originator of this alert. Guaranteed by assigner to be
unique globally; e.g., may be based on an Internet domain name", and ``identifier`` is unique for that
sender. Consumers de-duplicate on (sender, identifier), so both must stay apart across installations:
two municipalities each running Sonae, or one database rebuilt from scratch, count alert ids from 1.

* **installation id**: ``cap.installation_id``, else a random id made once by migration
  ``alerting/005_installation`` and kept in ``sonae_installation``; it is in every ``identifier``
  (``sonae-{installation}-alert-{id}-v{version}``), ``incidents`` value and Atom entry id. A
  configured id must change when the database is rebuilt (alert ids start again from 1); the
  generated one does by itself.
* **sender**: ``cap.sender`` (a municipality's own domain, e.g. ``bousai@city.koriyama.lg.jp``;
  ``{municipality}`` in it becomes the alert's 団体コード), else ``sonae@<host of api.public_url>``,
  else ``sonae@<installation id>.invalid`` — the reserved ``.invalid`` TLD (RFC 2606) says "set
  ``cap.sender``" while staying unique to this installation.
* **expires**: every message expires ``cap.expires_hours`` after it is sent.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg

from sonae.config import Settings

DEFAULT_EXPIRES_HOURS = 24


@dataclass(frozen=True)
class CapProfile:
    """What every CAP message of this installation carries (see the module docstring)."""

    installation: str
    sender: str
    expires_hours: int = DEFAULT_EXPIRES_HOURS

    def sender_for(self, municipality_code: str | None) -> str:
        return self.sender.replace("{municipality}", municipality_code or "pref")

    def identifier(self, alert_id: int, version: int) -> str:
        return f"sonae-{self.installation}-alert-{alert_id}-v{version}"

    def incident(self, alert_id: int) -> str:
        return f"sonae-{self.installation}-alert-{alert_id}"

    def atom_id(self, alert_id: int, version: int) -> str:
        return f"urn:sonae:{self.installation}:alert:{alert_id}:v{version}"


def derived_sender(public_url: str | None, installation: str) -> str:
    """``sonae@<host>`` of a public URL with a real host name, else ``sonae@<installation>.invalid``."""
    host = urlsplit(public_url).hostname if public_url else None
    if host and host != "localhost" and "." in host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return f"sonae@{host}"
    return f"sonae@{installation}.invalid"


async def installation_id(conn: asyncpg.Connection) -> str:
    """The id kept in the database (made by the migration; made here if the row is missing)."""
    value = await conn.fetchval("SELECT installation_id FROM sonae_installation")
    if value is None:
        value = await conn.fetchval(
            """INSERT INTO sonae_installation (id, installation_id) VALUES (true, replace(gen_random_uuid()::text, '-', ''))
               ON CONFLICT (id) DO UPDATE SET installation_id = sonae_installation.installation_id
               RETURNING installation_id""")
    return str(value)


async def load_profile(conn: asyncpg.Connection, *, sender: str = "", installation: str = "",
                       public_url: str | None = None,
                       expires_hours: int = DEFAULT_EXPIRES_HOURS) -> CapProfile:
    """The profile from explicit settings, filling what is empty from the database and the public URL."""
    inst = installation or await installation_id(conn)
    return CapProfile(inst, sender or derived_sender(public_url, inst), expires_hours)


async def profile_from_settings(conn: asyncpg.Connection, settings: Settings) -> CapProfile:
    """:func:`load_profile` with ``cap.*`` and ``api.public_url``."""
    return await load_profile(conn, sender=settings["cap.sender"], installation=settings["cap.installation_id"],
                              public_url=settings["api.public_url"], expires_hours=settings["cap.expires_hours"])
