"""Real receivers for the notify tests, started in-process.

* :class:`PushService` — the receiving side of RFC 8030 for many browsers: it checks the VAPID
  Authorization (RFC 8292: an ES256 JWT verified with the ``k`` key, ``aud`` = its own origin, ``exp``
  within 24 h) and the headers, and decrypts the RFC 8291 ``aes128gcm`` body with the browser's own
  private key. The decryption here is written independently of ``notify.webpush`` (it uses the
  ``cryptography`` HKDF class, not hand-rolled HMACs), and is checked against RFC 8291 Appendix A.
* :class:`WebhookReceiver` — verifies ``X-Sonae-Signature`` with the webhook's secret; can answer
  errors for its first N requests.
* :class:`MailSink` — an aiosmtpd SMTP server.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from api.server import SERVER_OPTIONS
from tests.api_support import ApiTestServer


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _pub(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def rfc8291_decrypt(body: bytes, ua_private: ec.EllipticCurvePrivateKey, auth: bytes) -> bytes:
    """Decrypt an aes128gcm Web Push body as a browser does (single record)."""
    salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
    as_public = body[21:21 + idlen]
    ciphertext = body[21 + idlen:]
    assert idlen == 65 and rs >= 18 and len(ciphertext) <= rs, "one record with the sender's key as keyid"
    ecdh = ua_private.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), as_public))
    ikm = HKDF(hashes.SHA256(), 32, salt=auth, info=b"WebPush: info\x00" + _pub(ua_private) + as_public).derive(ecdh)
    cek = HKDF(hashes.SHA256(), 16, salt=salt, info=b"Content-Encoding: aes128gcm\x00").derive(ikm)
    nonce = HKDF(hashes.SHA256(), 12, salt=salt, info=b"Content-Encoding: nonce\x00").derive(ikm)
    padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
    stripped = padded.rstrip(b"\x00")
    assert stripped.endswith(b"\x02"), "the last record ends with the 0x02 delimiter"
    return stripped[:-1]


def verify_vapid(authorization: str, origin: str) -> dict[str, Any]:
    """Check an RFC 8292 ``vapid t=…, k=…`` header; returns the JWT claims."""
    scheme, _, rest = authorization.partition(" ")
    assert scheme == "vapid", authorization
    params = dict(part.strip().split("=", 1) for part in rest.split(","))
    header_b64, claims_b64, sig_b64 = params["t"].split(".")
    header = json.loads(unb64u(header_b64))
    claims = json.loads(unb64u(claims_b64))
    assert header == {"typ": "JWT", "alg": "ES256"}
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64u(params["k"]))
    sig = unb64u(sig_b64)
    assert len(sig) == 64
    key.verify(encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")),
               f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    assert claims["aud"] == origin, claims
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600 + 5
    assert claims["sub"].startswith(("mailto:", "https:"))
    return {**claims, "k": params["k"]}


class _Server:
    def __init__(self, app: web.Application) -> None:
        self.server = ApiTestServer(app, host="127.0.0.1")

    async def start(self) -> None:
        await self.server.start_server(**SERVER_OPTIONS)

    async def close(self) -> None:
        await self.server.close()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


@dataclass
class Browser:
    token: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    endpoint: str
    answer: int = 201
    received: list[dict[str, Any]] = field(default_factory=list)

    def subscription(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "keys": {"p256dh": b64u(_pub(self.private_key)), "auth": b64u(self.auth)}}


class PushService(_Server):
    """A push service with any number of browsers subscribed to it."""

    def __init__(self, *, delay_s: float = 0.0) -> None:
        app = web.Application()
        app.router.add_post("/push/{token}", self._receive)
        super().__init__(app)
        self.browsers: dict[str, Browser] = {}
        self.delay_s = delay_s
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.errors: list[str] = []
        self._changed = asyncio.Condition()

    def browser(self) -> Browser:
        token = secrets.token_urlsafe(12)
        b = Browser(token, ec.generate_private_key(ec.SECP256R1()), secrets.token_bytes(16),
                    f"{self.origin}/push/{token}")
        self.browsers[token] = b
        return b

    async def _receive(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)  # a slow service, to see how many requests overlap
            b = self.browsers.get(request.match_info["token"])
            if b is None:
                return web.Response(status=404)
            body = await request.read()
            try:
                claims = verify_vapid(request.headers["Authorization"], self.origin)
                assert request.headers["Content-Encoding"] == "aes128gcm"
                assert int(request.headers["TTL"]) > 0
                assert request.headers.get("Urgency") in ("very-low", "low", "normal", "high")
                payload = json.loads(rfc8291_decrypt(body, b.private_key, b.auth))
            except Exception as exc:  # the test fails on any of these
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return web.Response(status=400)
            if b.answer != 201:
                return web.Response(status=b.answer)
            b.received.append({**payload, "_vapid_k": claims["k"], "_urgency": request.headers["Urgency"],
                               "_topic": request.headers.get("Topic")})
            async with self._changed:
                self._changed.notify_all()
            return web.Response(status=201, headers={"Location": f"{self.origin}/message/{secrets.token_hex(4)}"})
        finally:
            self.in_flight -= 1

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        await asyncio.wait_for(wait(), timeout)


@dataclass
class Delivery:
    name: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool


class WebhookReceiver(_Server):
    def __init__(self) -> None:
        app = web.Application()
        app.router.add_post("/hook/{name}", self._receive)
        super().__init__(app)
        self.secrets: dict[str, str] = {}
        self.fail_first: dict[str, int] = {}
        self.seen: dict[str, int] = {}
        self.deliveries: list[Delivery] = []
        self._changed = asyncio.Condition()

    def url(self, name: str) -> str:
        return f"{self.origin}/hook/{name}"

    async def _receive(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.read()
        self.seen[name] = self.seen.get(name, 0) + 1
        if self.seen[name] <= self.fail_first.get(name, 0):
            return web.Response(status=503, text="down for maintenance")
        expected = "sha256=" + hmac.new(self.secrets.get(name, "").encode(), body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(expected, request.headers.get("X-Sonae-Signature", ""))
        self.deliveries.append(Delivery(name, dict(request.headers), body, ok))
        async with self._changed:
            self._changed.notify_all()
        return web.Response(status=204 if ok else 401)

    def of(self, name: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.name == name]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        await asyncio.wait_for(wait(), timeout)


class MailSink:
    """An aiosmtpd SMTP server (its own thread); messages are handed to the test's loop."""

    def __init__(self, port: int) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[tuple[list[str], Message]] = []
        self.loop = asyncio.get_running_loop()
        self.arrived = asyncio.Event()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = message_from_bytes(envelope.original_content or envelope.content)
                sink.loop.call_soon_threadsafe(sink._add, list(envelope.rcpt_tos), msg)
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port, ready_timeout=60)
        self.url = f"smtp://127.0.0.1:{port}"

    def _add(self, rcpt: list[str], msg: Message) -> None:
        self.messages.append((rcpt, msg))
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), max(0.01, deadline - time.monotonic()))

    @staticmethod
    def subject(msg: Message) -> str:
        return str(make_header(decode_header(msg["Subject"])))

    @staticmethod
    def text(msg: Message) -> str:
        payload = msg.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode(msg.get_content_charset() or "utf-8")
