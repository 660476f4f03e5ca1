"""The configuration files a deployment generates for Sonae's own services (``deploy/compose/init-secrets.sh``).

Every value goes through :func:`sonae.config_values.config_value` (no control character, no line
break, no invisible format character) before it is written; passwords and user names are then
percent-encoded into their URL, and the URL is written as a TOML basic string with its quotes and
backslashes escaped. A hostile value (``$'x"\\n[database]\\nurl = "postgresql://evil'``) is refused
with a message naming it, and nothing is written.

``sonae secrets service-toml`` writes one service's TOML; ``sonae secrets check`` checks one value
(read from standard input, so secrets never sit on a command line) for shell scripts.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sonae.config_values import ConfigValueError, config_value

#: host names and addresses a generated URL or certificate may name (DNS names, IPv4, bracketed IPv6)
HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                  r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]{2,45}\])\Z")
NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}\Z")
PATTERNS = {"host": HOST, "name": NAME, "text": None}
#: the environment variables the passwords come from (never the command line)
DB_PASSWORD_ENV, MQTT_PASSWORD_ENV = "SONAE_SECRET_DB_PASSWORD", "SONAE_SECRET_MQTT_PASSWORD"


class SecretsError(ValueError):
    """A value that cannot be written; the message names it (never quotes a secret)."""


def _checked(what: str, value: str, *, pattern: re.Pattern[str] | None = None) -> str:
    try:
        return config_value(what, value, pattern=pattern)
    except ConfigValueError as exc:
        raise SecretsError(str(exc)) from None


def _secret(what: str, value: str) -> str:
    """A password: checked like every value, but a mismatch message never quotes it."""
    return _checked(what, value)  # no pattern, so config_value never echoes it


def _toml_string(value: str) -> str:
    """A TOML basic string (``"…"``); JSON's escapes for ``"`` and ``\\`` are TOML's too."""
    return json.dumps(value, ensure_ascii=False)


def service_toml(*, db_user: str, db_password: str, db_host: str, db_port: int, db_name: str,
                 mqtt_user: str, mqtt_password: str, mqtt_host: str, mqtt_port: int) -> str:
    """The ``[database]`` and ``[mqtt]`` tables of one service's configuration file.

    Raises
    ------
    SecretsError
        For any value with a control character or line break, a host or name outside
        :data:`HOST`/:data:`NAME`, or a port outside 1–65535.
    """
    for what, port in (("db_port", db_port), ("mqtt_port", mqtt_port)):
        if not 1 <= port <= 65535:
            raise SecretsError(f"{what}: expected 1-65535")
    db = (f"postgresql://{quote(_checked('db_user', db_user, pattern=NAME), safe='')}:"
          f"{quote(_secret('db_password', db_password), safe='')}@{_checked('db_host', db_host, pattern=HOST)}:"
          f"{db_port}/{quote(_checked('db_name', db_name, pattern=NAME), safe='')}")
    mqtt = (f"mqtt://{quote(_checked('mqtt_user', mqtt_user, pattern=NAME), safe='')}:"
            f"{quote(_secret('mqtt_password', mqtt_password), safe='')}@"
            f"{_checked('mqtt_host', mqtt_host, pattern=HOST)}:{mqtt_port}")
    return f"[database]\nurl = {_toml_string(db)}\n[mqtt]\nurl = {_toml_string(mqtt)}\n"


def write_new(path: Path, text: str) -> None:
    """Create ``path`` (mode 0600) with ``text``; refuses to replace an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _cmd_service_toml(args: Any) -> int:
    passwords = {}
    for env in (DB_PASSWORD_ENV, MQTT_PASSWORD_ENV):
        if env not in os.environ:
            raise SecretsError(f"set {env} (the password is read from the environment, never the command line)")
        passwords[env] = os.environ[env]
    text = service_toml(db_user=args.db_user, db_password=passwords[DB_PASSWORD_ENV], db_host=args.db_host,
                        db_port=args.db_port, db_name=args.db_name, mqtt_user=args.mqtt_user,
                        mqtt_password=passwords[MQTT_PASSWORD_ENV], mqtt_host=args.mqtt_host, mqtt_port=args.mqtt_port)
    write_new(Path(args.out), text)
    return 0


def _cmd_check(args: Any) -> int:
    value = sys.stdin.read()
    if value.endswith("\n") and value.count("\n") == 1:
        value = value[:-1]  # the one newline `echo` or a file adds; any other is refused below
    print(_checked(args.what, value, pattern=PATTERNS[args.kind]))
    return 0


def add_secrets_command(sub: Any) -> None:
    """Register ``sonae secrets service-toml|check`` on the CLI's subparsers."""
    grp = sub.add_parser("secrets", help="Generate deployment configuration values safely (init-secrets.sh).",
                         description="Write generated configuration with every value checked: control "
                                     "characters and line breaks are refused.")
    actions = grp.add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    p = actions.add_parser("service-toml", help="Write one service's [database]/[mqtt] TOML (new file, 0600).",
                           description=f"Passwords come from {DB_PASSWORD_ENV} and {MQTT_PASSWORD_ENV}.")
    p.add_argument("--out", required=True, help="the file to create (never replaced)")
    p.add_argument("--db-user", required=True)
    p.add_argument("--db-host", required=True)
    p.add_argument("--db-port", type=int, default=5432)
    p.add_argument("--db-name", required=True)
    p.add_argument("--mqtt-user", required=True)
    p.add_argument("--mqtt-host", required=True)
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.set_defaults(func=_cmd_service_toml)
    p = actions.add_parser("check", help="Check one value read from standard input; print it when safe.",
                           description="Exit status 2 with a message for a control character, a line break or "
                                       "(with --kind) a value outside the expected form.")
    p.add_argument("what", help="the value's name for messages, e.g. PUBLIC_HOST")
    p.add_argument("--kind", choices=sorted(PATTERNS), default="text")
    p.set_defaults(func=_cmd_check)
