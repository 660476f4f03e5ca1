"""Sonae's configuration: one schema, read from the environment and an optional TOML file.

Every setting has a dotted name ``section.key``. It is read, in order of precedence, from

1. the environment variable ``SONAE_<SECTION>_<KEY>`` (upper case, e.g. ``SONAE_DATABASE_URL``); set
   but empty, it means the empty string for a text setting whose empty value means something
   (``SONAE_INGEST_SHARED_GROUP=`` subscribes plainly) and "not set here" for the others (numbers,
   switches, URLs whose absence starts an embedded service);
2. the TOML file named by ``--config`` or ``SONAE_CONFIG`` (``[database] url = "..."``);
3. the default in :data:`SCHEMA`.

Values are validated at start-up; a bad one raises :class:`ConfigError` whose message names the key
and says what is expected, so the CLI can print one readable line instead of a traceback.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sonae.exacttext import EXACT_RULE, loose_end
from sonae.origins import origins_problem


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the key."""


@dataclass(frozen=True)
class Setting:
    """One documented setting of the schema."""

    name: str
    kind: type
    default: Any
    help: str
    secret: bool = False
    check: Callable[[Any], str | None] | None = None

    @property
    def env(self) -> str:
        return "SONAE_" + self.name.replace(".", "_").upper()

    @property
    def empty_is_value(self) -> bool:
        """Whether an empty environment variable sets this setting to ``""`` (text settings with a
        non-null default; ``check`` still applies) rather than leaving it to the file or default."""
        return self.kind is str and self.default is not None


def _mqtt_url(value: Any) -> str | None:
    if value is None:
        return None
    parts = urlsplit(str(value))
    if parts.scheme not in ("mqtt", "mqtts", "tcp") or not parts.hostname:
        return "expected an MQTT URL such as mqtt://user:password@host:1883"
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "the port is not a number between 0 and 65535"
    return None


def http_url_problem(value: Any, *, example: str = "https://overpass-api.de/api") -> str | None:
    """Why ``value`` is no http(s) URL with a host (a download's or a server's address), or None when it is one;
    ``example`` is the URL the message shows.

    The rule of the setting ``evac.overpass_url`` and of the command line's URL options
    (:func:`sonae.arguments.http_url`): found, ``--overpass-url notaurl`` ended in the HTTP library's own
    "Invalid URL 'notaurl/interpreter': No scheme supplied", and ``http://`` alone passed the setting's check.
    """
    text = str(value)  # as written: a line break after it is refused, not trimmed
    if any(c.isspace() or not c.isprintable() for c in text):
        return f"expected an http(s) URL without spaces, line breaks or control characters, e.g. {example}"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return f"expected an http(s) URL with a host and a port from 0 to 65535, e.g. {example}"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return f"expected an http(s) URL: http:// or https:// and a host, e.g. {example}"
    return None


def _postgres_url(value: Any) -> str | None:
    if value is None:
        return None
    parts = urlsplit(str(value))
    if parts.scheme not in ("postgres", "postgresql"):
        return "expected a PostgreSQL URL such as postgresql://user:password@host:5432/sonae"
    try:
        parts.port  # noqa: B018
    except ValueError:
        return "the port is not a number between 0 and 65535"
    return None


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"expected one of {', '.join(choices)}"

    return check


def _road_network(value: Any) -> str | None:
    """A road network file that exists and looks like what its name says (read fully only at start-up)."""
    text = str(value)
    if loose := loose_end(text):  # taken exactly (found: SONAE_EVAC_NETWORK=$'drilltown\n' was trimmed)
        return f"has {loose}: {EXACT_RULE}"
    if text in ("", "drilltown"):
        return None
    path = Path(text).expanduser()
    name = path.name.lower()
    kinds = {".npz": (b"PK",), ".osm.pbf": (b"\x00\x00",), ".pbf": (b"\x00\x00",), ".osm.bz2": (b"BZh",),
             ".xml.bz2": (b"BZh",), ".osm": (b"<",), ".xml": (b"<",), ".graphml": (b"<",)}
    magic = next((m for suffix, m in kinds.items() if name.endswith(suffix)), None)
    if magic is None:
        return "expected an .osm, .osm.bz2, .osm.pbf, .graphml or .npz file (`sonae graph import`), or drilltown"
    if not path.is_file():
        return "no such file: make one with `sonae graph import FILE` or `sonae graph fetch`"
    try:
        with path.open("rb") as fh:
            head = fh.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if not any(head.startswith(m) for m in magic):
        return "the file does not look like its name says (damaged or not OpenStreetMap data)"
    return None


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "expected 0 or more"


