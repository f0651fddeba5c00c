"""The one error tree of the orchestrator.

::

    OrchestratorError
    ├── ConfigError                  bad config file, key or value (exit code 2)
    ├── InputError                   a job's JSONL input is invalid (the job is rejected)
    ├── LedgerError
    │   ├── JobNotFound              (also a LookupError)
    │   ├── StaleTransition          a compare-and-set lost: the job was not in the expected state
    │   │   └── LeaseLost            a fenced write by a replica that no longer holds the lease
    │   ├── IllegalTransition        the transition table forbids the move
    │   ├── DefinitionConflict       same job name, different definition
    │   ├── LedgerLocked             another daemon holds this SQLite ledger
    │   ├── ReplicaIdTaken           another live process runs with this replica id
    │   ├── LedgerNotMigrated        the schema is not at the migration head
    │   └── CopyRefused              `ledger copy` must not start (neither ledger is changed)
    ├── ProviderError
    │   ├── TransientProviderError   network faults, 429, 5xx: retried with backoff
    │   │   └── RateLimited          429, carries ``retry_after`` seconds
    │   └── PermanentProviderError   any other 4xx: recorded with the provider's message
    │       └── CapacityRefused      the provider refused a create for its pending budget
    ├── DownloadIntegrityError       a downloaded file is short or does not match its length
    ├── BudgetExhausted              a job can never fit the workspace budget
    ├── TokenBudgetExhausted         a job can never fit its model's token budget
    └── SpendLimitExceeded           a job's cost estimate can never fit the monthly spend limit

Constructors take the ids and facts, and format the message themselves.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Root of every error the orchestrator raises on purpose."""


class ConfigError(OrchestratorError):
    """A configuration problem, named by file and dotted key."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class InputError(OrchestratorError):
    """A job's input file failed validation; ``problems`` lists ``file:line: what`` entries."""

    def __init__(self, summary: str, problems: tuple[str, ...] = ()) -> None:
        self.summary = summary
        self.problems = problems
        lines = [summary, *(f"  {p}" for p in problems)]
        super().__init__("\n".join(lines))


class LedgerError(OrchestratorError):
    """Something the ledger refused or could not do."""


class JobNotFound(LedgerError, LookupError):
    """No job with that name or id."""

    def __init__(self, ident: str | int) -> None:
        self.ident = ident
        super().__init__(f"no job {ident!r} in the ledger")


class StaleTransition(LedgerError):
    """A compare-and-set transition found the job in another state than expected."""

    def __init__(self, job_id: int, expected: str, target: str) -> None:
        self.job_id = job_id
        self.expected = expected
        self.target = target
        super().__init__(
            f"job {job_id}: cannot move {expected} -> {target}: "
            "it is no longer in that state (another worker moved it)"
        )


class LeaseLost(StaleTransition):
    """A fenced write about a job whose lease another replica holds now (nothing changed)."""

    def __init__(self, job_id: int, expected: str, target: str, owner: str) -> None:
        super().__init__(job_id, expected, target)
        self.owner = owner
        self.args = (
            f"job {job_id}: cannot move {expected} -> {target}: replica {owner!r} no longer "
            "holds its lease (another replica carries it on)",
        )


class IllegalTransition(LedgerError):
    """The transition table does not allow this move."""

    def __init__(self, source: str, target: str) -> None:
        self.source = source
        self.target = target
        super().__init__(f"illegal job transition {source} -> {target}")


class DefinitionConflict(LedgerError):
    """A job name is already taken by a different definition."""

    def __init__(self, name: str, differences: tuple[str, ...]) -> None:
        self.name = name
        self.differences = differences
        super().__init__(
            f"job {name!r} already exists with a different definition "
            f"({', '.join(differences)} changed); the existing job is untouched. "
            "Give the new definition another name: a job keeps its name for good "
            "(cancelling stops it but does not free the name)."
        )


