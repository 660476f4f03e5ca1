"""Web Push on the application-server side: RFC 8291 message encryption and RFC 8292 VAPID.

* **Encryption (RFC 8291, "aes128gcm" of RFC 8188).** For every message a new ephemeral P-256 key
  pair and a random 16-byte salt: ECDH with the browser's ``p256dh`` key, HKDF with its ``auth``
  secret, one record (``rs`` 4096, the payload then the 0x02 last-record delimiter) sealed with
  AES-128-GCM. The body starts with the RFC 8188 header (salt, rs, keyid = our ephemeral public key).
* **VAPID (RFC 8292).** ``Authorization: vapid t=<JWT>, k=<public key>``: an ES256 JWT with
  ``aud`` = the push service's origin, ``exp`` ≤ 24 h ahead and ``sub`` = a contact (mailto: or https:).
  Tokens are cached per origin for an hour (signing is cheap, but 10,000 messages to one origin
  need only one).

Everything is done with ``cryptography`` directly; there is no other Web Push dependency.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

RECORD_SIZE = 4096
#: the largest payload one record of 4096 bytes holds (RFC 8291 §4: 4096 - 16 tag - 1 delimiter,
#: and push services accept at least 4096 bytes of body including the 86-byte header)
MAX_PAYLOAD = 3993


class WebPushError(ValueError):
    """A subscription's keys cannot be used, or a payload is too large."""


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_B64URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}\Z")


def b64u_decode(text: str) -> bytes:
    """base64url with or without ``=`` padding (browsers send it unpadded, some libraries padded);
    ValueError for any other character or a length no encoding has."""
    bare = text.rstrip("=")
    if not _B64URL.match(text) or len(bare) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))


def _public_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    h = hmac.HMAC(salt, hashes.SHA256())
    h.update(ikm)
    return h.finalize()


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    # one block is enough for every length used here (≤ 32)
    h = hmac.HMAC(prk, hashes.SHA256())
    h.update(info + b"\x01")
    return h.finalize()[:length]


def check_keys(p256dh: bytes, auth: bytes) -> None:
    """Refuse keys that cannot work (so a bad subscription fails at subscribe time, not at delivery)."""
    check_auth(auth)
    check_p256dh(p256dh)


def check_auth(auth: bytes) -> None:
    """WebPushError unless ``auth`` is the 16-byte secret of RFC 8291 §3.2."""
    if len(auth) != 16:
        raise WebPushError("keys.auth must be 16 bytes (base64url)")


def check_p256dh(p256dh: bytes) -> None:
    """WebPushError unless ``p256dh`` is an uncompressed point on P-256 (RFC 8291 §3.1)."""
    if len(p256dh) != 65 or p256dh[0] != 4:
        raise WebPushError("keys.p256dh must be an uncompressed P-256 point (65 bytes, base64url)")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    except ValueError:
        raise WebPushError("keys.p256dh is not a point on P-256") from None


def encrypt(payload: bytes, p256dh: bytes, auth: bytes, *, salt: bytes | None = None,
            private_key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """The RFC 8291 aes128gcm body of one push message (``salt``/``private_key`` only for test vectors)."""
    if len(payload) > MAX_PAYLOAD:
        raise WebPushError(f"a push payload is at most {MAX_PAYLOAD} bytes")
    ua_public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
    as_private = private_key or ec.generate_private_key(ec.SECP256R1())
    as_public = _public_bytes(as_private.public_key())
    salt = salt or os.urandom(16)
    ecdh_secret = as_private.exchange(ec.ECDH(), ua_public)
    # RFC 8291 §3.4: IKM from the ECDH secret, keyed by the auth secret and bound to both public keys
    prk_key = _hkdf_extract(auth, ecdh_secret)
    ikm = _hkdf_expand(prk_key, b"WebPush: info\x00" + p256dh + as_public, 32)
    prk = _hkdf_extract(salt, ikm)
    cek = _hkdf_expand(prk, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf_expand(prk, b"Content-Encoding: nonce\x00", 12)
    sealed = AESGCM(cek).encrypt(nonce, payload + b"\x02", None)
    return salt + struct.pack("!IB", RECORD_SIZE, len(as_public)) + as_public + sealed


# -- VAPID ---------------------------------------------------------------------------------------------
def generate_private_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def load_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """A VAPID private key as PEM, or as the base64url 32-byte scalar other tools print."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
    else:
        try:
            raw = b64u_decode(text)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise WebPushError("a VAPID private key is PEM or a base64url 32-byte P-256 scalar")
        key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise WebPushError("a VAPID key must be a P-256 (prime256v1) key")
    return key


@dataclass
class Vapid:
    """The application server's VAPID identity."""

    private_key: ec.EllipticCurvePrivateKey
    subject: str
    ttl_s: int = 12 * 3600
    _cache: dict[str, tuple[str, float]] = field(default_factory=dict)

    @property
    def public_key(self) -> str:
        """The public key as base64url (the ``applicationServerKey`` browsers subscribe with)."""
        return b64u(_public_bytes(self.private_key.public_key()))

    def token(self, audience: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        cached = self._cache.get(audience)
        if cached is not None and cached[1] - now > 3600:
            return cached[0]
        exp = int(now) + self.ttl_s
        header = b64u(json.dumps({"typ": "JWT", "alg": "ES256"}, separators=(",", ":")).encode())
        claims = b64u(json.dumps({"aud": audience, "exp": exp, "sub": self.subject}, separators=(",", ":")).encode())
        signing_input = f"{header}.{claims}".encode()
        der = self.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        jwt = f"{header}.{claims}.{b64u(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
        self._cache[audience] = (jwt, float(exp))
        return jwt

    def authorization(self, endpoint: str) -> str:
        return f"vapid t={self.token(origin_of(endpoint))}, k={self.public_key}"


@functools.lru_cache(maxsize=4096)
def origin_of(url: str) -> str:
    """The origin of ``url`` (RFC 6454 serialisation, the VAPID ``aud``): ``scheme://host[:port]``, the default
    port left out, an IPv6 host in brackets (found: ``http://::ffff:127.0.0.1:8080``, which no push service
    reads as the origin of ``http://[::ffff:127.0.0.1]:8080/…``)."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    host = parts.hostname or ""
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}{port}"