def _positive(value: Any) -> str | None:
    return None if value > 0 else "expected a number greater than 0"


def _span(*, low: int, high: int, unit: str) -> Callable[[Any], str | None]:
    """A time span from ``low`` to ``high`` ``unit``: an absurd one would put dates past year 9999
    (``OverflowError`` on every message, CAP message or login) or before the calendar PostgreSQL keeps."""
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"expected {low} to {high:,} {unit}"

    return check


def _partition(value: Any) -> str | None:
    """``i/n`` with 0 <= i < n, or empty (see ingest/partition.py)."""
    if value == "":
        return None
    parts = str(value).split("/")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts) and 0 <= int(parts[0]) < int(parts[1]):
        return None
    return "expected i/n with 0 <= i < n (e.g. 0/2 for the first of two ingestors), or empty for one ingestor"


def _not_empty(value: Any) -> str | None:
    return None if str(value).strip("/") else "expected a topic root such as sonae/v1"


def _cap_token(value: Any) -> str | None:
    """CAP 1.2 forbids spaces, commas, '<' and '&' in sender and identifier."""
    return ("must not contain spaces, commas, '<' or '&' (CAP 1.2 sender/identifier rules)"
            if any(c in str(value) for c in " \t\n,<&") else None)


def _installation_id(value: Any) -> str | None:
    text = str(value)
    if text and not (len(text) <= 64 and all(c.isascii() and (c.isalnum() or c in "._-") for c in text)):
        return "expected up to 64 letters, digits, '.', '_' or '-' (empty: generated once and kept in the database)"
    return None


#: the fastest demo river (``simulators.demo_time_scale``): a 2.5-hour flood in 15 seconds, a reading of every
#: gauge every 0.1 s (simulators.demo publishes one a minute of river time)
DEMO_TIME_SCALE_MAX = 600.0


def _demo_time_scale(value: Any) -> str | None:
    """1 (real time) to :data:`DEMO_TIME_SCALE_MAX`; 0, negative, NaN (refused as not finite) or huge make no river."""
    return (None if 1 <= value <= DEMO_TIME_SCALE_MAX
            else f"expected a number from 1 (real time) to {DEMO_TIME_SCALE_MAX:g} (times faster than real time)")


def _port(value: Any) -> str | None:
    return None if 0 <= value <= 65535 else "expected a port number between 0 and 65535"


#: The ports a service that clients are told about may listen on (``api.port``, ``sonae api|run --port``,
#: sonae.arguments.port): 0 would make the system pick one that nobody is told (found: ``--port 0`` was
#: refused but ``SONAE_API_PORT=0`` accepted).
LISTEN_PORTS = (1, 65535)


def _ipv4(value: Any) -> str | None:
    import ipaddress

    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return "expected an IPv4 address such as 127.0.0.1 or 0.0.0.0 (every interface)"
    return None


def _listen_port(value: Any) -> str | None:
    low, high = LISTEN_PORTS
    return None if low <= value <= high else f"expected a port number from {low} to {high}"