class LedgerLocked(LedgerError):
    """Another daemon already runs on this SQLite ledger."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"another orchestrator daemon holds the ledger {path}: run one daemon per ledger "
            "(several replicas need a PostgreSQL ledger)"
        )


class ReplicaIdTaken(LedgerError):
    """Another live daemon on this PostgreSQL ledger runs with the same ``replica_id``."""

    def __init__(self, replica_id: str, url: str) -> None:
        self.replica_id = replica_id
        super().__init__(
            f"replica id {replica_id!r} is already in use on the ledger {url} by another "
            "running daemon: give each replica its own [daemon] replica_id (or leave it unset)"
        )


class LedgerNotMigrated(LedgerError):
    """The ledger's schema revision is not the migration head."""

    def __init__(self, url: str, current: str | None, head: str) -> None:
        self.current = current
        self.head = head
        super().__init__(
            f"ledger {url} is at schema revision {current or 'none'}, expected {head}: "
            "run `orchestrator migrate --config FILE` (or `run --migrate`)"
        )


class CopyRefused(LedgerError):
    """``ledger copy`` cannot or must not start; neither ledger was changed (a usage error)."""


class ProviderError(OrchestratorError):
    """A provider call failed."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class TransientProviderError(ProviderError):
    """Worth retrying: network fault, timeout, 429 or 5xx."""


class RateLimited(TransientProviderError):
    """HTTP 429; ``retry_after`` is the server's hint in seconds, if it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, status_code=429)


class PermanentProviderError(ProviderError):
    """The provider refused the call for good (4xx other than 429)."""


class CapacityRefused(PermanentProviderError):
    """The provider refused a create because the workspace's pending budget is full.

    Not a failure of the job: it goes back to ``queued`` with backoff.
    """


class ForeignResults(PermanentProviderError):
    """The results of a remote job adopted without metadata are not its job's.

    A dialect with no batch metadata (Anthropic) adopts a batch after a lost create by its
    size and creation time; the results' custom_id set then proves it (or not).
    """

    def __init__(self, message: str, *, remote_id: str) -> None:
        super().__init__(message)
        self.remote_id = remote_id


class DownloadIntegrityError(OrchestratorError):
    """A downloaded body is shorter or longer than announced, or fails verification."""


class BudgetExhausted(OrchestratorError):
    """A job needs more pending requests than the workspace budget can ever hold."""

    def __init__(self, name: str, requests: int, budget: int) -> None:
        self.name = name
        self.requests = requests
        self.budget = budget
        super().__init__(
            f"job {name!r} has {requests:,} requests but the workspace budget is {budget:,} "
            "pending requests: split the input into files of at most the budget, "
            "or raise pending_budget if the provider allows it"
        )


class TokenBudgetExhausted(OrchestratorError):
    """A job needs more prompt tokens than its model's token budget can ever hold."""

    def __init__(self, name: str, model: str, tokens: int, budget: int) -> None:
        self.name = name
        self.model = model
        self.tokens = tokens
        self.budget = budget
        super().__init__(
            f"job {name!r} is estimated at {tokens:,} prompt tokens but the workspace's token "
            f"budget for {model} is {budget:,}: it can never be admitted; split it (a smaller "
            "split_requests) or raise token_budget (or token_budgets) if the provider allows it",
        )


class SpendLimitExceeded(OrchestratorError):
    """A job's cost estimate is more than its workspace's whole monthly spend limit, or its
    model has no price (so under a spend limit it can never be estimated)."""

    def __init__(
        self, name: str, model: str, estimate: float | None, limit: float, currency: str | None
    ) -> None:
        self.name = name
        self.model = model
        self.estimate = estimate
        self.limit = limit
        unit = f" {currency}" if currency else ""
        if estimate is None:
            message = (
                f"job {name!r}: its workspace has a spend_limit of {limit:.4f}{unit} a month but "
                f"model {model!r} has no price, so its cost cannot be estimated: add "
                f'[pricing.models."{model}"] with input and output prices per 1,000,000 tokens'
            )
        else:
            message = (
                f"job {name!r} is estimated to cost {estimate:.4f}{unit} but its workspace's "
                f"spend_limit is {limit:.4f}{unit} a month: it can never be admitted; split it "
                "(split_requests), cap its requests' output (max_tokens), or raise spend_limit"
            )
        super().__init__(message)
