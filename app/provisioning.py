"""MQTT credentials and topic permissions for devices and for Sonae's own services.

``sonae devices add`` writes both halves of what a broker needs to let a client in and keep it in
its lane:

* a **password file** entry in Mosquitto 2's format, ``username:$7$<iterations>$<salt>$<hash>``
  (PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte hash, standard base64) — the same lines
  ``mosquitto_passwd`` writes, computed here so no broker binary is needed;
* an **ACL file** block for that username, ``user <id>`` followed by ``topic <access> <filter>``
  lines, delimited by ``# >>> sonae <id>`` / ``# <<< sonae <id>`` markers so that re-adding a
  device replaces its block and hand-written parts of the file are left as they are.

Roles (what each may do; the broker denies everything else):

============  =====================================================================================
``device``    publish ``{prefix}/{municipality}/{station}/+`` for each of its stations (default: the
              station named like the device); reads nothing
``ingest``    read ``{prefix}/#`` (ingestors subscribe ``$share/<group>/{prefix}/#``; Mosquitto 2
              checks a shared subscription against the topic without ``$share/<group>/``)
``alerts``    read and publish ``{alerts}/#`` (the service that publishes retained alerts)
``viewer``    read ``{alerts}/{municipality}/#`` for each ``--municipality`` (all alerts when none):
              partners, sirens, signage
``simulator`` publish anywhere under ``{prefix}/#`` (drills and load tests; never give it to a device)
``service``   read and publish ``{prefix}/#`` and ``{alerts}/#``: the one account of ``sonae run`` with the
              embedded broker (ingest, rules worker, API drills and demo gauges in one process;
              :func:`embedded_broker_auth` makes it, never give it to a device)
============  =====================================================================================

Generated passwords are 32 random URL-safe characters (192 bits), so PBKDF2's iteration count adds
nothing to their strength; it stays at Mosquitto's default (101) to keep reconnect storms of many
devices cheap for the broker. A chosen password (``--password-stdin``) can ask for more.

Other brokers: :func:`emqx_requests` gives the bodies of EMQX 5's REST calls for the same user and
rules; ``deploy/README.md`` covers VerneMQ and HiveMQ.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.contract import STATION_ID, STATION_ID_RULE
from sonae.arguments import municipality_code
from sonae.config_values import ConfigValueError, config_value
from sonae.embedded import BrokerAuth, reload_embedded_broker
from sonae.mosquitto_files import MAX_ITERATIONS, verify_mosquitto_hash
from sonae.municipality_code import MunicipalityCodeError, normalise

#: usernames (device ids) and stations: the station registry's rule (``ingest.contract.STATION_ID``: a device's
#: station is its username by default); never MQTT wildcards, ``/``, ``:``, spaces, nor dots only (found:
#: ``--station ..`` was written into an ACL line)
USERNAME = SEGMENT = STATION_ID
ROLES = ("device", "ingest", "alerts", "viewer", "simulator", "service")
ACCESS = ("read", "write", "readwrite")
DEFAULT_DIR = Path("/etc/mosquitto/sonae")
DEFAULT_ITERATIONS = 101
_HASH = re.compile(r"\$[67]\$[0-9]*\$?[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+")
_MARK_BEGIN = "# >>> sonae "
_MARK_END = "# <<< sonae "


class ProvisioningError(ValueError):
    """A request that cannot be carried out; the message says why."""


def _checked(what: str, value: str, **kw: Any) -> str:
    """:func:`sonae.config_values.config_value`, raising :class:`ProvisioningError`: every value this
    module writes into a password file, an ACL or an EMQX call passes through here."""
    try:
        return config_value(what, value, **kw)
    except ConfigValueError as exc:
        if kw.get("pattern") is STATION_ID and isinstance(value, str):  # the rule in words, not its regex
            raise ProvisioningError(f"{what} {value[:80]!r}: expected {STATION_ID_RULE}") from None
        raise ProvisioningError(str(exc)) from None


@dataclass(frozen=True)
class Grant:
    """One permission: ``access`` (read, write, readwrite) on an MQTT topic filter."""

    access: str
    topic: str

    def __post_init__(self) -> None:
        if self.access not in ACCESS:
            raise ProvisioningError(f"access {self.access!r}: expected one of {', '.join(ACCESS)}")
        _check_filter(self.topic)

    @classmethod
    def parse(cls, text: str) -> Grant:
        """``read:sonae/cmd/dev1/#`` → Grant("read", "sonae/cmd/dev1/#")."""
        access, sep, topic = text.partition(":")
        if not sep:
            raise ProvisioningError(f"grant {text!r}: expected ACCESS:TOPIC, e.g. read:sonae/cmd/dev1/#")
        return cls(access, topic)


@dataclass(frozen=True)
class Client:
    """A broker account: username, role and the permissions the ACL gives it."""

    username: str
    role: str
    grants: tuple[Grant, ...]
    note: str = ""

    def __post_init__(self) -> None:
        _checked("username", self.username, pattern=USERNAME, max_length=64)
        _checked("role", self.role, pattern=re.compile("|".join(ROLES)))
        _checked("note", self.note, max_length=200, allow_empty=True)


@dataclass
class Provisioned:
    client: Client
    password: str | None = field(repr=False)
    generated: bool = False


def _check_filter(topic: str) -> None:
    _checked("topic filter", topic, max_length=512)
    if " " in topic:
        raise ProvisioningError(f"topic filter {topic!r}: no spaces (an ACL line is 'topic ACCESS FILTER')")
    if topic.startswith("$share/"):
        raise ProvisioningError("grant the underlying topic; brokers check $share/<group>/<topic> against <topic>")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ProvisioningError(f"topic filter {topic!r}: '#' must be a whole, last level")
        if "+" in level and level != "+":
            raise ProvisioningError(f"topic filter {topic!r}: '+' must be a whole level")


