"""The packages whose migrations run are registered as ``sonae.migrations`` entry points (pyproject),
so the ground (``sonae.migrations``) names no package above it (issue #20). Checked against the tree:
every package with SQL migrations is registered, and a table a migration REFERENCES is created by its
own package or one registered before it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sonae import migrations

ROOT = Path(__file__).resolve().parents[1]
CREATES = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?([a-z_]+)", re.IGNORECASE)
REFERS = re.compile(r"REFERENCES ([a-z_]+)", re.IGNORECASE)


def test_every_package_with_migrations_is_registered() -> None:
    on_disk = {p.parent.name for p in ROOT.glob("*/migrations") if any(p.glob("*.sql"))}
    assert set(migrations.registered_components()) == on_disk


def test_a_referenced_table_is_created_earlier() -> None:
    created: dict[str, str] = {}
    order = migrations.registered_components()
    for package in order:
        sql = "\n".join(m.sql for m in migrations.discover(package))
        for table in CREATES.findall(sql):
            created.setdefault(table.lower(), package)
        for table in REFERS.findall(sql):
            owner = created.get(table.lower())
            assert owner is not None, f"{package} refers to {table}, which no earlier package creates"
            assert order.index(owner) <= order.index(package)


def test_the_ground_names_no_package_above_it() -> None:
    text = (ROOT / "sonae" / "migrations.py").read_text(encoding="utf-8")
    for package in ("ingest", "alerting", "api", "notify", "evac", "ngsi", "jma", "app"):
        assert not re.search(rf"[\"']{package}[\"']", text), package


def test_nothing_registered_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrations, "entry_points", lambda group: [])
    with pytest.raises(migrations.MigrationError, match="install Sonae"):
        migrations.registered_components()
