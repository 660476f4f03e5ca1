"""The browser the pages' tests drive: Debian's Chromium through the Python package ``playwright``.

Needs ``/usr/bin/chromium`` (or ``SONAE_TEST_CHROMIUM``) and ``playwright`` (its own browser download is never
used); without them ``sync_playwright`` is None or ``CHROMIUM`` does not exist, and the modules skip (their
``pytestmark``). The ``browser`` fixture itself is in ``tests/pages/conftest.py``.
"""

from __future__ import annotations

import os
import shutil

CHROMIUM = os.environ.get("SONAE_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None  # type: ignore[assignment]