def reaches_every_topic(topic: str) -> bool:
    """Whether the filter ``topic`` matches every topic (or all but the top level's): no literal level, a ``#``
    last (``#``, ``+/#``, ``+/+/#``): every device's readings, every command and alert topic. Empty levels
    are no narrower (``/#``: every topic under a root of ``/``)."""
    levels = topic.split("/")
    return levels[-1] == "#" and all(level in ("+", "#", "") for level in levels)


def _overlaps_with_wildcard(levels: Sequence[str], root: Sequence[str], depth: int) -> bool:
    """Whether a filter of ``levels`` matches topics of the tree ``root``/… with a wildcard at one of the
    root's levels or the ``depth`` levels under it (where one client's topics must be named literally)."""
    wild = False
    for i in range(len(root) + depth):
        if i >= len(levels):
            return False  # ends above: matches only the literal topic it names
        if levels[i] == "#":
            return True
        if levels[i] == "+":
            wild = True
        elif i < len(root) and levels[i] != root[i]:
            return False  # another tree
    return wild


#: Root of the command topics: a device ``<id>`` reads ``sonae/cmd/<id>/…`` (deploy/README.md, "--grant").
COMMANDS_ROOT = "sonae/cmd"


def _in_tree(levels: Sequence[str], root: Sequence[str]) -> list[str] | None:
    """The part of the filter ``levels`` that matches topics under ``root`` (as a filter), or ``None``.

    ``+/cmd/#`` in ``sonae/cmd`` → ``sonae/cmd/#``; ``sonae/v1`` itself (the root topic, which nobody
    publishes or reads) and ``other/+/x`` are not under ``sonae/v1``."""
    for i, r in enumerate(root):
        if i >= len(levels):
            return None
        if levels[i] == "#":
            return [*root, "#"]
        if levels[i] not in ("+", r):
            return None
    rest = list(levels[len(root):])
    return [*root, *rest] if rest else None


def _within(inner: Sequence[str], outer: Sequence[str]) -> bool:
    """Whether every topic the filter ``inner`` matches is matched by the filter ``outer``."""
    for i, level in enumerate(inner):
        if i >= len(outer):
            return False
        if outer[i] == "#":
            return True
        if level == "#" or (outer[i] != "+" and level != outer[i]):
            return False
    return len(inner) == len(outer) or (len(outer) == len(inner) + 1 and outer[-1] == "#")


def own_scopes(client: Client, *, prefix: str, alerts_prefix: str) -> tuple[Grant, ...]:
    """What a ``--grant`` of ``client`` may name inside Sonae's trees without ``--allow-every-topic``.

    Its role's own grants; for a device also its own stations' subtrees
    (``{prefix}/{municipality}/{station}/#``, read and write), its own command topics
    (``sonae/cmd/{username}/#``) and its municipality's alerts (read only)."""
    scopes = list(client.grants)
    scopes.append(Grant("readwrite", f"{COMMANDS_ROOT}/{client.username}/#"))
    root = len(prefix.split("/"))
    for g in client.grants:
        levels = g.topic.split("/")
        if client.role == "device" and g.access == "write" and len(levels) == root + 3:
            scopes.append(Grant("readwrite", "/".join([*levels[:root + 2], "#"])))
            scopes.append(Grant("read", f"{alerts_prefix}/{levels[root]}/#"))
    return tuple(scopes)


