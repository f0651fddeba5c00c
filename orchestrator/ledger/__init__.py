"""The ledger: every job's durable state, on SQLite or PostgreSQL.

``SqlLedger`` holds the only SQL in the project; :mod:`orchestrator.ledger.migrate` brings a
database to the schema the code expects.
"""

from __future__ import annotations

from orchestrator.ledger._bulk import BulkUpdate as BulkUpdate
from orchestrator.ledger._newjobs import PartSpec as PartSpec
from orchestrator.ledger.store import SqlLedger as SqlLedger
from orchestrator.ledger.values import FileKind as FileKind
from orchestrator.ledger.values import JobEvent as JobEvent
from orchestrator.ledger.values import ResultFile as ResultFile