SCHEMA: tuple[Setting, ...] = (
    Setting("database.url", str, None,
            "PostgreSQL/TimescaleDB URL. Unset: Sonae starts an embedded PostgreSQL in the state directory.",
            secret=True, check=_postgres_url),
    Setting("database.pool_size", int, 10, "Connections per process.", check=_positive),
    Setting("database.retention_days", int, 0,
            "Drop raw readings older than this many days (0 keeps everything), from 00:00 JST of that day. "
            "Rollups are kept.",
            check=_span(low=0, high=36500, unit="days")),
    Setting("mqtt.url", str, None,
            "MQTT broker URL (mqtt://user:password@host:port). Unset: Sonae starts an embedded broker.",
            secret=True, check=_mqtt_url),
    Setting("mqtt.protocol", str, "5", "MQTT protocol version: 5 or 3.1.1.", check=_one_of("5", "3.1.1")),
    Setting("mqtt.topic_prefix", str, "sonae/v1", "Root of every Sonae topic.", check=_not_empty),
    Setting("mqtt.keepalive_s", int, 30,
            "MQTT keep-alive in seconds: a silent connection is detected dead after 1.5 times this.",
            check=lambda v: None if 5 <= v <= 65535 else "expected 5 to 65535 seconds"),
    Setting("mqtt.client_id", str, "",
            "Client id of this process; empty derives one bound to the broker password (unguessable)."),
    Setting("ingest.shared_group", str, "",
            "MQTT shared-subscription group ($share/<group>/...); empty (the default) subscribes plainly. "
            "Not safe with Mosquitto or EMQX: they do not queue for offline shared subscribers, so readings "
            "sent while the ingestors reconnect are lost. Scale out with ingest.partition instead."),
    Setting("ingest.partition", str, "",
            "This ingestor's share of the municipalities, i/n (0/2 and 1/2 for two ingestors), each on a plain "
            "persistent subscription; empty: one ingestor takes the whole topic tree.", check=_partition),
    Setting("ingest.batch_size", int, 5000, "Most readings written in one batch.", check=_positive),
    Setting("ingest.batch_age_ms", int, 200, "Longest a reading waits before its batch is written.",
            check=_positive),
    Setting("ingest.max_inflight", int, 20000,
            "Most received but not yet acknowledged messages; above it the ingestor stops reading.",
            check=lambda v: None if 1 <= v <= 65535 else "expected 1 to 65535 (MQTT packet ids are 16 bits)"),
    Setting("ingest.unknown_stations", str, "quarantine",
            "What to do with readings for stations not in the registry.",
            check=_one_of("quarantine", "accept", "reject")),
    Setting("ingest.max_future_s", int, 300, "Readings further than this in the future are dead-lettered.",
            check=_span(low=1, high=366 * 86400, unit="seconds")),
    Setting("ingest.max_payload_bytes", int, 262144, "Larger payloads are dead-lettered.", check=_positive),
    Setting("ingest.dead_letter_max_bytes", int, 4096,
            "Raw bytes kept of a dead letter's payload (its full length and SHA-256 are always kept).",
            check=lambda v: None if v >= 0 else "expected 0 or more bytes"),
    Setting("ingest.dead_letter_retention_days", int, 30,
            "Delete dead letters last received longer ago than this many days (0 keeps them).",
            check=_span(low=0, high=36500, unit="days")),
    Setting("ingest.metrics_port", int, 0,
            "Port of an ingestor's own /metrics, /healthz and /readyz (0: none; `sonae run` serves them on the API).",
            check=_port),
    Setting("api.host", str, "127.0.0.1", "Address the API listens on."),
    Setting("api.port", int, 8080, "Port the API listens on (1-65535).", check=_listen_port),
    Setting("api.public_url", str, "", "URL people reach the API at (for links); empty derives it."),
    Setting("api.rate_limit_per_minute", int, 600,
            "Requests a minute one client (an address; an IPv6 address's /64, as for every per-client bound) may make "
            "to the public endpoints (0 turns the limit off).",
            check=lambda v: None if v >= 0 else "expected 0 or more"),
    Setting("api.trust_forwarded_for", bool, False,
            "Take the client address from X-Forwarded-For (only behind your own reverse proxy)."),
    Setting("api.cors_origins", str, "", "Comma-separated origins allowed by CORS ('*' for any); empty: none. "
            "Compared in their serialised form (https://partner.example: lower case, no path).",
            check=origins_problem),
    Setting("api.token_ttl_hours", int, 12, "Lifetime of a staff login token.",
            check=_span(low=1, high=8784, unit="hours")),
    # -- cap (issue #15 item 6) --
    Setting("cap.sender", str, "",
            "CAP sender, e.g. bousai@city.koriyama.lg.jp ({municipality} becomes the 団体コード); empty: "
            "sonae@<host of api.public_url>, or sonae@<installation id>.invalid without one.", check=_cap_token),
    Setting("cap.installation_id", str, "",
            "This installation's id in every CAP identifier and Atom id; empty: generated once and kept "
            "in the database.", check=_installation_id),
    Setting("cap.expires_hours", int, 24,
            "Each CAP message expires this long after it is sent; Cancel messages stay in the Atom feed "
            "until then.", check=_span(low=1, high=87600, unit="hours")),
    Setting("embedded.mqtt_port", int, 18830,
            "Port of the embedded MQTT broker. A command run on a state directory whose broker already runs "
            "(`sonae simulate --state-dir S` beside `sonae run --state-dir S`) uses that broker, on the port it "
            "runs on, whatever this says: one state directory has one broker.", check=_port),
    Setting("embedded.mqtt_host", str, "127.0.0.1",
            "IPv4 address the embedded MQTT broker listens on: 127.0.0.1 (this machine only), another of this "
            "machine's addresses, or 0.0.0.0 (every interface) for devices on the network. It always asks for "
            "a password (sonae devices add) but speaks plain MQTT: passwords and readings cross the network "
            "unencrypted, so beyond a closed network use a TLS broker (deploy/mosquitto) and SONAE_MQTT_URL.",
            check=_ipv4),
    Setting("state.dir", str, ".state", "State directory: embedded databases, caches, graphs."),
    Setting("simulators.data_dir", str, "",
            "Directory of replay files; scenarios name a file in it ([replay] file = NAME), never a path. "
            "Empty: shared/data/river_levels beside the checkout or one of its parent folders, the nearest first."),
    Setting("simulators.demo_time_scale", float, 30.0,
            "How many times faster than real time the demo river of `sonae run --simulate` runs (1 to 600): "
            "30 shows a 2.5-hour flood in 5 minutes, 150 in 1 minute. Its gauges publish one reading a minute of "
            "river time and are registered with the same exercise_time_scale, so the rules judge their exercise "
            "readings on the demo's clock (hold times shrink by the factor; real rules never).",
            check=_demo_time_scale),
    Setting("log.level", str, "info", "Log level.", check=_one_of("debug", "info", "warning", "error")),
    Setting("log.format", str, "json", "Log format: json (one object a line) or text.",
            check=_one_of("json", "text")),
    Setting("alerting.max_rate_m_per_h", float, 6.0,
            "Fastest plausible change of a river stage, m/h (stations' max_rate_m_per_h overrides it); a faster "
            "jump raises only a staff-only unconfirmed alert until the next reading. 6.0 = 1.5 x the fastest "
            "genuine rise in the real MLIT and 持世寺 records (see alerting/rules.py).", check=_positive),
    Setting("alerting.silent_factor", float, 3.0,
            "A station is silent (staff alert, and so in the staff console) after this many of its expected "
            "reporting intervals without a reading of any kind, counted from registration if it never reported "
            "(alerting.rules.is_silent).", check=_positive),
    Setting("alerting.exercise_grace_s", float, 600.0,
            "Seconds a gauge's open real alerts stay open after it is switched to an exercise station: switched "
            "back to real within them, the alerts go on as they were (same alert, acknowledgements kept, no "
            "Cancel sent); still an exercise station after them, they end. 0: they end at once "
            "(alerting.worker.RulesWorker.follow_registry).", check=lambda v: None if v >= 0 else "expected 0 or more"),
    # -- evac: the residents' evacuation routes (evac/service.py) --
    Setting("evac.network", str, "",
            "Road network for evacuation routes: a network made by `sonae graph import` (.npz), an .osm, "
            ".osm.bz2, .osm.pbf or .graphml file, or 'drilltown' for the generated drill town (the default of "
            "`sonae run --simulate`). Empty: no route endpoints. A missing or unreadable file stops start-up.",
            check=_road_network),
    Setting("evac.warm", str, "walk:flood",
            "Route fields kept computed at every hazard change, as profile:hazard[:exercise], comma-separated.",
            check=lambda v: None if all(len(p.split(":")) in (2, 3) for p in str(v).split(",") if p.strip(" "))
            else "expected profile:hazard[:exercise] items separated by commas, e.g. walk:flood"),
    Setting("evac.search_worker", bool, True,
            "Run route-field searches in a worker process (shared memory) so the API never stalls while "
            "recomputing; off: in a thread of the API process."),
    Setting("evac.max_fields", int, 8,
            "Route fields kept besides evac.warm (asked for on demand, least recently used dropped first); "
            "bounds memory and recompute work.", check=_positive),
    Setting("evac.cold_fields_per_client_per_minute", int, 10,
            "Route fields not yet computed (neither evac.warm nor computed at the current hazard state) one client "
            "address (an IPv6 /64; api.trust_forwarded_for decides the address) may cause a minute, with bursts of "
            "as many; beyond: 429 with Retry-After. 0: no per-client bound.",
            check=lambda v: None if v >= 0 else "expected 0 or more"),
    Setting("evac.cold_fields_per_minute", int, 20,
            "Route fields not yet computed this process computes a minute for all clients together (one at a "
            "time); beyond: 503 with Retry-After. 0: no bound.",
            check=lambda v: None if v >= 0 else "expected 0 or more"),
    Setting("evac.cold_fields_waiting", int, 4,
            "Route fields not yet computed that may wait while another one is computed; beyond: 503 with "
            "Retry-After.", check=lambda v: None if v >= 0 else "expected 0 or more"),
    Setting("evac.overpass_url", str, "https://overpass-api.de/api",
            "Overpass API that `sonae graph fetch` downloads streets from (osmnx; answers are cached in the "
            "state directory). A prefecture may run its own Overpass server or use a mirror.",
            check=http_url_problem),
    # -- end evac --
    # -- jma: official information, 気象庁防災情報XML PULL feeds (jma/reader.py) --
    Setting("jma.feeds", str, "",
            "Comma-separated JMA PULL Atom feed URLs to poll (regular.xml, extra.xml, eqvol.xml and the *_l.xml "
            "long feeds for catching up). Empty: the reader is off (an offline machine).",
            check=lambda v: None if all(u.strip().startswith(("http://", "https://"))
                                        for u in str(v).split(",") if u.strip()) else "expected http(s) URLs"),
    Setting("jma.poll_interval_s", float, 60.0,
            "Seconds between polls of the JMA feeds (JMA updates the high-frequency feeds every minute).",
            check=_positive),
    # -- end jma --
    # -- ngsi: upserting Sonae's NGSI-LD entities to a context broker (ngsi/push.py) --
    Setting("ngsi.broker_url", str, "",
            "NGSI-LD context broker to upsert changed public entities to (its base URL, e.g. http://broker:1026); "
            "empty: no push."),
    Setting("ngsi.max_attempts", int, 8, "Tries of one upsert before the entity goes to the dead-letter list.",
            check=_positive),
    Setting("ngsi.retry_base_ms", int, 2000, "First retry delay of a push; it doubles with every try.",
            check=_positive),
    Setting("ngsi.retry_max_s", int, 600, "Longest delay between two tries of a push.", check=_positive),
    # -- end ngsi --
    # -- notify: Web Push, webhooks and email (notify/worker.py) --
    Setting("notify.enabled", bool, True,
            "Run a delivery worker in `sonae run`/`sonae ingest` (several processes share the queue)."),
    Setting("notify.vapid_private_key", str, None,
            "VAPID private key (PEM or base64url P-256 scalar; `sonae vapid generate`). Unset: one is made "
            "once and kept in the database.", secret=True),
    Setting("notify.vapid_subject", str, "mailto:sonae@example.jp",
            "VAPID contact push services may use (mailto: or https: URL).",
            check=lambda v: None if str(v).startswith(("mailto:", "https:")) else "expected a mailto: or https: URL"),
    Setting("notify.smtp_url", str, None,
            "SMTP server for on-call staff email: smtp://user:password@host:port (?starttls=true) or smtps://. "
            "Unset: no email.", secret=True,
            check=lambda v: None if v is None or urlsplit(str(v)).scheme in ("smtp", "smtps")
            and urlsplit(str(v)).hostname else "expected smtp://user:password@host:port or smtps://…"),
    Setting("notify.smtp_from", str, "sonae@localhost", "From address of staff email."),
    Setting("notify.concurrency", int, 64, "Most deliveries in flight at once per process.", check=_positive),
    Setting("notify.max_attempts", int, 8, "Tries of a webhook or email before it is dead-lettered.",
            check=_positive),
    Setting("notify.retry_base_ms", int, 2000, "First retry delay; it doubles with every try.", check=_positive),
    Setting("notify.retry_max_s", int, 3600, "Longest delay between two tries.", check=_positive),
    Setting("notify.push_rate_per_s", int, 500, "Most push messages a second to one push service.",
            check=_positive),
    Setting("notify.webhook_rate_per_s", int, 5, "Most requests a second to one webhook.", check=_positive),
    Setting("notify.push_allow_http", bool, False,
            "Accept http:// push endpoints and loopback hosts (127.0.0.0/8, ::1, ::ffff:127.x.y.z, localhost, "
            "*.localhost), by one rule at subscription and at delivery (tests and development only); else a public "
            "https URL of a push_hosts service."),
    Setting("notify.webhook_allow_loopback", bool, False,
            "Let webhooks point at loopback hosts (127.0.0.0/8, ::1, ::ffff:127.x.y.z, localhost; tests and "
            "development only). Webhooks may always use public and private (10/8, 172.16/12, 192.168/16, fc00::/7) "
            "addresses; link-local (169.254.0.0/16, fe80::/10), unspecified, multicast and reserved ones never."),
    Setting("notify.push_hosts", str,
            "fcm.googleapis.com,updates.push.services.mozilla.com,web.push.apple.com,*.notify.windows.com",
            "Comma-separated push service hosts a subscription's endpoint may use ('*.suffix' any subdomain, "
            "'*' any public host, e.g. to add a self-hosted push service)."),
    Setting("notify.push_subscriptions_per_client", int, 100,
            "Most push subscriptions from one client address (an IPv6 /64), kept as a keyed hash (0: no limit).",
            check=_non_negative),
    Setting("notify.push_subscriptions_per_host", int, 1000,
            "Most push subscriptions to one endpoint host allowed only by '*' in push_hosts (0: no limit).",
            check=_non_negative),
    Setting("notify.per_host_concurrency", int, 16,
            "Most deliveries in flight at once to one endpoint host (push service, webhook host) per process.",
            check=_positive),
    Setting("notify.connect_timeout_s", float, 3.0, "Timeout of opening one delivery connection (TCP and TLS).",
            check=_positive),
    Setting("notify.breaker_failures", int, 5,
            "Connection failures or timeouts in a row after which a host's deliveries are paused.", check=_positive),
    Setting("notify.breaker_s", int, 30,
            "First pause of a failing host's deliveries; it doubles with every pause, to 10 minutes.",
            check=_positive),
    Setting("notify.push_ttl_s", int, 21600, "How long a push service keeps an undelivered alert message.",
            check=_positive),
    Setting("notify.timeout_s", int, 10, "Timeout of one delivery request.", check=_positive),
    # -- end notify --
)