def check_grant(grant: Grant, *, prefix: str = "sonae/v1", alerts_prefix: str = "sonae/alerts",
                allow_every_topic: bool = False, own: Sequence[Grant] = ()) -> None:
    """The one rule of an extra ``--grant``: only the client's own topics in Sonae's trees, nor a likely mistake.

    Sonae's trees are the readings ``{prefix}/{municipality}/{station}/{kind}`` (``mqtt.topic_prefix``;
    ingest subscribes ``{prefix}/+/+/+``), the commands ``sonae/cmd/{device}/…`` and the alerts
    ``{alerts_prefix}/{municipality}/{alert_id}`` (alerting.worker). Inside them a grant may reach only
    ``own`` (:func:`own_scopes`: for a device its own stations, its own command topics, its municipality's
    alerts to read). Anything else there — another station or municipality named literally
    (``write:sonae/v1/072036/other/level``), every device's commands (``sonae/cmd/+/#``), a wildcard at or
    above the station level (``sonae/#``) — is refused unless ``allow_every_topic`` says it is meant, as are
    a grant that matches every topic (:func:`reaches_every_topic`) and a ``$`` topic (``$SYS/#``). Writing
    inside the alerts tree (``sonae/alerts/072036/#``, ``sonae/#``) is refused even then, but for a grant of
    every topic (``write:#``): only the alerts service (``--role alerts``) publishes
    alerts (found: ``write:sonae/alerts/072036/#`` let a device forge public alerts). A level ``.`` or
    ``..``, or a character that is not printable ASCII (``＃`` U+FF03, ``♯`` U+266F, ``⁄`` U+2044, a control
    character), is refused always: MQTT topic names are literal strings, not paths or patterns, and Sonae's
    are ASCII, so it names a level nobody publishes (found: ``write:foo/../#``, ``write:＃``, ``write:♯``).

    Raises
    ------
    ProvisioningError
        With a one-line message that says which grant, what it reaches or why it is a likely mistake.
    """
    shown = f"{grant.access}:{grant.topic}"
    levels = grant.topic.split("/")
    for level in levels:
        if level in (".", ".."):
            raise ProvisioningError(f"grant {shown}: level {level!r} is literal in MQTT (topics are not paths; "
                                    f"'..' is not a parent level), so it names topics nobody publishes: name "
                                    "the topic itself")
    ch = next((c for c in grant.topic if not " " <= c <= "~"), None)
    if ch is not None:  # found: write:♯ (U+266F), write:⧣, a⁄b passed; only NFKC lookalikes were caught
        folded = unicodedata.normalize("NFKC", ch)
        looks = (f", it reads as the MQTT {'separator' if folded == '/' else 'wildcard'} {folded!r} but matches "
                 "only a topic with that very character" if folded in ("#", "+", "/") else "")
        what = "a control character" if unicodedata.category(ch) == "Cc" else "not ASCII"
        raise ProvisioningError(f"grant {shown}: {ch!r} (U+{ord(ch):04X}) is {what}{looks}: Sonae's topic names are "
                                "ASCII (station ids, municipality codes, kinds); type the topic in ASCII")
    alerts = _in_tree(levels, alerts_prefix.split("/"))
    writes = grant.access in ("write", "readwrite")
    if writes and alerts is not None and not reaches_every_topic(grant.topic) and not any(
            s.access != "read" and _within(alerts, s.topic.split("/")) for s in own):
        raise ProvisioningError(f"grant {shown} writes under {alerts_prefix}, the public alerts: only the alerts "
                                "service publishes there (sonae devices add <name> --role alerts)")
    if allow_every_topic:
        return
    reach = None
    if reaches_every_topic(grant.topic):
        reach = "every topic on the broker (all devices, commands and alerts)"
    elif levels[0].startswith("$"):
        reach = f"the broker's own {levels[0]} topics (its state and its clients')"
    elif _overlaps_with_wildcard(levels, prefix.split("/"), 2):
        reach = (f"every station's topics under {prefix} (a wildcard at or above the station level lets one "
                 "client forge other stations' readings)")
    elif _overlaps_with_wildcard(levels, alerts_prefix.split("/"), 1):
        reach = (f"every municipality's alerts under {alerts_prefix} (a wildcard at or above the municipality "
                 "level)")
    else:
        directions = ("read", "write") if grant.access == "readwrite" else (grant.access,)
        for root, what in ((prefix, "readings"), (COMMANDS_ROOT, "command topics"), (alerts_prefix, "alerts")):
            part = _in_tree(levels, root.split("/"))
            if part is not None and not all(
                    any(s.access in (d, "readwrite") and _within(part, s.topic.split("/")) for s in own)
                    for d in directions):
                mine = ", ".join(s.topic for s in own if s.topic.startswith(f"{root}/")) or "none"
                reach = f"{what} under {root} that are not this client's own (its own: {mine})"
                break
    if reach is not None:
        raise ProvisioningError(f"grant {shown} reaches {reach}: name a narrower topic (a device's own: "
                                f"{prefix}/<municipality>/<station>/+), or add --allow-every-topic if that is "
                                "meant")


def _check_root(what: str, root: str) -> None:
    """A topic root (``--topic-prefix``, ``--alerts-prefix``): not empty and without wildcards, as
    ``mqtt.topic_prefix`` must be (sonae.config; found: ``--topic-prefix ''`` wrote the ACL
    line ``topic write /072036/gauge/+``, a topic ingest never reads, and ``sonae/+`` a wildcard root)."""
    if not root.strip("/") or "+" in root or "#" in root:
        raise ProvisioningError(f"{what} {root!r}: expected a topic root such as sonae/v1 (not empty, no "
                                "'+' or '#')")
    _check_filter(root)


def _check_segment(what: str, value: str) -> str:
    return _checked(what, value, pattern=SEGMENT, max_length=64)


def grants_for(
    role: str,
    username: str,
    *,
    municipalities: Sequence[str] = (),
    stations: Sequence[str] = (),
    prefix: str = "sonae/v1",
    alerts_prefix: str = "sonae/alerts",
    extra: Sequence[Grant] = (),
) -> tuple[Grant, ...]:
    """The permissions of a client with ``role`` (see the module docstring)."""
    if role not in ROLES:
        raise ProvisioningError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    _check_root("--topic-prefix", prefix)
    _check_root("--alerts-prefix", alerts_prefix)
    p, a = prefix.split("/"), alerts_prefix.split("/")
    if p[:len(a)] == a or a[:len(p)] == p:
        raise ProvisioningError(f"--topic-prefix {prefix!r} and --alerts-prefix {alerts_prefix!r}: one is inside "
                                "the other, so a device's own readings would be alerts (or the reverse): give "
                                "them separate roots, e.g. sonae/v1 and sonae/alerts")
    try:  # ACLs name the 6-digit code, the form every topic is normalised to (ingest.contract)
        municipalities = [normalise(m) for m in municipalities]
    except MunicipalityCodeError as exc:
        raise ProvisioningError(f"--municipality: {exc}") from None
    for s in stations:
        _check_segment("station", s)
    if role == "device" and not stations:  # its station is its username: the same rule
        _check_segment("username", username)
    grants: list[Grant] = []
    if role == "device":
        if len(municipalities) != 1:
            raise ProvisioningError("a device needs exactly one --municipality (its 団体コード)")
        grants += [Grant("write", f"{prefix}/{municipalities[0]}/{s}/+") for s in (stations or [username])]
    elif role == "ingest":
        grants.append(Grant("read", f"{prefix}/#"))
    elif role == "alerts":
        grants.append(Grant("readwrite", f"{alerts_prefix}/#"))
    elif role == "viewer":
        grants += ([Grant("read", f"{alerts_prefix}/{m}/#") for m in municipalities]
                   or [Grant("read", f"{alerts_prefix}/#")])
    elif role == "simulator":
        grants.append(Grant("write", f"{prefix}/#"))
    elif role == "service":
        grants += [Grant("readwrite", f"{prefix}/#"), Grant("readwrite", f"{alerts_prefix}/#")]
    for g in extra:
        if g not in grants:
            grants.append(g)
    return tuple(grants)


