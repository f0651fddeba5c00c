"""State-machine property test: random interleavings against the real ledger and the real loops.

Hypothesis drives intake (``admit_spec`` on real JSONL files), the daemon's own admission and
submission, poll and collection cycles (``Submitter``, ``Poller``, ``Collector``) over a SQLite
ledger on disk, and the remote side (:mod:`tests.survival.scripted`): progress, job-level
failures, timeouts, cancellations, answers from a lagging replica (out-of-order, repeated and
not-yet-visible statuses), failing calls, and crashes before or after the remote side acted,
each followed by a restart (new loops, a reopened ledger). After every step:

- every transition in every job's history is legal (the transition table);
- the provider never holds more pending requests than the budget;
- no job is both finished and in flight: a done or rejected job has no remote job still
  running, an in-flight job has no outcome;
- no job is lost: every job intake accepted is in the ledger, and at most one remote job
  carries each job's token, a running job's remote job being that one;
- a token-limit refusal (OpenAI: the create answers, the batch fails at validation with
  ``token_limit_exceeded``) sends its job back to the queue: such a batch is never a job's
  result, and only such a batch requeues a job. Refused batches carry the job's token too (it
  keeps it), so the two checks above count only the batches that were not refused.

At the end of each example the remote side behaves and every job is driven to its end: all are
``done`` or ``rejected``, each done job's result files hold exactly the remote results of its
one unrefused remote job (a refused job finishes later, on a new batch), and no half file is
left.

The test runs once per dialect (:mod:`tests.survival.dialects`), with the same rules and
invariants: the scripted remote side speaks each one's statuses, ends and listing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import pytest
import structlog
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from orchestrator.clock import FakeClock
from orchestrator.daemon import collect as collect_module
from orchestrator.daemon import submit as submit_module
from orchestrator.daemon.collect import RESULT_NAMES, Collector
from orchestrator.daemon.context import RECONCILE_GRACE, Runtime, WorkspaceRuntime
from orchestrator.daemon.intake import admit_spec
from orchestrator.daemon.poll import Poller
from orchestrator.daemon.submit import Submitter
from orchestrator.daemon.waker import Waker
from orchestrator.ledger import FileKind, SqlLedger
from orchestrator.ledger.migrate import upgrade
from orchestrator.model import (
    FINAL_STATES,
    IN_FLIGHT_STATES,
    TRANSITIONS,
    JobSpec,
    JobState,
    Outcome,
    pending,
)
from orchestrator.polling import PollPolicy
from tests.survival.dialects import OPENAI, Wire
from tests.survival.scripted import (
    CREATE_MODES,
    DIALECTS,
    MODES,
    Crash,
    Dialect,
    Remote,
    ScriptedProvider,
)
from tests.survival.settings import report

BUDGET = 100
MAX_LAG = 60.0
"""A lagging replica is at most this far behind: less than the reconcile grace (180 s), the
assumption recovery rests on (a list that lacks a job after the grace means it was never made)."""
T = TypeVar("T")

MODE = st.sampled_from(("ok",) * (len(MODES) - 1) + MODES)
"""What a provider call does: half the time it works, otherwise any of the failure modes."""
CREATE_MODE = st.sampled_from(
    ("ok",) * 4 + ("lost", "crash_after") * 2 + CREATE_MODES + ("token_limit",) * 3
)
"""Creates are where duplicates are born: a third of them leave the outcome in doubt (the remote
job exists, the daemon does not know it), which recovery must adopt, not create again. One in
five is a token-limit refusal (OpenAI: the batch fails at validation; Mistral: a capacity
refusal of the create), so that the requeue path is walked in the CI run too."""
SIZE = st.one_of(
    st.integers(min_value=1, max_value=BUDGET // 3),
    st.integers(min_value=1, max_value=BUDGET + 20),
)
"""Mostly jobs that share the budget with others; some larger than the whole budget."""
LAG = st.sampled_from([0.0, 0.0, 10.0, MAX_LAG])

CI = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SOAK = settings(CI, max_examples=1000, stateful_step_count=60)


def _contains_crash(exc: BaseException) -> bool:
    if isinstance(exc, Crash):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_contains_crash(inner) for inner in exc.exceptions)
    return False


class DaemonMachine(RuleBasedStateMachine):
    """One daemon (restartable), one workspace, one scripted provider."""

    template: Path
    """A migrated SQLite ledger, copied for each example."""
    stats: Counter[str]
    """Figures summed over every example (the report)."""
    dialect: Dialect
    """The scripted provider's dialect."""
    model: str
    """The model every job names (the dialect's)."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="orch-machine-"))
        shutil.copy(self.template, self.folder / "ledger.db")
        self.url = f"sqlite:///{self.folder / 'ledger.db'}"
        self.results = self.folder / "results"
        self._portal_cm = anyio.from_thread.start_blocking_portal("asyncio")
        self.portal = self._portal_cm.__enter__()
        self.clock = FakeClock()
        self.provider = ScriptedProvider(self.clock, self.dialect)
        self.names: set[str] = set()
        self.checked_events = 0
        self.ledger: SqlLedger | None = None
        self._start()

    # Running the daemon's pieces -------------------------------------------------------------

    def _call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``fn`` on the portal's event loop (where the ledger and the loops live)."""
        result: T = self.portal.call(fn)
        return result

    def _start(self) -> None:
        async def start() -> None:
            self.ledger = await SqlLedger.connect(self.url, clock=self.clock)
            runtime = Runtime(
                clock=self.clock,
                ledger=self.ledger,
                results_dir=self.results,
                policy=PollPolicy(initial=5.0, max=60.0),
                activity=Waker(self.clock),
                reconcile_grace=RECONCILE_GRACE,
            )
            workspace = WorkspaceRuntime(
                name="main",
                provider=self.provider,
                pending_budget=BUDGET,
                count_external=False,
                admission=Waker(self.clock),
                poll=Waker(self.clock),
                collect=Waker(self.clock),
            )
            self.submitter = Submitter(runtime, workspace)
            self.poller = Poller(runtime, workspace)
            self.collector = Collector(runtime, workspace)

        self._call(start)

    def _restart(self) -> None:
        """The process died: drop every in-memory piece, reopen the ledger, start again."""
        ledger = self.ledger
        if ledger is not None:
            self._call(ledger.close)
        self.stats["restarts"] += 1
        self._start()

    def _cycle(self, run: Callable[[], Coroutine[Any, Any, object]]) -> None:
        """Run one loop pass; if the process "died" in it, restart."""

        async def guarded() -> bool:
            # Caught inside the portal: a BaseException escaping it would stop its event loop.
            try:
                await run()
            except BaseException as exc:
                if _contains_crash(exc):
                    return True
                if isinstance(exc, Exception):
                    raise
                raise AssertionError(f"a crash mixed with other errors: {exc!r}") from exc
            return False

        if self._call(guarded):
            self.stats["crashes"] += 1
            self._restart()

    # Rules -----------------------------------------------------------------------------------

    @initialize(sizes=st.lists(SIZE, min_size=1, max_size=4))
    def first_jobs(self, sizes: list[int]) -> None:
        """The daemon starts with a few jobs already defined (the pipeline fills at once)."""
        for size in sizes:
            self.intake(size=size, priority=0)

    @rule(
        size=SIZE,
        priority=st.sampled_from([0, 0, 1, 5]),
    )
    def intake(self, size: int, priority: int) -> None:
        """A new job arrives (some can never fit the budget)."""
        name = f"job-{len(self.names)}"
        path = self.folder / "inputs" / f"{name}.jsonl"
        path.parent.mkdir(exist_ok=True)
        with path.open("w") as stream:
            for i in range(size):
                body = {"messages": [{"role": "user", "content": f"q{i}"}]}
                stream.write(json.dumps({"custom_id": f"{name}-{i}", "body": body}) + "\n")
        spec = JobSpec(
            name=name,
            workspace="main",
            model=self.model,
            endpoint="/v1/chat/completions",
            inputs=(str(path),),
            priority=priority,
        )
        ledger = self.ledger
        assert ledger is not None
        _, created = self._call(lambda: admit_spec(ledger, spec))
        assert created
        self.names.add(name)
        self.stats["jobs"] += 1

    @rule(
        upload=MODE,
        create=CREATE_MODE,
        listing=MODE,
        lag=LAG,
    )
    def submit_cycle(self, upload: str, create: str, listing: str, lag: float) -> None:
        """One admission and submission pass; the first call of each kind does what is drawn."""
        self.provider.modes.update(upload=upload, create=create, list=listing)
        self.provider.lag = lag
        self._cycle(self.submitter.cycle)
        self.stats["submit_cycles"] += 1

    @rule(
        listing=MODE,
        get=MODE,
        cancel=MODE,
        lag=LAG,
    )
    def poll_cycle(self, listing: str, get: str, cancel: str, lag: float) -> None:
        """One poll cycle, possibly answered by a lagging replica (stale or missing jobs)."""
        self.provider.modes.update(list=listing, get=get, cancel=cancel)
        self.provider.lag = lag
        self._cycle(self.poller.cycle)
        self.stats["poll_cycles"] += 1

    @rule(download=MODE)
    def collect_cycle(self, download: str) -> None:
        """One collection pass; the first download does what is drawn."""
        self.provider.modes.update(download=download)
        self._cycle(self.collector.cycle)
        self.stats["collect_cycles"] += 1

    @rule(
        index=st.integers(min_value=0, max_value=50),
        amount=st.integers(min_value=1, max_value=BUDGET),
        end=st.sampled_from([None, None, None, "fail", "expire", "cancel"]),
    )
    def remote_progress(self, index: int, amount: int, end: str | None) -> None:
        """The provider moves one of its jobs on (validation, progress, or an end)."""
        # No precondition on the remote side: which remote jobs exist can depend on how asyncio
        # interleaved the tasks of a crashed cycle, and Hypothesis needs the same rules enabled
        # when it replays a failing example.
        active = [r for r in self.provider.remotes.values() if r.active]
        if not active:
            return
        self.provider.step(active[index % len(active)], amount=amount, end=end)

    @rule(seconds=st.sampled_from([1.0, 30.0, 200.0, 700.0]))
    def time_passes(self, seconds: float) -> None:
        """Time moves on (past poll intervals, the reconcile grace, backoffs)."""
        self._call_sync(lambda: self.clock.advance(seconds))

    @precondition(lambda self: bool(self.names))
    @rule(index=st.none() | st.none() | st.integers(min_value=0, max_value=50))
    def cancel(self, index: int | None) -> None:
        """The operator cancels a job, whatever its state (a third of the time: cancelled jobs
        leave the pipeline early, and the deep paths need jobs that stay)."""
        if index is None:
            return
        name = sorted(self.names)[index % len(self.names)]
        ledger = self.ledger
        assert ledger is not None
        self._call(lambda: ledger.request_cancel(name))
        self.stats["cancels"] += 1

    @rule()
    def crash_and_restart(self) -> None:
        """kill -9 between two steps, then a fresh start on the same ledger."""
        self._restart()

    def _call_sync(self, fn: Callable[[], object]) -> None:
        async def call() -> None:
            fn()

        self._call(call)

    # Invariants ------------------------------------------------------------------------------

    @invariant()
    def transitions_are_legal_and_nothing_is_lost(self) -> None:
        """Every recorded move is in the table; every accepted job is there; no duplicates."""
        ledger = self.ledger
        assert ledger is not None

        async def read() -> tuple[list[Any], list[Any]]:
            jobs = await ledger.list_jobs()
            events = [e for job in jobs for e in await ledger.events(job.id)]
            return jobs, events

        jobs, events = self._call(read)
        assert {job.name for job in jobs} == self.names, "a job was lost"
        for event in events:
            if event.from_state is None:
                assert event.to_state in (JobState.QUEUED, JobState.REJECTED), event
            elif event.from_state is not event.to_state:
                assert event.to_state in TRANSITIONS[event.from_state], event
        self.checked_events = len(events)
        by_id = {job.id: job for job in jobs}
        for event in events:
            if (event.from_state, event.to_state) == (JobState.RUNNING, JobState.QUEUED):
                # Only a refusal requeues a running job, and the event names the refused batch.
                refused = [r.id for r in self._remotes(by_id[event.job_id])[0] if r.refused]
                assert any(f"remote {rid} " in (event.detail or "") for rid in refused), event
        for job in jobs:
            remotes, live = self._remotes(job)
            assert len(live) <= 1, f"{job.name}: {len(live)} remote jobs"
            if job.state in FINAL_STATES:
                assert pending(job) == 0
                assert not any(r.active for r in remotes), (
                    f"{job.name} is {job.state} but its remote job still runs"
                )
                if job.state is JobState.DONE:
                    assert job.outcome is not None, job
            if job.state in IN_FLIGHT_STATES:
                assert job.outcome is None, job
            if job.state is JobState.RUNNING:
                # Its one remote job; or, if it has none, a refused batch (not seen failing yet).
                if live:
                    assert job.remote_id == live[0].id, job
                else:
                    assert job.remote_id in {r.id for r in remotes}, job
            refusal = self.provider.remotes.get(job.remote_id or "")
            if refusal is not None and refusal.refused and job.state is not JobState.RUNNING:
                # Collected from a refused batch: only if it was cancelled before the refusal.
                assert not refusal.refusal_happened, f"{job.name} {job.state} from the refusal"
                assert job.outcome in (None, Outcome.CANCELLED), job

    def _remotes(self, job: Any) -> tuple[list[Remote], list[Remote]]:
        """The remote jobs with ``job``'s token, and those of them not refused for tokens."""
        remotes = self.provider.by_token(job.client_token)
        return remotes, [r for r in remotes if not r.refused]

    @invariant()
    def budget_is_respected_at_the_provider(self) -> None:
        """The provider never held more pending requests than the budget, and the daemon never
        commits more than the budget: the reservations of its admitted and submitting jobs
        plus what its remote jobs really hold (the truth, not the daemon's possibly stale
        view, which may only overstate it) stay within the budget."""
        assert self.provider.max_pending <= BUDGET, self.provider.max_pending
        ledger = self.ledger
        assert ledger is not None
        jobs = self._call(ledger.list_jobs)
        committed = 0
        counted: set[str] = set()
        for job in jobs:
            if job.state in (JobState.ADMITTED, JobState.SUBMITTING):
                committed += job.request_count
                counted.update(r.id for r in self.provider.by_token(job.client_token))
        committed += sum(r.pending for r in self.provider.remotes.values() if r.id not in counted)
        assert committed <= BUDGET, f"the daemon committed {committed} > {BUDGET}"

    # The end of an example: drive everything to its end ---------------------------------------

    def teardown(self) -> None:
        """Let every job finish, check the results, and clean up."""
        try:
            if self.ledger is not None and not self._failed():
                self._drain()
        finally:
            if self.ledger is not None:
                self._call(self.ledger.close)
            self._portal_cm.__exit__(None, None, None)
            shutil.rmtree(self.folder, ignore_errors=True)

    def _failed(self) -> bool:
        # Hypothesis tears down in a ``finally``: after a failed step, the drain must not hide
        # the step's error behind its own.
        return sys.exc_info()[0] is not None

    def _drain(self) -> None:
        self.provider.behave()
        ledger = self.ledger
        assert ledger is not None
        stuck = 0
        before: list[tuple[int, JobState]] = []
        while stuck < 10:  # rounds without any job moving: something would never finish
            jobs = self._call(ledger.list_jobs)
            if all(job.state in FINAL_STATES for job in jobs):
                break
            now = [(job.id, job.state) for job in jobs]
            stuck = stuck + 1 if now == before else 0
            before = now
            self.provider.finish_all()
            self._call_sync(lambda: self.clock.advance(RECONCILE_GRACE + 600.0))
            self._cycle(self.submitter.cycle)
            self._cycle(self.poller.cycle)
            self._cycle(self.collector.cycle)
        jobs = self._call(ledger.list_jobs)
        self.stats.update({f"creates_{mode}": n for mode, n in self.provider.creates.items()})
        for job in jobs:
            assert job.state in FINAL_STATES, f"{job.name} never finished: {job.state}"
            remotes, live = self._remotes(job)
            assert len(live) <= 1, f"{job.name}: {len(live)} remote jobs"
            refusals = sum(r.refusal_happened for r in remotes)
            if refusals:
                events = self._call(lambda: ledger.events(job.id))  # noqa: B023 (called now)
                self.stats["token_refusals"] += refusals
                self.stats["requeues"] += sum(
                    (e.from_state, e.to_state) == (JobState.RUNNING, JobState.QUEUED)
                    for e in events
                )
                self.stats[f"refused_then_{job.outcome or job.state.value}"] += 1
            if job.state is JobState.REJECTED:
                assert not live and job.error, job
                self.stats["rejected"] += 1
                continue
            self.stats[f"done_{job.outcome}"] += 1
            if not live:
                assert job.outcome is Outcome.CANCELLED, job
                continue
            assert job.remote_id == live[0].id, job
            self._check_results(job, live[0])
        leftovers = list(self.results.rglob("*.part")) if self.results.exists() else []
        assert not leftovers, leftovers

    def _check_results(self, job: Any, remote: Remote) -> None:
        ledger = self.ledger
        assert ledger is not None
        snap = remote.now
        succeeded, failed = remote.processed(snap.completed)
        if self.dialect.every_request_in_results:  # Anthropic: the unprocessed count as failed
            succeeded, failed = remote.result_ids(snap)
        assert (job.succeeded, job.failed) == (len(succeeded), len(failed)), job
        files = {f.kind: f for f in self._call(lambda: ledger.files(job.id))}
        output_ids, error_ids = remote.result_ids(snap)
        wanted: tuple[tuple[FileKind, str | None, list[str]], ...] = (
            ("output", snap.output_file, output_ids),
            ("error", snap.error_file, error_ids),
        )
        for kind, file_id, ids in wanted:
            if not ids:
                assert kind not in files, (job.name, kind)
                continue
            data = (self.results / job.name / RESULT_NAMES[kind]).read_bytes()
            assert data == self.provider.files[str(file_id)], (job.name, kind)
            assert files[kind].sha256 == hashlib.sha256(data).hexdigest()
            assert [json.loads(line)["custom_id"] for line in data.splitlines()] == ids
        assert job.error is None, job


