"""The embedded ``amqtt`` broker (no Mosquitto installed) checking Mosquitto's password and ACL files.

Configured by :func:`sonae.embedded.amqtt_config`; both plugins read their file again at every
connection and every check (no reload signal needed), so ``sonae devices add`` applies at once.
A connection without a username, an unknown user or a wrong password is refused; a user may publish
and subscribe only what its ACL block grants (:func:`sonae.mosquitto_files.allowed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from sonae.mosquitto_files import allowed, read_acl, read_passwords, verify_mosquitto_hash


class MosquittoPasswordFile(BaseAuthPlugin):
    """Authentication by a Mosquitto password file; anonymous clients refused."""

    @dataclass
    class Config:
        password_file: str = ""

    async def authenticate(self, *, session: Any) -> bool:
        username, password = getattr(session, "username", None), getattr(session, "password", None)
        if not username or password is None:
            return False
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        hashed = read_passwords(Path(self.config.password_file)).get(username)
        return hashed is not None and verify_mosquitto_hash(password, hashed)


class MosquittoAclFile(BaseTopicPlugin):
    """Topic permissions by a Mosquitto ACL file; anything not granted denied."""

    @dataclass
    class Config:
        acl_file: str = ""

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        if session is None or topic is None or action is None:
            return False
        access = "write" if action == Action.PUBLISH else "read"
        return allowed(read_acl(Path(self.config.acl_file)), getattr(session, "username", None), topic, access)
