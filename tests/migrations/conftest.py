"""Fixtures of the migration tests: an empty database on SQLite and on PostgreSQL."""

from __future__ import annotations

from tests.ledger.databases import clock, ledger_url, postgres_url, sqlite_url

__all__ = ["clock", "ledger_url", "postgres_url", "sqlite_url"]
