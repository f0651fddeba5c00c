"""The :class:`Emulator`: a Batch API server to run in-process or as a process.

This is where a dialect is picked (:data:`DIALECTS`) and the simulation is assembled around it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from orchestrator.clock import Clock, SystemClock
from orchestrator.emulator.anthropic import AnthropicDialect
from orchestrator.emulator.app import UNAUTHENTICATED, EmulatorApp, workspace_id
from orchestrator.emulator.dialect import Dialect, Services
from orchestrator.emulator.faults import FaultInjector
from orchestrator.emulator.files import Files
from orchestrator.emulator.jobs import BUDGET_REFUSALS, Jobs
from orchestrator.emulator.mistral import MistralDialect
from orchestrator.emulator.openai import OpenAIDialect
from orchestrator.emulator.settings import EmulatorSettings, FaultSettings
from orchestrator.emulator.store import Store
from orchestrator.emulator.tokens import MAX_ENQUEUED, TOKEN_REFUSALS

DIALECTS: Mapping[str, Callable[[], Dialect]] = {
    "mistral": MistralDialect,
    "openai": OpenAIDialect,
    "anthropic": AnthropicDialect,
}
"""The wires the emulator speaks, by ``dialect`` name; a new dialect adds its entry here."""


class Emulator:
    """A faithful Batch API server (Mistral's Files + Batch API by default, or OpenAI's), as an
    ASGI app.

    Job progress is computed from ``clock`` whenever a request looks at a job: nothing runs
    in the background, so a ``FakeClock`` makes every test deterministic.

    Args:
        settings: simulation, budget, auth and fault settings.
        clock: the time source (``SystemClock`` by default).
        state_dir: where state persists (SQLite + file blobs); a process restarted on the same
            folder carries on. ``None`` uses a temporary folder removed by :meth:`close`.
        dialect: the wire to speak, a key of :data:`DIALECTS`. A state folder remembers the
            dialect that made it and refuses another.

    Raises:
        ValueError: an unknown dialect, or a state folder made by another dialect.

    Example::

        with Emulator(EmulatorSettings(time_scale=3600), clock=FakeClock()) as emu:
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=emu.app), base_url="http://emulator",
                headers={"Authorization": "Bearer k"},
            )
    """

    def __init__(
        self,
        settings: EmulatorSettings | None = None,
        *,
        clock: Clock | None = None,
        state_dir: Path | str | None = None,
        dialect: str = "mistral",
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}; known: {', '.join(sorted(DIALECTS))}")
        self.dialect = DIALECTS[dialect]()
        self.settings = settings or EmulatorSettings()
        self.clock: Clock = clock or SystemClock()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="orchestrator-emulator-")
            state_dir = self._tmp.name
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._store = Store(self.state_dir)
        self._closed = False
        try:
            self._check_dialect(dialect)
        except ValueError:
            self.close()
            raise
        self._injector = FaultInjector(self.settings.faults)
        files = Files(self.settings, self.clock, self._store)
        self._jobs = Jobs(
            self.settings,
            self.clock,
            self._store,
            files,
            results=self.dialect.results,
            new_id=self.dialect.new_job_id,
            rules=self.dialect.rules,
            synth=self.dialect.synth(self.settings),
            finalizing=self.dialect.finalizing,
        )
        services = Services(
            files=files,
            jobs=self._jobs,
            store=self._store,
            settings=self.settings,
            clock=self.clock,
        )
        self._app = EmulatorApp(dialect=self.dialect, services=services, injector=self._injector)
        self._app.stats_provider = self._stats_for
        self._closed = False

    def _check_dialect(self, dialect: str) -> None:
        """Record the state folder's dialect, or refuse a folder made by another one (folders
        written before the dialect was recorded are Mistral's)."""
        stored = self._store.get_meta("dialect")
        if stored is None:
            stored = dialect if self._store.is_empty() else "mistral"
            self._store.set_meta("dialect", stored)
        if stored != dialect:
            raise ValueError(
                f"emulator state {self.state_dir} was made by the {stored} dialect, not "
                f"{dialect}: use another --state-dir, or --dialect {stored}"
            )

    @property
    def app(self) -> EmulatorApp:
        """The ASGI application."""
        return self._app

    @property
    def faults(self) -> FaultSettings:
        """The fault settings in force."""
        return self._injector.settings

    def set_faults(self, faults: FaultSettings) -> None:
        """Change the injected faults at runtime (each route's sequence restarts)."""
        self._injector.replace(faults)

    @staticmethod
    def workspace_id(api_key: str) -> str:
        """The workspace id (as in :meth:`stats`) of an API key."""
        return workspace_id(api_key)

    def transport(self) -> httpx.ASGITransport:
        """An httpx transport that calls the app in-process."""
        return httpx.ASGITransport(app=self._app)

    def client(self, api_key: str, **kwargs: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` talking to the app in-process with ``api_key``.

        Keyword arguments go to ``httpx.AsyncClient``. The caller closes the client.
        """
        headers = {"Authorization": f"Bearer {api_key}", **kwargs.pop("headers", {})}
        return httpx.AsyncClient(
            transport=self.transport(), base_url="http://emulator", headers=headers, **kwargs
        )

    def stats(self) -> dict[str, Any]:
        """The introspection data (also served at ``GET /_emulator/stats``).

        Returns:
            ``{"workspaces": {id: {...}}, "unauthenticated": {...}, "faults": {...}}`` where
            each workspace has ``jobs_created``, ``jobs_deleted``,
            ``jobs_by_orchestrator_job_id``, ``files_uploaded``, ``pending``, ``max_pending``,
            ``pending_budget``, ``refused_creates``, ``requests`` (route → status → count;
            ``dropped`` for dropped connections), ``faults`` (route → kind → count), and the
            enqueued prompt tokens: ``enqueued_tokens`` (model → tokens now),
            ``max_enqueued_tokens`` (model → the most ever), ``token_limit``,
            ``token_refusals``.
        """
        return self._stats_for(None)

    def workspace_stats(self, api_key: str) -> dict[str, Any]:
        """The :meth:`stats` entry of one API key's workspace (zeros if it made no request)."""
        ws = workspace_id(api_key)
        return self._stats_for(ws)["workspaces"].get(ws) or self._workspace_stats(ws)

    def _workspace_stats(self, ws: str) -> dict[str, Any]:
        store = self._store
        created, deleted, tags = store.job_counts(ws)
        counters = store.counters(ws)
        refusals = counters.get("refusals", {}).get("jobs.create", {})
        return {
            "jobs_created": created,
            "jobs_deleted": deleted,
            "jobs_by_orchestrator_job_id": tags,
            "files_uploaded": store.file_count(ws, "upload"),
            "pending": self._jobs.pending(ws),
            "max_pending": store.max_pending(ws),
            "pending_budget": self.settings.pending_budget,
            "refused_creates": refusals.get(BUDGET_REFUSALS, 0),
            "requests": counters.get("requests", {}),
            "faults": counters.get("faults", {}),
            "enqueued_tokens": self._jobs.enqueued_tokens(ws),
            "max_enqueued_tokens": counters.get(MAX_ENQUEUED[0], {}).get(MAX_ENQUEUED[1], {}),
            "token_limit": self.settings.token_limit,
            "token_refusals": refusals.get(TOKEN_REFUSALS, 0),
        }

    def _stats_for(self, only: str | None) -> dict[str, Any]:
        workspaces = [ws for ws in self._store.workspaces() if only is None or ws == only]
        return {
            "workspaces": {ws: self._workspace_stats(ws) for ws in workspaces},
            "unauthenticated": self._store.counters(UNAUTHENTICATED).get("requests", {}),
            "faults": self._injector.settings.to_dict(),
        }

    def close(self) -> None:
        """Close the state database and remove the temporary state folder, if any."""
        if self._closed:
            return
        self._closed = True
        if hasattr(self, "_jobs"):  # a dialect check failed before it existed
            self._jobs.close()
        self._store.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