_BY_NAME = {s.name: s for s in SCHEMA}


#: a whole number and a decimal number as a variable or a file's string writes them: ASCII digits, an optional sign
#: (and for a decimal a point and an exponent), nothing else (found: int() and float() also took ８０９１, ٨٠٩١,
#: 8_091 and "2\n", and float() nan and inf)
_WHOLE_TEXT = re.compile(r"[+-]?[0-9]+\Z")
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")


def _range_of(setting: Setting) -> str:
    """The range a numeric setting's check states (what it says of a value far below, or far above, it), as
    "; expected …", or "" for a setting without one."""
    if setting.check is None:
        return ""
    for probe in ((-10**18, 10**18) if setting.kind is int else (-1e300, 1e300)):
        try:
            problem = setting.check(probe)
        except Exception:  # a check that cannot judge a number says no range
            problem = None
        if problem:
            return f"; {problem}"
    return ""


def _coerce(setting: Setting, raw: Any, origin: str) -> Any:
    if raw is None:
        return None
    if setting.kind is int:
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise ConfigError(f"{origin}: expected a whole number, got {raw!r}{_range_of(setting)}")
        if isinstance(raw, str) and not _WHOLE_TEXT.match(raw):
            raise ConfigError(f"{origin}={raw!r}: not a whole number in ASCII digits (no spaces, line breaks or "
                              f"underscores){_range_of(setting)}")
        return int(raw)
    if setting.kind is float:
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ConfigError(f"{origin}: expected a number, got {raw!r}{_range_of(setting)}")
        if isinstance(raw, str) and not _DECIMAL_TEXT.match(raw):
            raise ConfigError(f"{origin}={raw!r}: not a finite decimal number in ASCII digits such as 0.5 or 1e3 "
                              f"(no spaces, line breaks or underscores){_range_of(setting)}")
        value = float(raw)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{origin}={raw!r}: expected a finite number{_range_of(setting)}")
        return value
    if setting.kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).lower()  # as written: "true\n" is no answer (found: surrounding blanks were trimmed)
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{origin}: expected true or false, got {raw!r}")
    if not isinstance(raw, str | int | float):
        raise ConfigError(f"{origin}: expected a string, got {raw!r}")
    return str(raw)


