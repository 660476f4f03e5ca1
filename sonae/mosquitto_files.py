"""Reading Mosquitto's password and ACL files: the one format every broker Sonae starts is given.

``app.provisioning`` writes them (``sonae devices add``); Mosquitto reads them itself, and the embedded
``amqtt`` fallback reads them through :mod:`sonae.amqtt_plugins` with the functions here, so a device
added once is let in, and kept to its topics, by either broker.

* password file: ``username:$7$<iterations>$<salt>$<hash>`` lines (PBKDF2-HMAC-SHA512; ``$6$`` salted
  SHA-512 is read too), ``#`` comments;
* ACL file: ``user <name>`` starts a user's block, ``topic [read|write|readwrite] <filter>`` lines grant
  (no access word: readwrite); lines before the first ``user`` line are anonymous clients' (never granted
  here: the embedded broker refuses anonymous clients); anything not granted is denied.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

#: The most PBKDF2 iterations a device's hash may ask for. The broker pays them on every connection of the
#: device, and so does ``verify_mosquitto_hash``; OWASP's Password Storage Cheat Sheet (2023) recommends
#: 210,000 for PBKDF2-HMAC-SHA512, so this leaves room above it while a typo (an extra few zeros) cannot
#: make hashing, or a broker's every connection, run for minutes.
MAX_ITERATIONS = 1_000_000


def verify_mosquitto_hash(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` (PBKDF2-SHA512) or ``$6$`` (salted SHA-512) hash."""
    parts = hashed.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations, salt, digest = int(parts[2]), base64.b64decode(parts[3]), base64.b64decode(parts[4])
            if not 1 <= iterations <= MAX_ITERATIONS:  # never made by mosquitto_hash: not worth minutes of CPU
                return False
            computed = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, len(digest))
            return hmac.compare_digest(computed, digest)
        if len(parts) == 4 and parts[1] == "6":
            salt, digest = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            return hmac.compare_digest(hashlib.sha512(password.encode("utf-8") + salt).digest(), digest)
    except ValueError:
        return False
    return False


def read_passwords(path: Path) -> dict[str, str]:
    """``{username: hash}`` of a password file; a missing file has no users."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            user, _, hashed = line.partition(":")
            out[user] = hashed.strip()
    return out


def read_acl(path: Path) -> dict[str, list[tuple[str, str]]]:
    """``{username: [(access, filter), …]}`` of an ACL file (``pattern`` lines and anonymous grants ignored:
    they give nothing here). A missing file grants nothing."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    out: dict[str, list[tuple[str, str]]] = {}
    user: str | None = None
    for raw in text.splitlines():
        words = raw.strip().split(None, 2)
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user" and len(words) >= 2:
            user = raw.strip()[len("user"):].strip()
            out.setdefault(user, [])
        elif words[0] == "topic" and user is not None and len(words) >= 2:
            if len(words) == 3 and words[1] in ("read", "write", "readwrite", "deny"):
                out[user].append((words[1], words[2]))
            else:
                out[user].append(("readwrite", raw.strip()[len("topic"):].strip()))
    return out


def topic_matches(topic: str, topic_filter: str) -> bool:
    """MQTT matching of a topic (or a subscription filter, taken literally) against a filter; ``+``/``#``
    do not match a first level starting with ``$`` (MQTT 5 §4.7.2)."""
    levels, wanted = topic.split("/"), topic_filter.split("/")
    if levels[0].startswith("$") and wanted[0] in ("+", "#"):
        return False
    for i, w in enumerate(wanted):
        if w == "#":
            return True
        if i >= len(levels):
            return False
        if w != "+" and w != levels[i]:
            return False
    return len(levels) == len(wanted)


def allowed(acl: dict[str, list[tuple[str, str]]], username: str | None, topic: str, access: str) -> bool:
    """Whether ``username`` may ``access`` ("read" to subscribe, "write" to publish) ``topic`` by ``acl``.

    A subscription filter must lie within a granted filter (``sonae/v1/#`` is not granted by
    ``sonae/v1/072036/+/+``); a ``deny`` line of the user wins over its grants, as in Mosquitto."""
    if username is None:
        return False
    grants = acl.get(username, [])
    if any(a == "deny" and topic_matches(topic, f) for a, f in grants):
        return False
    return any(a in (access, "readwrite") and _within(topic, f) for a, f in grants)


def _within(inner: str, outer: str) -> bool:
    """Every topic the filter ``inner`` matches is matched by the filter ``outer`` (a topic is a filter)."""
    a, b = inner.split("/"), outer.split("/")
    if a[0].startswith("$") and b[0] in ("+", "#"):
        return False
    for i, level in enumerate(a):
        if i >= len(b):
            return False
        if b[i] == "#":
            return True
        if level == "#" or (b[i] != "+" and (level == "+" or level != b[i])):
            return False
    return len(a) == len(b) or (len(b) == len(a) + 1 and b[-1] == "#")
