"""The survival workload (about 12 jobs of varied sizes under a small budget) and its invariants.

:func:`plan_workload` draws the jobs from a seed; :func:`write_project` writes the config and
the inputs; :func:`check_invariants` is what every process-level suite asserts at the end:

- every job is ``done``, its counts add up (succeeded + failed = requests);
- exactly one remote job per ledger job (the emulator counts jobs by client token);
- the emulator never saw more pending requests than the daemon's budget;
- every result file is byte-identical to the emulator's (sha256 of the downloaded file, the
  ledger's record and ``GET /v1/files/{id}/content``), its line count is the ledger's and the
  provider's, and the custom_ids of output + errors are exactly the input's, each once;
- ``job.json`` agrees with the ledger; the results folder holds nothing else (no ``.part``).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs

from orchestrator.config import load_config
from orchestrator.errors import LedgerNotMigrated
from orchestrator.ledger import ResultFile, SqlLedger
from orchestrator.model import Job, JobState, Outcome
from tests.survival.dialects import MISTRAL, Wire
from tests.survival.harness import API_KEY_ENV, EmulatorProcess

STEP_EVENTS = (
    "submit.admitted",
    "submit.uploaded",
    "submit.running",
    "poll.job_ended",
    "collect.downloaded",
)
"""Steps a targeted kill follows: each leaves the ledger between two side effects."""


def emulator_options(seed: int, *, throughput: int = 40) -> list[str]:
    """Jobs that validate in 0.5 s and process ``throughput`` requests a second; 10 % of lines
    fail.

    Creates take 0.3 s (latency on ``jobs.create`` only), which opens a window where the
    daemon has committed its intent (``submitting``) and the create is in flight: kills land
    there too, and recovery must reconcile instead of creating blindly.
    """
    return [
        "--time-scale", "1", "--throughput", str(throughput), "--validation-seconds", "0.5",
        "--cancel-seconds", "1", "--failure-fraction", "0.1", "--seed", str(seed),
        "--embedding-dimensions", "256", "--latency", "0.3", "--fault-routes", "jobs.create",
    ]  # fmt: skip


RESULT_NAMES = {"output": "output.jsonl", "error": "errors.jsonl"}
CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"


@attrs.frozen(kw_only=True)
class JobPlan:
    """One job of the workload: its inputs' request counts, endpoint and priority."""

    name: str
    sizes: tuple[int, ...]
    endpoint: str = CHAT
    priority: int = 0

    @property
    def requests(self) -> int:
        """Requests over all its inputs."""
        return sum(self.sizes)

    def custom_ids(self) -> set[str]:
        """Every custom_id of its inputs."""
        return {
            f"{self.name}-{index}-{i}" for index, size in enumerate(self.sizes) for i in range(size)
        }