# -- Mosquitto password hashes ---------------------------------------------------------------------
def mosquitto_hash(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    """The ``$7$`` hash Mosquitto 2 keeps in its password file (PBKDF2-HMAC-SHA512)."""
    if not password:
        raise ProvisioningError("the password is empty")
    _checked("password", password, max_length=1024)  # a line break would end the line it is read from
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise ProvisioningError(f"iterations must be 1 to {MAX_ITERATIONS:,} (the broker pays them on every "
                                f"connection of the device; {DEFAULT_ITERATIONS} is Mosquitto's default), "
                                f"not {iterations:,}")
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def generate_password() -> str:
    return secrets.token_urlsafe(24)


# -- files -------------------------------------------------------------------------------------------
def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` keeping its mode and owner (new files: 0640), never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, (st.st_mode & 0o7777) if st else 0o640)
        if st is not None and os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One writer at a time for a broker's files (two operators adding devices at once)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".sonae-devices.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class PasswordFile:
    """A Mosquitto password file: ``username:hash`` lines (comments and blank lines are kept)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    def users(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in self.lines:
            if line and not line.startswith("#") and ":" in line:
                user, _, hashed = line.partition(":")
                out[user] = hashed
        return out

    def set(self, username: str, hashed: str) -> None:
        _checked("username", username, pattern=USERNAME, max_length=64)
        _checked("password hash", hashed, pattern=_HASH)
        self.remove(username)
        self.lines.append(f"{username}:{hashed}")

    def remove(self, username: str) -> bool:
        before = len(self.lines)
        self.lines = [ln for ln in self.lines if ln.partition(":")[0] != username or ln.startswith("#")]
        return len(self.lines) != before

    def save(self) -> None:
        _write_atomically(self.path, "\n".join(self.lines) + ("\n" if self.lines else ""))


class AclFile:
    """A Mosquitto ACL file whose per-client blocks Sonae manages between markers."""

    HEADER = (
        "# Mosquitto ACL for Sonae. Blocks between '# >>> sonae <user>' and '# <<< sonae <user>' are\n"
        "# written by `sonae devices add/remove`; edit the rest by hand. Anything not granted is denied.\n"
        "# Lines before the first 'user' line would apply to anonymous clients: keep none.\n"
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    def _block(self, username: str) -> tuple[int, int] | None:
        begin = f"{_MARK_BEGIN}{username}"
        for i, line in enumerate(self.lines):
            if line.split(" [")[0].rstrip() == begin:
                for j in range(i + 1, len(self.lines)):
                    if self.lines[j].strip() == f"{_MARK_END}{username}":
                        return i, j
                raise ProvisioningError(f"{self.path}: the block of {username!r} has no end marker")
        return None

    def _unmanaged_user(self, username: str) -> bool:
        managed: set[int] = set()
        for name in self.clients():
            span = self._block(name)
            assert span is not None
            managed.update(range(span[0], span[1] + 1))
        return any(i not in managed and line.strip() == f"user {username}" for i, line in enumerate(self.lines))

    def clients(self) -> list[str]:
        return [ln[len(_MARK_BEGIN):].split(" [")[0].strip() for ln in self.lines if ln.startswith(_MARK_BEGIN)]

    def grants(self, username: str) -> tuple[str, tuple[Grant, ...]]:
        span = self._block(username)
        if span is None:
            raise ProvisioningError(f"{username!r} is not in {self.path}")
        head = self.lines[span[0]]
        role = head.split(" [", 1)[1].split("]", 1)[0] if " [" in head else ""
        grants = []
        for line in self.lines[span[0] + 1:span[1]]:
            words = line.split(None, 2)
            if len(words) == 3 and words[0] == "topic":
                grants.append(Grant(words[1], words[2]))
        return role, tuple(grants)

    def set(self, client: Client) -> None:
        if self._unmanaged_user(client.username):
            raise ProvisioningError(f"{self.path} has a hand-written 'user {client.username}' block; "
                                    "remove it first or choose another username")
        block = [f"{_MARK_BEGIN}{client.username} [{client.role}]"]
        if client.note:
            block.append(f"# {client.note}")
        block.append(f"user {client.username}")
        block += [f"topic {g.access} {g.topic}" for g in client.grants]
        block.append(f"{_MARK_END}{client.username}")
        span = self._block(client.username)
        if span is not None:
            self.lines[span[0]:span[1] + 1] = block
            return
        if not self.lines:
            self.lines = self.HEADER.rstrip("\n").split("\n")
        if self.lines and self.lines[-1].strip():
            self.lines.append("")
        self.lines += block

    def remove(self, username: str) -> bool:
        span = self._block(username)
        if span is None:
            return False
        start, end = span
        if end + 1 < len(self.lines) and not self.lines[end + 1].strip():
            end += 1
        del self.lines[start:end + 1]
        return True

    def save(self) -> None:
        _write_atomically(self.path, "\n".join(self.lines) + "\n")


# -- operations ----------------------------------------------------------------------------------------
def add_client(
    username: str,
    *,
    role: str = "device",
    municipalities: Sequence[str] = (),
    stations: Sequence[str] = (),
    extra: Sequence[Grant] = (),
    password: str | None = None,
    passwd_file: Path = DEFAULT_DIR / "passwd",
    acl_file: Path = DEFAULT_DIR / "acl",
    prefix: str = "sonae/v1",
    alerts_prefix: str = "sonae/alerts",
    iterations: int = DEFAULT_ITERATIONS,
    replace: bool = False,
    note: str = "",
    allow_every_topic: bool = False,
) -> Provisioned:
    """Create (or with ``replace`` re-create) a client's password and ACL entries.

    An ``extra`` grant that reaches other clients' topics (:func:`check_grant`: ``write:#``, ``write:sonae/#``,
    ``write:$SYS/#``) is refused with a :class:`ProvisioningError` unless ``allow_every_topic`` says it is
    meant, and one that is a likely mistake (``foo/../#``, a full-width ``＃``) always (found: ``--grant
    write:#`` gave a device the whole broker without a word).

    The broker reads both files again on SIGHUP (``systemctl reload mosquitto``,
    ``docker compose kill -s HUP mosquitto``); nothing changes for connected clients until then.
    """
    _checked("username", username, pattern=USERNAME, max_length=64)
    _checked("note", note, max_length=200, allow_empty=True)
    grants = grants_for(role, username, municipalities=municipalities, stations=stations, prefix=prefix,
                        alerts_prefix=alerts_prefix, extra=extra)  # checks the roots first
    own = own_scopes(Client(username, role, grants_for(role, username, municipalities=municipalities,
                                                       stations=stations, prefix=prefix,
                                                       alerts_prefix=alerts_prefix)),
                     prefix=prefix, alerts_prefix=alerts_prefix)
    for g in extra:
        check_grant(g, prefix=prefix, alerts_prefix=alerts_prefix, allow_every_topic=allow_every_topic, own=own)
    generated = password is None
    secret = generate_password() if password is None else password
    client = Client(username, role, grants, note)
    with _locked(passwd_file.parent):
        pw = PasswordFile(passwd_file)
        acl = AclFile(acl_file)
        if not replace and (username in pw.users() or username in acl.clients()):
            raise ProvisioningError(f"{username!r} already exists; use --replace to give it a new password "
                                    "and permissions")
        acl.set(client)
        pw.set(username, mosquitto_hash(secret, iterations=iterations))
        acl.save()  # ACL first: a user in the password file without ACL entries may do nothing
        pw.save()
    return Provisioned(client, secret, generated)


def remove_client(username: str, *, passwd_file: Path = DEFAULT_DIR / "passwd",
                  acl_file: Path = DEFAULT_DIR / "acl") -> bool:
    """Remove a client's password and ACL block; True when anything was removed."""
    with _locked(passwd_file.parent):
        pw = PasswordFile(passwd_file)
        acl = AclFile(acl_file)
        removed_pw = pw.remove(username)
        removed_acl = acl.remove(username)
        if removed_pw:
            pw.save()  # password first: without it the client cannot connect at all
        if removed_acl:
            acl.save()
    return removed_pw or removed_acl


def list_clients(*, passwd_file: Path = DEFAULT_DIR / "passwd",
                 acl_file: Path = DEFAULT_DIR / "acl") -> list[dict[str, Any]]:
    """Every client of the password file, with the role and grants of its managed ACL block."""
    users = PasswordFile(passwd_file).users()
    acl = AclFile(acl_file)
    managed = set(acl.clients())
    out = []
    for name in sorted(set(users) | managed):
        role, grants = acl.grants(name) if name in managed else ("", ())
        out.append({"username": name, "role": role, "has_password": name in users,
                    "grants": [f"{g.access} {g.topic}" for g in grants]})
    return out


# -- the embedded broker's accounts ----------------------------------------------------------------------
#: the account ``sonae run``'s own processes use on the embedded broker (role ``service``)
EMBEDDED_SERVICE_USER = "sonae-embedded"


def embedded_broker_files(state_dir: Path) -> dict[str, Path]:
    """The embedded broker's password and ACL files: ``<state>/mosquitto/passwd`` and ``…/acl``, where
    ``sonae devices add … --dir $STATE/mosquitto`` writes a device (README, "Setting up a municipality")."""
    return {"passwd_file": state_dir / "mosquitto" / "passwd", "acl_file": state_dir / "mosquitto" / "acl"}


def embedded_broker_auth(state_dir: Path, *, prefix: str, alerts_prefix: str) -> BrokerAuth:
    """The embedded broker's files with the services' account in them, made or repaired here.

    The account's password is generated once (:func:`generate_password`) and kept in
    ``<state>/mqtt/service-account.json`` (mode 0600, beside the broker's sessions); the password file
    holds only its hash. A state directory of an earlier version (no files, an anonymous broker) gets
    them on its first start; an account whose hash or grants no longer match (another ``mqtt.topic_prefix``,
    a ``sonae devices remove sonae-embedded``) is written again. Devices in the files are left as they are.

    Raises
    ------
    ProvisioningError
        The files hold a hand-written block for the account's name, or the prefixes are not topic roots.
    OSError
        The state directory cannot be written.
    """
    import json

    files = embedded_broker_files(state_dir)
    secret_file = state_dir / "mqtt" / "service-account.json"
    password: str | None = None
    with contextlib.suppress(FileNotFoundError, ValueError, TypeError, KeyError):
        stored = json.loads(secret_file.read_text(encoding="utf-8"))
        if stored["username"] == EMBEDDED_SERVICE_USER and isinstance(stored["password"], str) and stored["password"]:
            password = stored["password"]
    if password is None:
        password = generate_password()
        secret_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=secret_file.parent, prefix=".service-account.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:  # mkstemp: mode 0600
                json.dump({"username": EMBEDDED_SERVICE_USER, "password": password}, fh)
            os.replace(tmp, secret_file)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    want = grants_for("service", EMBEDDED_SERVICE_USER, prefix=prefix, alerts_prefix=alerts_prefix)
    hashed = PasswordFile(files["passwd_file"]).users().get(EMBEDDED_SERVICE_USER)
    acl = AclFile(files["acl_file"])
    current = acl.grants(EMBEDDED_SERVICE_USER) if EMBEDDED_SERVICE_USER in acl.clients() else ("", ())
    if hashed is None or not verify_mosquitto_hash(password, hashed) or current != ("service", want):
        add_client(EMBEDDED_SERVICE_USER, role="service", password=password, prefix=prefix,
                   alerts_prefix=alerts_prefix, replace=True,
                   note="Sonae's own processes (sonae run); written at every start when it differs",
                   passwd_file=files["passwd_file"], acl_file=files["acl_file"])
    return BrokerAuth(files["passwd_file"], files["acl_file"], EMBEDDED_SERVICE_USER, password)


# -- other brokers ------------------------------------------------------------------------------------
_EMQX_ACTION = {"read": "subscribe", "write": "publish", "readwrite": "all"}


#: What follows a client's own rules in EMQX: deny everything else, ``$``-topics too (in EMQX, as in MQTT,
#: ``#`` does not match a topic starting with ``$``). Rules are checked in order and the first match wins.
EMQX_DENY_REST = ({"action": "all", "permission": "deny", "topic": "#"},
                  {"action": "all", "permission": "deny", "topic": "$SYS/#"})
EMQX_NO_MATCH_NOTE = ("EMQX must also be configured with authorization.no_match = deny (its default is allow) "
                      "and authorization.sources listing built_in_database: a client without rules of its own "
                      "may otherwise publish and subscribe anywhere")


def emqx_requests(client: Client, password: str) -> list[dict[str, Any]]:
    """EMQX 5 REST calls creating the same user (built-in database) and its authorization rules.

    The client's grants become ``allow`` rules, followed by :data:`EMQX_DENY_REST` (``deny`` ``all`` on
    ``#`` and ``$SYS/#``): EMQX checks a user's rules in order and takes the first that matches, and its
    default for no match is ``allow`` (``authorization.no_match``), so without the deny rules a device
    could publish beyond its topics (found: ``--format emqx`` gave allow rules only). Set
    ``authorization.no_match = deny`` as well (:data:`EMQX_NO_MATCH_NOTE`), which covers clients that
    have no rules at all. Shapes: ``[{"method", "path", "body"}, …]``, EMQX 5.1+ paths
    (``/api/v5/authorization/sources/built_in_database/rules/users``).
    """
    _checked("username", client.username, pattern=USERNAME, max_length=64)
    _checked("password", password, max_length=1024)
    for g in client.grants:
        _check_filter(g.topic)
    allows = [{"action": _EMQX_ACTION[g.access], "permission": "allow", "topic": g.topic} for g in client.grants]
    return [
        {"method": "POST", "path": "/api/v5/authentication/password_based:built_in_database/users",
         "body": {"user_id": client.username, "password": password, "is_superuser": False}},
        {"method": "POST", "path": "/api/v5/authorization/sources/built_in_database/rules/users",
         "body": [{"username": client.username, "rules": allows + [dict(r) for r in EMQX_DENY_REST]}]},
    ]


def mosquitto_acl_lines(client: Client) -> list[str]:
    return [f"user {client.username}"] + [f"topic {g.access} {g.topic}" for g in client.grants]


def parse_grants(items: Iterable[str]) -> list[Grant]:
    return [Grant.parse(i) for i in items]


# -- running a deployment's Mosquitto configuration elsewhere (tests, rehearsals) ------------------------
_LISTENER_OPTIONS = {"protocol", "certfile", "keyfile", "cafile", "capath", "tls_version", "ciphers",
                     "require_certificate", "use_identity_as_username", "use_subject_as_username",
                     "socket_domain", "bind_interface", "max_connections", "mount_point",
                     "use_username_as_clientid"}


def adapt_mosquitto_config(
    text: str,
    *,
    ports: Sequence[int],
    passwd_file: Path,
    acl_file: Path,
    persistence_dir: Path | None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    log_file: Path | None = None,
) -> str:
    """A deployment's ``mosquitto.conf`` with only its machine-specific parts changed.

    The n-th ``listener`` gets ``ports[n]`` on 127.0.0.1 (listeners beyond ``ports`` are dropped with
    their options), files point at the given paths, and everything else — authentication, ACLs,
    queue tuning — is kept as written, so what is tested is what is deployed.
    """
    for name, path in (("passwd_file", passwd_file), ("acl_file", acl_file), ("persistence_dir", persistence_dir),
                       ("certfile", certfile), ("keyfile", keyfile), ("log_file", log_file)):
        if path is not None:
            _checked(name, str(path), max_length=4096)
    out: list[str] = []
    listener = -1
    dropping = False
    for raw in text.splitlines():
        line = raw.strip()
        key = line.split(None, 1)[0] if line and not line.startswith("#") else ""
        if key == "listener":
            listener += 1
            dropping = listener >= len(ports)
            if not dropping:
                out.append(f"listener {ports[listener]} 127.0.0.1")
            continue
        if dropping and key in _LISTENER_OPTIONS | {""}:
            continue
        dropping = False
        if key == "pid_file":
            continue
        if key == "password_file":
            out.append(f"password_file {passwd_file}")
        elif key == "acl_file":
            out.append(f"acl_file {acl_file}")
        elif key == "persistence_location":
            out.append(f"persistence_location {persistence_dir}/" if persistence_dir else "")
        elif key == "persistence" and persistence_dir is None:
            out.append("persistence false")
        elif key == "autosave_interval" and persistence_dir is None:
            continue
        elif key == "certfile":
            out.append(f"certfile {certfile}")
        elif key == "keyfile":
            out.append(f"keyfile {keyfile}")
        elif key == "log_dest":
            if not any(o.startswith("log_dest") for o in out):
                out.append(f"log_dest file {log_file}" if log_file else "log_dest stderr")
        else:
            out.append(raw)
    if listener + 1 < len(ports):
        raise ProvisioningError(f"the configuration has {listener + 1} listener(s), {len(ports)} port(s) given")
    if os.geteuid() == 0:
        out.append("user root")  # as root mosquitto would switch to 'mosquitto', who cannot read tmp dirs
    return "\n".join(out) + "\n"


# -- `sonae devices` ------------------------------------------------------------------------------------
def _paths(args: Any) -> dict[str, Path]:
    base = Path(args.dir)
    return {"passwd_file": Path(args.passwd_file) if args.passwd_file else base / "passwd",
            "acl_file": Path(args.acl_file) if args.acl_file else base / "acl"}


def _cmd_add(args: Any) -> int:
    import json
    import sys

    from alerting.worker import alert_topic_root

    # the deployment's roots, as ingest and the alerts worker use them (found: --topic-prefix defaulted to a
    # hard-coded sonae/v1 whatever SONAE_MQTT_TOPIC_PREFIX said, so grants and checks named another tree)
    settings = _settings_of(args)
    prefix = args.topic_prefix
    if prefix is None:
        prefix = settings["mqtt.topic_prefix"]
    alerts_prefix = alert_topic_root(prefix) if args.alerts_prefix is None else args.alerts_prefix
    notes: list[str] = []  # told once the user is written: a refusal of the arguments stays one line
    if args.role == "device" and len(args.municipality or []) == 1:
        notes = _check_registry_of(settings, args.station or [args.username], args.municipality[0])
    password = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    made = add_client(
        args.username, role=args.role, municipalities=args.municipality or [], stations=args.station or [],
        extra=parse_grants(args.grant or []), password=password, prefix=prefix,
        alerts_prefix=alerts_prefix, iterations=args.iterations, replace=args.replace, note=args.note or "",
        allow_every_topic=args.allow_every_topic, **_paths(args))
    secret = made.password or ""
    for line in notes:
        print(f"sonae devices: {line}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps({"username": made.client.username, "role": made.client.role,
                          "password": secret if made.generated else None,
                          "grants": [{"access": g.access, "topic": g.topic} for g in made.client.grants]},
                         ensure_ascii=False))
    elif args.format == "emqx":
        print(json.dumps(emqx_requests(made.client, secret), indent=2, ensure_ascii=False))
        print(f"sonae devices: {EMQX_NO_MATCH_NOTE}", file=sys.stderr)
    else:
        files = _paths(args)
        print(f"{made.client.username} ({made.client.role}) written to {files['passwd_file']} and {files['acl_file']}")
        for line in mosquitto_acl_lines(made.client)[1:]:
            print(f"  {line}")
        if made.generated:
            print(f"password (shown once; give it to the device): {secret}")
    _reload_note(settings, args)
    return 0


def _settings_of(args: Any) -> Any:
    """The settings a command run here uses (``--config``, ``--state-dir``), as the other commands read them."""
    from sonae.config import load_settings

    settings = load_settings(config_file=getattr(args, "config", None))
    state_dir = getattr(args, "state_dir", None)
    return settings.replace(state__dir=state_dir) if state_dir else settings


def _check_registry_of(settings: Any, stations: Sequence[str], municipality: str) -> list[str]:
    """:func:`check_registry_places` on the deployment's database found as every other command finds it:
    ``database.url``, else the embedded PostgreSQL of the state directory (started for the check when the
    service is not running, stopped again; never created)."""
    from sonae.embedded import EmbeddedError, EmbeddedPostgres

    if settings["database.url"] is not None:
        return check_registry_places(stations, municipality, database_url=settings["database.url"])
    try:
        normalise(municipality)
    except MunicipalityCodeError:
        return []  # grants_for says why, in its own words
    state = settings.state_dir
    if not EmbeddedPostgres(state).initialised:
        return [f"no database: database.url is not set and the state directory {state} "
                f"(from {settings.origin('state.dir')}) holds no embedded one (pass --state-dir or set "
                "SONAE_STATE_DIR / SONAE_DATABASE_URL to the deployment's): the stations' registered "
                "municipality was not checked"]
    postgres = EmbeddedPostgres(state)  # as app.runtime.BackingServices(create=False) opens it
    try:
        database_url = postgres.start()
    except EmbeddedError as exc:
        postgres.stop()
        return [f"the embedded database of {state} could not be opened ({exc}): the stations' registered "
                "municipality was not checked"]
    try:
        return check_registry_places(stations, municipality, database_url=database_url)
    finally:
        postgres.stop()  # only when started here: a running service's server is left running


def _reload_note(settings: Any, args: Any) -> None:
    """Reload the embedded broker when it uses the files just written; otherwise say how to reload."""
    import sys

    files = _paths(args)
    if reload_embedded_broker(settings.state_dir / "mqtt", files=(files["passwd_file"], files["acl_file"])):
        print("the embedded broker (sonae run) has been told to read the files again", file=sys.stderr)
    else:
        print("reload the broker to apply: systemctl reload mosquitto | docker compose kill -s HUP mosquitto "
              "(the embedded broker of sonae run reads $STATE/mosquitto again by itself)", file=sys.stderr)


def check_registry_places(stations: Sequence[str], municipality: str, *, database_url: str | None) -> list[str]:
    """Check a device's stations against the registry before its ACL lets it publish under ``municipality``.

    Ingest keeps a reading only when its topic's municipality is its station's registered one
    (:mod:`ingest.placement`); an ACL for another municipality would let the device publish readings that
    are all dead-lettered ``wrong_municipality`` (found: ``sonae devices add bk-ff --municipality 072010``
    wrote an ACL for a Koriyama gauge without a word).

    Returns
    -------
    Warnings to print (one line each): a station not registered yet, or the registry not checked (no
    ``database_url``; not reachable within 5 s). ``sonae devices add`` passes the database every command
    uses: ``database.url``, else the state directory's embedded one (:func:`_check_registry_of`).

    Raises
    ------
    ProvisioningError
        A station is registered in another municipality.
    """
    import asyncio

    import asyncpg

    from ingest.placement import Place
    from ingest.registry import station_places

    try:
        code = normalise(municipality)
    except MunicipalityCodeError:
        return []  # grants_for says why, in its own words
    if not database_url:
        return ["no database to check against: the stations' registered municipality was not checked"]

    async def read() -> dict[str, Place] | None:
        conn = await asyncpg.connect(database_url, timeout=5)
        try:
            if not await conn.fetchval("SELECT to_regclass('stations') IS NOT NULL"):
                return None
            return await station_places(conn, list(stations))
        finally:
            await conn.close()

    try:
        places = asyncio.run(read())
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return [f"the registry (database.url) is not reachable ({type(exc).__name__}): the stations' registered "
                "municipality was not checked"]
    if places is None:
        return ["the database has no registry yet (sonae db migrate): the stations' municipality was not checked"]
    warnings = []
    for station in stations:
        place = places.get(station)
        if place is None:
            warnings.append(f"station {station!r} is not in the registry yet: its readings wait in quarantine "
                            f"and are kept only if it is registered in {code}")
        elif place.municipality is not None and place.municipality != code:
            raise ProvisioningError(f"station {station!r} is registered in {place.municipality}, not {code}: "
                                    f"ingest would dead-letter all its readings (wrong_municipality); give "
                                    f"--municipality {place.municipality}, or move the station in the registry first")
    return warnings


def _cmd_remove(args: Any) -> int:
    import sys

    if remove_client(args.username, **_paths(args)):
        print(f"{args.username} removed")
        _reload_note(_settings_of(args), args)
        return 0
    print(f"sonae: {args.username!r} is not provisioned", file=sys.stderr)
    return 1


def _cmd_list(args: Any) -> int:
    import json

    clients = list_clients(**_paths(args))
    if args.format == "json":
        print(json.dumps(clients, ensure_ascii=False, indent=2))
        return 0
    for c in clients:
        grants = "; ".join(c["grants"]) or ("(no managed ACL block)" if c["has_password"] else "")
        flag = "" if c["has_password"] else " [no password]"
        print(f"{c['username']:<32} {c['role'] or '-':<10}{flag} {grants}")
    return 0


def _cmd_hash(args: Any) -> int:
    import sys

    print(mosquitto_hash(sys.stdin.readline().rstrip("\r\n"), iterations=args.iterations))
    return 0


def _guarded(fn: Any) -> Any:
    def run(args: Any) -> int:
        import sys

        try:
            return int(fn(args))
        except (ProvisioningError, ConfigValueError, OSError) as exc:
            print(f"sonae devices: {exc}", file=sys.stderr)
            return 2

    return run


def add_devices_command(sub: Any) -> None:
    """Register ``sonae devices add|remove|list|hash`` on the CLI's subparsers."""
    devices = sub.add_parser(
        "devices", help="MQTT credentials and ACL entries for devices and services (Mosquitto).",
        description="Create and remove MQTT users: a Mosquitto password-file entry ($7$ PBKDF2-SHA512) and an "
                    "ACL block limiting the user to its own topics. The broker applies changes on SIGHUP.")
    actions = devices.add_subparsers(dest="devices_command", required=True, metavar="ACTION")

    def files(p: Any) -> None:
        p.add_argument("--dir", default=str(DEFAULT_DIR),
                       help=f"directory holding 'passwd' and 'acl' (default {DEFAULT_DIR})")
        p.add_argument("--passwd-file", help="password file (default DIR/passwd)")
        p.add_argument("--acl-file", help="ACL file (default DIR/acl)")
        p.add_argument("--format", choices=("text", "json", "emqx"), default="text",
                       help="output; emqx prints the EMQX 5 REST calls for the same user (add only; EMQX "
                            "needs authorization.no_match = deny)")
        p.add_argument("--state-dir", help="state directory of the deployment (overrides SONAE_STATE_DIR): its "
                                           "embedded database is checked, its embedded broker reloaded")

    p = actions.add_parser("add", help="Create a user: password and ACL block.",
                           description="Create a user (a device by default). A device may publish only "
                                       "{prefix}/{municipality}/{station}/+ for its stations and read nothing.")
    p.add_argument("username", help="device id or service account (A-Z a-z 0-9 _ . -)")
    p.add_argument("--role", choices=ROLES, default="device", help="what the user may do (default device)")
    p.add_argument("--municipality", action="append", type=municipality_code,
                   help="団体コード, 072036 or 07203 (a device: exactly one; a viewer: any)")
    p.add_argument("--station", action="append", help="station id the device reports for (repeatable; "
                                                      "default: the username)")
    p.add_argument("--grant", action="append", metavar="ACCESS:TOPIC",
                   help="an extra permission, e.g. read:sonae/cmd/gauge-1/# (repeatable)")
    p.add_argument("--allow-every-topic", "--allow-other-topics", dest="allow_every_topic", action="store_true",
                   help="accept a --grant that reaches beyond the user's own topics: other stations, "
                        "municipalities or devices' commands (write:sonae/v1/072036/other/+, read:sonae/cmd/+/#), "
                        "every topic (write:#) or the broker's (read:$SYS/#); refused without it. Writing "
                        "alerts is refused even with it (--role alerts)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin instead of "
                                                                 "generating one")
    p.add_argument("--replace", action="store_true", help="replace an existing user's password and permissions")
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="PBKDF2 iterations")
    p.add_argument("--topic-prefix", help="root of device topics (default: the setting mqtt.topic_prefix, "
                                          "SONAE_MQTT_TOPIC_PREFIX, sonae/v1 when unset)")
    p.add_argument("--alerts-prefix", help="root of alert topics (default: the alerts worker's, beside the topic "
                                           "prefix: sonae/alerts for sonae/v1)")
    p.add_argument("--note", help="a comment kept in the ACL block (e.g. location, owner)")
    files(p)
    p.set_defaults(func=_guarded(_cmd_add))

    p = actions.add_parser("remove", help="Remove a user's password and ACL block.")
    p.add_argument("username")
    files(p)
    p.set_defaults(func=_guarded(_cmd_remove))

    p = actions.add_parser("list", help="List users with their roles and permissions.")
    files(p)
    p.set_defaults(func=_guarded(_cmd_list))

    p = actions.add_parser("hash", help="Print the $7$ hash of a password read from stdin.")
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="PBKDF2 iterations")
    p.set_defaults(func=_guarded(_cmd_hash))