class Settings(Mapping[str, Any]):
    """The effective, validated configuration: a read-only mapping of dotted names to values."""

    def __init__(self, values: Mapping[str, Any], origins: Mapping[str, str]) -> None:
        self._values = dict(values)
        self._origins = dict(origins)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def origin(self, name: str) -> str:
        """Where a value came from: ``env``, ``file`` or ``default``."""
        return self._origins[name]

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed (dotted names written with ``__``: ``database__url``)."""
        values = dict(self._values)
        origins = dict(self._origins)
        for key, value in changes.items():
            name = key.replace("__", ".")
            if name not in _BY_NAME:
                raise ConfigError(f"unknown setting {name!r}")
            values[name] = value
            origins[name] = "runtime"
        return Settings(values, origins)

    @property
    def state_dir(self) -> Path:
        return Path(self["state.dir"]).expanduser().resolve()

    def masked(self) -> dict[str, Any]:
        """Values with secrets hidden: passwords in URLs become ``***``."""
        out: dict[str, Any] = {}
        for name, value in self._values.items():
            setting = _BY_NAME[name]
            out[name] = mask_url(value) if setting.secret and isinstance(value, str) else value
        return out


def mask_url(url: str) -> str:
    """Hide the password of a URL: ``mqtt://u:secret@h`` → ``mqtt://u:***@h``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def load_settings(
    *, config_file: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read and validate the configuration.

    Parameters
    ----------
    config_file
        A TOML file; defaults to ``$SONAE_CONFIG`` when set.
    environ
        The environment to read (``os.environ`` by default).

    Raises
    ------
    ConfigError
        When a value is invalid, a key is unknown, or the file cannot be read.
    """
    env = os.environ if environ is None else environ
    path = config_file or env.get("SONAE_CONFIG") or None
    from_file: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                document = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path}: not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None
        for section, table in document.items():
            if not isinstance(table, dict):
                raise ConfigError(f"config file {path}: {section!r} must be a [section] table")
            for key, value in table.items():
                name = f"{section}.{key}"
                if name not in _BY_NAME:
                    raise ConfigError(f"config file {path}: unknown key {name!r}")
                from_file[name] = value

    known_env = {s.env for s in SCHEMA} | {"SONAE_CONFIG", "SONAE_NEW_PASSWORD"}
    for key in env:
        if key.startswith("SONAE_") and key not in known_env and not key.startswith("SONAE_TEST_"):
            raise ConfigError(f"{key}: unknown setting (see `sonae config --help` for the schema)")

    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for setting in SCHEMA:
        if setting.env in env and (env[setting.env] != "" or setting.empty_is_value):
            raw, origin, where = env[setting.env], "env", setting.env
        elif setting.name in from_file:
            raw, origin, where = from_file[setting.name], "file", f"{path}: {setting.name}"
        else:
            raw, origin, where = setting.default, "default", setting.name
        value = _coerce(setting, raw, where)
        if value is not None and setting.check is not None:
            problem = setting.check(value)
            if problem:
                # what the user wrote, not what it was read as (found: SONAE_SIMULATORS_DEMO_TIME_SCALE=1e9 was
                # told back as 1000000000.0, " 0.5" as 0.5): the text of the variable, the file's own value
                shown = mask_url(raw) if setting.secret and isinstance(raw, str) else raw
                raise ConfigError(f"{where}={shown!r}: {problem}")
        values[setting.name] = value
        origins[setting.name] = origin
    if values["ingest.partition"] and values["ingest.shared_group"]:
        raise ConfigError("ingest.partition and ingest.shared_group are two ways to share the stream: set only "
                          "one (ingest.partition is the one that loses nothing across broker restarts)")
    return Settings(values, origins)


def describe_schema() -> str:
    """The schema as text, for ``--help`` and the README."""
    lines = []
    for s in SCHEMA:
        default = "(unset)" if s.default is None else repr(s.default)
        lines.append(f"  {s.env:<32} {s.name:<26} default {default}\n      {s.help}")
    return "\n".join(lines)