def plan_workload(
    rng: random.Random, *, jobs: int = 12, budget: int = 500, prefix: str = "job"
) -> list[JobPlan]:
    """``jobs`` jobs from ``rng``: sizes from 5 % to 80 % of the budget, some with two inputs,
    some embeddings, a few priorities; together several times the budget, so jobs queue."""
    plan = []
    for index in range(jobs):
        total = rng.randint(max(2, budget // 20), budget * 4 // 5)
        if rng.random() < 0.25 and total >= 4:
            first = rng.randint(1, total - 1)
            sizes: tuple[int, ...] = (first, total - first)
        else:
            sizes = (total,)
        plan.append(
            JobPlan(
                name=f"{prefix}-{index:02d}",
                sizes=sizes,
                endpoint=EMBEDDINGS if rng.random() < 0.25 else CHAT,
                priority=rng.choice((0, 0, 0, 1, 5)),
            )
        )
    return plan


def endpoint_on(wire: Wire, endpoint: str) -> str:
    """The endpoint a planned job runs on ``wire`` (a chat job where it has no embeddings)."""
    return endpoint if wire.embeddings and endpoint == EMBEDDINGS else wire.chat_endpoint


def _request(plan: JobPlan, index: int, i: int, wire: Wire) -> dict[str, Any]:
    custom_id = f"{plan.name}-{index}-{i}"
    if plan.endpoint == EMBEDDINGS and wire.embeddings:
        body: dict[str, Any] = {"input": [f"text {i} of {plan.name}"]}
    else:
        body = {
            "max_tokens": 32,
            "messages": [{"role": "user", "content": f"question {i} of {plan.name}"}],
        }
    # Every other job in the dialect's own line form, model included: both forms must run.
    if wire.native_lines and int(plan.name.rsplit("-", 1)[-1]) % 2:
        body["model"] = wire.model
        if wire.name == "anthropic":
            return {"custom_id": custom_id, "params": body}
        return {"custom_id": custom_id, "method": "POST", "url": plan.endpoint, "body": body}
    return {"custom_id": custom_id, "body": body}


def write_inputs(root: Path, plan: JobPlan, wire: Wire = MISTRAL) -> list[str]:
    """Write the job's input files under ``root/data``; return their paths relative to root."""
    paths = []
    for index, size in enumerate(plan.sizes):
        relative = f"data/{plan.name}-{index}.jsonl"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as stream:
            for i in range(size):
                stream.write(json.dumps(_request(plan, index, i, wire)) + "\n")
        paths.append(relative)
    return paths


def job_table(
    plan: JobPlan, inputs: Sequence[str], *, workspace: str = "main", wire: Wire = MISTRAL
) -> str:
    """The ``[[jobs]]`` table of ``plan``."""
    listed = ", ".join(json.dumps(p) for p in inputs)
    return (
        f'[[jobs]]\nname = "{plan.name}"\nworkspace = "{workspace}"\ninputs = [{listed}]\n'
        f'model = "{wire.model}"\nendpoint = "{endpoint_on(wire, plan.endpoint)}"\n'
        f"priority = {plan.priority}\n"
    )


def write_project(
    root: Path,
    plans: Sequence[JobPlan],
    *,
    base_url: str,
    budget: int,
    grace_period: str = "10s",
    reconcile_grace: str = "1s",
    extra_jobs: str = "",
    jobs_dir: bool = False,
    wire: Wire = MISTRAL,
) -> Path:
    """Write ``root/orchestrator.toml`` and the inputs; return the config path.

    The poll schedule is fast (jobs last seconds here) and ``reconcile_grace`` is short: the
    emulator answers in milliseconds and a restarted daemon needs about a second to come up,
    so a create in flight when the daemon died has landed long before recovery lists for it.
    """
    tables = [job_table(plan, write_inputs(root, plan, wire), wire=wire) for plan in plans]
    intake = '[intake]\njobs_dir = "jobs.d"\nrescan_interval = "1s"\n' if jobs_dir else ""
    if jobs_dir:
        (root / "jobs.d").mkdir(exist_ok=True)
    text = (
        '[ledger]\nurl = "sqlite:///var/ledger.db"\n'
        '[results]\ndir = "var/results"\n'
        '[polling]\ninitial = "200ms"\nmax = "1s"\nfactor = 1.5\njitter = 0.1\n'
        f'[daemon]\ngrace_period = "{grace_period}"\nreconcile_grace = "{reconcile_grace}"\n'
        f"{intake}"
        f'[workspaces.main]\n{wire.provider_line()}base_url = "{base_url}"\n'
        f'api_key_env = "{API_KEY_ENV}"\npending_budget = {budget}\n'
        + "\n".join(tables)
        + extra_jobs
    )
    path = root / "orchestrator.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def _read_ledger(url: str) -> tuple[list[Job], dict[int, list[ResultFile]]]:
    async with await SqlLedger.connect(url) as ledger:
        jobs = await ledger.list_jobs()
        files = {job.id: await ledger.files(job.id) for job in jobs}
    return jobs, files


def read_ledger(config: Path) -> tuple[list[Job], dict[int, list[ResultFile]]]:
    """Every job of the config's ledger, and each job's recorded result files."""
    url = load_config(config, environ={}).ledger.url
    return anyio.run(_read_ledger, url)


async def _event_details(url: str) -> Counter[str]:
    details: Counter[str] = Counter()
    async with await SqlLedger.connect(url) as ledger:
        for job in await ledger.list_jobs():
            details.update(e.detail for e in await ledger.events(job.id) if e.detail)
    return details


RECOVERY_DETAILS = {
    "adopted after restart": "remote jobs adopted by recovery (create outcome unknown)",
    "no remote job found: creating": "creates retried by recovery (none had landed)",
    "create outcome unknown": "creates whose outcome was unknown (fault or crash)",
}


def ledger_details(config: Path) -> Counter[str]:
    """How often each recovery step appears in the jobs' histories (see RECOVERY_DETAILS)."""
    url = load_config(config, environ={}).ledger.url
    details = anyio.run(_event_details, url)
    return Counter({RECOVERY_DETAILS[d]: details[d] for d in RECOVERY_DETAILS})


def ledger_states(config: Path) -> Counter[str]:
    """How many jobs are in each state (read while no daemon runs, e.g. right after a kill).

    A daemon killed before its first ``--migrate`` finished leaves no ledger yet: no jobs.
    """
    try:
        jobs, _ = read_ledger(config)
    except LedgerNotMigrated:
        return Counter()
    return Counter(job.state.value for job in jobs)


@attrs.define(kw_only=True)
class Outcomes:
    """What the invariant check found, for the report."""

    jobs: int = 0
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    outcomes: Counter[str] = attrs.field(factory=Counter)
    duplicates: int = 0
    """Remote jobs beyond one per ledger job (must be 0)."""
    lost: int = 0
    """Requests with no line in the output or error file (must be 0)."""
    max_pending: int = 0
    budget: int = 0
    api_calls: int = 0
    faults: Counter[str] = attrs.field(factory=Counter)
    requests_by_route: dict[str, dict[str, int]] = attrs.field(factory=dict)
    """The emulator's responses per route and status, before the checks' own calls."""
    files_uploaded: int = 0
    inputs: int = 0
    result_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        figures = attrs.asdict(self, recurse=False)
        del figures["requests_by_route"]
        return {
            **figures,
            "outcomes": dict(self.outcomes),
            "faults": dict(self.faults),
            "orphan_uploads": self.files_uploaded - self.inputs,
        }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_invariants(
    config: Path,
    emulator: EmulatorProcess,
    plans: Sequence[JobPlan],
    *,
    budget: int,
    wire: Wire = MISTRAL,
) -> Outcomes:
    """Assert every invariant of the module docstring; return the figures.

    Raises:
        AssertionError: an invariant does not hold (the message says which, for which job).
    """
    emulator.set_faults({})  # the checks' own calls must not be faulted
    jobs, files = read_ledger(config)
    by_name = {plan.name: plan for plan in plans}
    assert sorted(job.name for job in jobs) == sorted(by_name), "ledger jobs != planned jobs"
    stats = emulator.stats()
    found = Outcomes(jobs=len(jobs), budget=budget)
    if wire.metadata:
        tokens = stats["jobs_by_orchestrator_job_id"]
        found.duplicates = sum(max(0, n - 1) for n in tokens.values())
        assert found.duplicates == 0, (
            f"duplicate remote jobs: { {t: n for t, n in tokens.items() if n > 1} }"
        )
        assert set(tokens) == {job.client_token for job in jobs}, "remote jobs != ledger jobs"
    else:
        # No token to count by: every batch the emulator created is one job's, once (the
        # results' custom_ids, checked per job below, tie each batch to its job).
        found.duplicates = stats["jobs_created"] - len(jobs)
        assert found.duplicates == 0, f"{stats['jobs_created']} batches for {len(jobs)} jobs"
        remote_ids = [job.remote_id for job in jobs]
        assert len(set(remote_ids)) == len(jobs), f"a batch adopted twice: {remote_ids}"
    assert stats["jobs_created"] == len(jobs), stats["jobs_created"]
    found.max_pending = stats["max_pending"]
    assert found.max_pending <= budget, f"budget exceeded: {found.max_pending} > {budget}"
    assert stats["refused_creates"] == 0, stats["refused_creates"]
    found.requests_by_route = stats["requests"]
    found.api_calls = sum(sum(by_status.values()) for by_status in stats["requests"].values())
    for kinds in stats["faults"].values():
        found.faults.update(kinds)
    found.files_uploaded = stats["files_uploaded"]
    found.inputs = sum(len(plan.sizes) for plan in plans)

    results = load_config(config, environ={}).results.dir
    with emulator.client() as client:
        for job in jobs:
            plan = by_name[job.name]
            _check_job(job, plan, files[job.id], results, client, found, wire)
    _check_tree(results, jobs)
    return found


def _check_job(
    job: Job,
    plan: JobPlan,
    recorded: list[ResultFile],
    results: Path,
    client: Any,
    found: Outcomes,
    wire: Wire,
) -> None:
    where = f"job {job.name}"
    assert job.state is JobState.DONE, f"{where}: {job.state} ({job.error})"
    assert job.request_count == plan.requests, f"{where}: request count"
    assert job.total == plan.requests, f"{where}: total {job.total} != {plan.requests}"
    assert job.succeeded + job.failed == job.total, f"{where}: counts do not add up"
    assert job.error is None, f"{where}: {job.error}"
    expected = Outcome.PARTIAL if job.failed else Outcome.SUCCEEDED
    if job.succeeded == 0:
        expected = Outcome.FAILED
    assert job.outcome is expected, f"{where}: outcome {job.outcome}, expected {expected}"
    found.outcomes[job.outcome.value] += 1
    found.requests += job.total
    found.succeeded += job.succeeded
    found.failed += job.failed

    response = client.get(wire.job_path.format(id=job.remote_id))
    response.raise_for_status()
    remote = response.json()
    if wire.metadata:
        assert remote["metadata"]["orchestrator_job_id"] == job.client_token, where
    streamed = _streamed_results(client, remote) if wire.results_stream else {}
    wanted = {
        "output": (remote[wire.output_field], job.succeeded),
        "error": (remote[wire.error_field], job.failed),
    }
    kinds = {kind for kind, (file_id, count) in wanted.items() if count}
    assert {f.kind for f in recorded} == kinds, f"{where}: recorded {recorded}"
    seen: Counter[str] = Counter()
    for record in recorded:
        file_id, count = wanted[record.kind]
        path = results / job.name / RESULT_NAMES[record.kind]
        assert Path(record.path) == path, f"{where}: {record.path}"
        data = path.read_bytes()
        if wire.results_stream:
            remote_data = streamed.get(record.kind, b"")
        else:
            response = client.get(f"/v1/files/{file_id}/content")
            response.raise_for_status()
            remote_data = response.content
        assert _sha256(data) == record.sha256 == _sha256(remote_data), (
            f"{where}: {record.kind} sha256"
        )
        assert len(data) == record.bytes, f"{where}: {record.kind} bytes"
        lines = data.splitlines()
        assert len(lines) == record.lines == count, f"{where}: {record.kind} lines"
        seen.update(json.loads(line)["custom_id"] for line in lines)
        found.result_bytes += len(data)
    assert all(n == 1 for n in seen.values()), f"{where}: a custom_id appears twice"
    missing = plan.custom_ids() - set(seen)
    found.lost += len(missing)
    assert not missing, f"{where}: {len(missing)} requests have no result line"
    assert set(seen) == plan.custom_ids(), f"{where}: unknown custom_ids in the results"

    summary = json.loads((results / job.name / "job.json").read_text())
    assert summary["state"] == "done" and summary["outcome"] == job.outcome.value, where
    assert summary["remote_id"] == job.remote_id, where
    assert {kind: entry["sha256"] for kind, entry in summary["files"].items()} == {
        f.kind: f.sha256 for f in recorded
    }, f"{where}: job.json files"


def _streamed_results(client: Any, remote: dict[str, Any]) -> dict[str, bytes]:
    """A results stream's lines by kind, in the order sent (how the daemon splits them)."""
    response = client.get(remote["results_url"])
    response.raise_for_status()
    sides: dict[str, list[bytes]] = {"output": [], "error": []}
    for line in response.content.splitlines(keepends=True):
        kind = json.loads(line)["result"]["type"]
        sides["output" if kind == "succeeded" else "error"].append(line)
    return {kind: b"".join(lines) for kind, lines in sides.items()}


def _check_tree(results: Path, jobs: Sequence[Job]) -> None:
    """The results folder holds one folder per job with exactly its files: no .part, no strays."""
    expected = set()
    for job in jobs:
        expected.add(Path(job.name))
        expected.add(Path(job.name) / "job.json")
        if job.succeeded:
            expected.add(Path(job.name) / RESULT_NAMES["output"])
        if job.failed:
            expected.add(Path(job.name) / RESULT_NAMES["error"])
    actual = {path.relative_to(results) for path in results.rglob("*")}
    assert actual == expected, f"stray or missing files: {sorted(map(str, actual ^ expected))}"