@pytest.fixture
def _quiet_logs() -> None:
    """Warnings and up only: thousands of steps would otherwise log (and slow) every move."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger at the migration head, copied by each example (migrating each time is slow)."""
    path = tmp_path_factory.mktemp("template") / "ledger.db"
    anyio.run(upgrade, f"sqlite:///{path}")
    return path


def _machine(template: Path, wire: Wire, monkeypatch: pytest.MonkeyPatch) -> type[DaemonMachine]:
    # One upload and one download at a time: a cycle's jobs then reach the provider in ledger
    # order, so an example replays exactly (Hypothesis shrinks it) instead of depending on how
    # asyncio interleaved them. Concurrency itself is exercised by the process suites.
    monkeypatch.setattr(submit_module, "UPLOAD_CONCURRENCY", 1)
    monkeypatch.setattr(collect_module, "DOWNLOAD_CONCURRENCY", 1)

    class Machine(DaemonMachine):
        pass

    Machine.template = template
    Machine.stats = Counter()
    Machine.dialect = DIALECTS[wire.name]
    Machine.model = wire.model
    return Machine


def _run(
    template: Path, profile: settings, name: str, wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    Machine = _machine(template, wire, monkeypatch)
    started = time.monotonic()
    run_state_machine_as_test(Machine, settings=profile)
    figures = {"dialect": wire.name, "examples_max": profile.max_examples, **Machine.stats}
    report(f"{name}-{wire.name}", {**figures, "seconds": round(time.monotonic() - started, 1)})


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("_quiet_logs")
def test_random_interleavings_keep_every_invariant(
    template: Path, wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Intake, admission, provider answers, crashes and restarts in any order: invariants hold."""
    _run(template, CI, "state-machine", wire, monkeypatch)


@pytest.mark.soak
@pytest.mark.timeout(7200)
@pytest.mark.usefixtures("_quiet_logs")
def test_random_interleavings_soak(
    template: Path, wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The long version: 1,000 examples of up to 60 steps."""
    _run(template, SOAK, "state-machine-soak", wire, monkeypatch)


@pytest.mark.usefixtures("_quiet_logs")
def test_found_an_expiry_before_running_is_no_count_mismatch(
    template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machine's first find on OpenAI, replayed as Hypothesis printed it: a one-request
    batch expired while validating has that request in its error file (``batch_expired``,
    not counted as failed), which the collector reported as a count mismatch on the done job.
    """
    state = _machine(template, OPENAI, monkeypatch)()
    state.first_jobs(sizes=[1])
    state.budget_is_respected_at_the_provider()
    state.transitions_are_legal_and_nothing_is_lost()
    state.submit_cycle(create="ok", lag=0.0, listing="ok", upload="ok")
    state.budget_is_respected_at_the_provider()
    state.transitions_are_legal_and_nothing_is_lost()
    state.remote_progress(amount=1, end="expire", index=0)
    state.budget_is_respected_at_the_provider()
    state.transitions_are_legal_and_nothing_is_lost()
    state.teardown()
    assert state.stats["done_expired"] == 1
