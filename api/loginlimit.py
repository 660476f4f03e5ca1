"""Limits on password guessing at ``POST /api/v1/auth/token``: per client address and per account.

* **Per address** — 10 attempts a minute (bursts of 10), whatever the outcome, as before: one client
  cannot try many passwords fast. Behind a shared office NAT everyone shares this budget; the account
  limit below is what protects an account from guessing spread over many addresses.
* **Per account** — only *failed* attempts count: 10 in a burst, then one more every 2 minutes (30 an
  hour, refilled). Past that the account is **slowed, not locked**: beside the refills, one attempt
  every ``SLOW_INTERVAL_S`` (120 s) is still checked, from any address; the others get 429 with
  ``Retry-After``. So an attacker spreading guesses over any number of addresses gets at most
  ``ACCOUNT_FAILURE_BURST`` + 2 × 86,400 / 120 ≈ 1,450 passwords checked a day against one account
  (argon2id hashes, passwords of at least ``api.auth.MIN_PASSWORD_LENGTH`` characters;
  ``tests/api/test_api_abuse.py`` counts a day of it), and cannot lock a member of staff out: the owner's
  attempt waits for the next slot (at most ``SLOW_INTERVAL_S``, more only while an attacker takes every slot
  first).
  A successful login clears the account's failures, and the address it came from is remembered for the
  account (the last ``TRUSTED_PER_ACCOUNT``): from there the account limit does not apply, so an
  attacker hammering the account from elsewhere cannot keep its owner out (the OWASP "device cookie"
  idea, keyed by address because the API has no cookies).

State is per process and in memory (bounded; oldest entries dropped first); several API processes each
apply their own limits. Addresses and usernames are never logged here.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from sonae.ratelimit import TokenBuckets

ADDRESS_PER_MINUTE = 10
ACCOUNT_FAILURE_BURST = 10
ACCOUNT_FAILURES_PER_MINUTE = 0.5
SLOW_INTERVAL_S = 120.0
MAX_ACCOUNTS = 100_000
TRUSTED_PER_ACCOUNT = 8


class LoginLimits:
    """The two limits; :meth:`admit` before checking a password, :meth:`record` after."""

    def __init__(self, *, address_per_minute: int = ADDRESS_PER_MINUTE, failure_burst: int = ACCOUNT_FAILURE_BURST,
                 failures_per_minute: float = ACCOUNT_FAILURES_PER_MINUTE,
                 slow_interval_s: float = SLOW_INTERVAL_S) -> None:
        self.addresses = TokenBuckets(per_minute=address_per_minute, burst=address_per_minute)
        self.failure_burst = float(failure_burst)
        self.failure_rate = failures_per_minute / 60.0
        self.slow_interval_s = slow_interval_s
        # username → (failure tokens left, time of that count, earliest next attempt when slowed)
        self._accounts: OrderedDict[str, tuple[float, float, float]] = OrderedDict()
        # username → addresses it last logged in from successfully (oldest first)
        self._trusted: OrderedDict[str, list[str]] = OrderedDict()

    def _tokens(self, username: str, now: float) -> tuple[float, float]:
        tokens, stamp, next_slot = self._accounts.get(username, (self.failure_burst, now, 0.0))
        return min(self.failure_burst, tokens + (now - stamp) * self.failure_rate), next_slot

    def admit(self, *, address: str, username: str, now: float | None = None) -> float:
        """0 when this attempt may be checked, else the seconds to wait (answer 429)."""
        now = time.monotonic() if now is None else now
        wait = self.addresses.take(address, now)
        if wait > 0:
            return wait
        key = username[:64]
        if address in self._trusted.get(key, ()):
            return 0.0
        tokens, next_slot = self._tokens(key, now)
        if tokens >= 1.0:
            return 0.0
        if now < next_slot:
            return next_slot - now
        self._accounts[key] = (tokens, now, now + self.slow_interval_s)  # this attempt takes the slot
        self._accounts.move_to_end(key)
        return 0.0

    def record(self, *, username: str, success: bool, address: str | None = None, now: float | None = None) -> None:
        """Count a failed attempt against the account; a success clears its failures and trusts ``address``."""
        now = time.monotonic() if now is None else now
        key = username[:64]
        if success:
            self._accounts.pop(key, None)
            if address is not None:
                known = [a for a in self._trusted.pop(key, []) if a != address] + [address]
                self._trusted[key] = known[-TRUSTED_PER_ACCOUNT:]
                while len(self._trusted) > MAX_ACCOUNTS:
                    self._trusted.popitem(last=False)
            return
        tokens, next_slot = self._tokens(key, now)
        self._accounts[key] = (max(0.0, tokens - 1.0), now, next_slot)
        self._accounts.move_to_end(key)
        while len(self._accounts) > MAX_ACCOUNTS:
            self._accounts.popitem(last=False)


def retry_after(wait: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait)))
