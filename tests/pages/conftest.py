"""Fixtures shared by the pages' browser tests (tests/pages/test_*_browser.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.pages.chromium import CHROMIUM, CHROMIUM_ARGS, sync_playwright

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for a module's tests (each test opens contexts of its own). A module that uses it
    skips first (its ``pytestmark``) when Chromium or ``playwright`` is missing."""
    assert sync_playwright is not None
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
