"""Delivery: the outbox's events to every webhook and hook, at least once.

One task per endpoint, so a slow or dead receiver only ever delays its own deliveries; state
changes never wait for any (the ledger wrote the events in their transaction, see
:mod:`orchestrator.ledger.outbox`). Each task claims its due deliveries (a few at a time, for
one attempt each), attempts them, and records the end: delivered (a 2xx answer, a hook that
exited 0), retried later (exponential backoff with jitter from the endpoint's ``backoff``,
:func:`orchestrator.webhooks.next_attempt`), or dead once ``max_age`` has passed.

The body of an event is made once and frozen in the ledger before its first attempt, so every
attempt and redelivery sends the same ``webhook-id`` and bytes; ``job.done`` carries the job's
``job.json`` fields (the file the daemon wrote beside the results, or the same summary made
from the ledger for a job that has no results folder, such as one cancelled in the queue).

Hooks run without a shell: the program and its arguments, with these placeholders replaced in
each argument: ``{job_json}`` (the event's ``data`` as JSON: for ``job.done`` the job.json
fields), ``{event}``, ``{job}`` (the job's name), ``{webhook_id}``. The whole body is written
to its stdin too. The environment is the daemon's without the variables that hold API keys
and webhook secrets, plus ``ORCH_EVENT``, ``ORCH_JOB`` and ``ORCH_WEBHOOK_ID``.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx
import structlog

from orchestrator import __version__
from orchestrator.config import Config, HookConfig, WebhookConfig
from orchestrator.daemon.context import Runtime
from orchestrator.daemon.layout import job_summary, result_dir
from orchestrator.daemon.waker import Waker
from orchestrator.ledger.outbox import PENDING, Delivery
from orchestrator.logging import redactor
from orchestrator.service.view import DeliveryStats, Durations
from orchestrator.webhooks import JOB_DONE, event_body, headers, next_attempt

log = structlog.get_logger(__name__)

CONCURRENCY = 4
"""Attempts in flight per endpoint at once."""
IDLE_WAIT = 15.0
"""Longest sleep of an endpoint's task: it also sees redeliveries and other replicas' events."""
LEASE_MARGIN = 30.0
"""A claim outlives its attempt's timeout by this much (the ledger writes around it)."""
OUTPUT_TAIL = 2000
"""Characters of a hook's output (or of a receiver's answer) kept with the delivery."""
ERROR_PAUSE = 5.0
"""Seconds an endpoint's task waits after a ledger error before it tries again."""


@attrs.frozen(kw_only=True)
class Outcome:
    """How one attempt ended."""

    delivered: bool
    status: str
    """``HTTP 204``, ``exit 0``, ``timeout``, ``connection refused``, ``exit 3`` ..."""
    error: str | None = None
    output: str | None = None


class EndpointCounters:
    """What one endpoint's task counted (the metrics read a snapshot)."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.dead = 0
        self.latency = Durations()

    def snapshot(self) -> DeliveryStats:
        return DeliveryStats(
            delivered=self.delivered,
            failed=self.failed,
            dead=self.dead,
            latency=self.latency.snapshot(),
        )


class Sender(abc.ABC):
    """One endpoint: its settings, its way of attempting a delivery, its counters."""

    def __init__(self, config: WebhookConfig | HookConfig) -> None:
        self.config = config
        self.endpoint = config.endpoint
        self.counters = EndpointCounters()
        self.waker: Waker | None = None

    @abc.abstractmethod
    async def attempt(self, delivery: Delivery, body: str, now: float) -> Outcome:
        """Deliver ``body`` once, at ``now`` (epoch seconds); never raises for the endpoint's
        failures (they are the outcome)."""

    async def aclose(self) -> None:  # noqa: B027 (most senders hold nothing)
        """Release what the sender holds (connections)."""


class WebhookSender(Sender):
    """A Standard Webhooks POST, signed with the endpoint's secret."""

    def __init__(
        self,
        config: WebhookConfig,
        key: bytes,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(config)
        self._url = config.url
        self._key = key
        self._timeout = config.timeout
        # Its own pool: one receiver's stuck connections are never another's problem.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout),
            follow_redirects=False,  # a redirect is not a delivery (Standard Webhooks)
            transport=transport,
            headers={"user-agent": f"orchestrator/{__version__}"},
        )

    async def attempt(self, delivery: Delivery, body: str, now: float) -> Outcome:
        sent = headers(self._key, delivery.webhook_id, int(now), body)
        try:
            # httpx's timeout is per read; this bounds the whole exchange (a dribbling server).
            with anyio.fail_after(self._timeout):
                response = await self._client.post(self._url, content=body.encode(), headers=sent)
        except (TimeoutError, httpx.TimeoutException):
            return Outcome(
                delivered=False, status="timeout", error=f"no answer within {self._timeout:g}s"
            )
        except httpx.ConnectError as exc:
            return Outcome(
                delivered=False, status="connection refused", error=_one_line(exc) or "refused"
            )
        except httpx.HTTPError as exc:
            return Outcome(
                delivered=False, status="network error", error=f"{type(exc).__name__}: {exc}"
            )
        answer = response.text[:OUTPUT_TAIL] or None
        status = f"HTTP {response.status_code}"
        if response.is_success:
            return Outcome(delivered=True, status=status, output=answer)
        return Outcome(
            delivered=False,
            status=status,
            error=f"the receiver answered {response.status_code} {response.reason_phrase}",
            output=answer,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


class HookSender(Sender):
    """A program run for each event, without a shell, within the endpoint's timeout."""

    def __init__(self, config: HookConfig, environ: Mapping[str, str]) -> None:
        super().__init__(config)
        self._command = config.command
        self._timeout = config.timeout
        self._environ = dict(environ)

    async def attempt(self, delivery: Delivery, body: str, now: float) -> Outcome:
        data = json.dumps(json.loads(body)["data"], separators=(",", ":"), ensure_ascii=False)
        values = {
            "{job_json}": data,
            "{event}": delivery.type,
            "{job}": delivery.job_name,
            "{webhook_id}": delivery.webhook_id,
        }
        argv = [_expand(arg, values) for arg in self._command]
        env = self._environ | {
            "ORCH_EVENT": delivery.type,
            "ORCH_JOB": delivery.job_name,
            "ORCH_WEBHOOK_ID": delivery.webhook_id,
        }
        output = bytearray()
        try:
            process = await anyio.open_process(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own group: a timeout kills its children too
            )
        except OSError as exc:
            return Outcome(delivered=False, status="not started", error=f"{exc}")
        async with process:
            try:
                with anyio.fail_after(self._timeout):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(_feed, process, body.encode())
                        tg.start_soon(_drain, process, output)
                    code = await process.wait()
            except TimeoutError:
                _kill_group(process.pid)
                with anyio.CancelScope(shield=True):
                    await process.wait()
                return Outcome(
                    delivered=False,
                    status="timeout",
                    error=f"still running after {self._timeout:g}s: killed",
                    output=_tail(output),
                )
        tail = _tail(output)
        if code == 0:
            return Outcome(delivered=True, status="exit 0", output=tail)
        reason = f"signal {-code}" if code < 0 else f"exit {code}"
        return Outcome(
            delivered=False, status=reason, error=f"the hook ended with {reason}", output=tail
        )


def _expand(argument: str, values: Mapping[str, str]) -> str:
    for placeholder, value in values.items():
        argument = argument.replace(placeholder, value)
    return argument


async def _feed(process: anyio.abc.Process, body: bytes) -> None:
    stdin = process.stdin
    if stdin is None:
        return
    try:
        await stdin.send(body)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass  # a hook need not read its stdin
    finally:
        await stdin.aclose()


async def _drain(process: anyio.abc.Process, output: bytearray) -> None:
    if process.stdout is None:
        return
    async for chunk in process.stdout:
        output.extend(chunk)
        del output[: max(0, len(output) - 4 * OUTPUT_TAIL)]


def _tail(output: bytearray) -> str | None:
    text = output.decode("utf-8", errors="replace")[-OUTPUT_TAIL:]
    return text or None


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def build_senders(
    config: Config,
    environ: Mapping[str, str],
    *,
    wrap: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
) -> list[Sender]:
    """One sender per ``[[webhooks]]`` and ``[[hooks]]`` table, the secrets read now.

    Every secret value (and every workspace's API key variable) is handed to the log
    redactor, and none of those variables reaches a hook's environment. ``wrap`` is the
    daemon's transport seam, where tests inject crashes.

    Raises:
        ConfigError: a secret variable is unset or not a ``whsec_`` secret, or a hook's
            program is not an executable file (named by file and key).
    """
    keys = {webhook.url: webhook.secret(environ) for webhook in config.webhooks}
    for hook in config.hooks:
        hook.check_program()
    hidden = {webhook.secret_env for webhook in config.webhooks} | {
        ws.api_key_env for ws in config.workspaces.values() if ws.api_key_env
    }
    redactor.add(environ[name] for name in hidden if environ.get(name))
    environment = {name: value for name, value in environ.items() if name not in hidden}
    senders: list[Sender] = [
        WebhookSender(
            w, keys[w.url], transport=None if wrap is None else wrap(httpx.AsyncHTTPTransport())
        )
        for w in config.webhooks
    ]
    senders.extend(HookSender(hook, environment) for hook in config.hooks)
    return senders


class Deliverer:
    """Every endpoint's delivery task (run it in the daemon's task group)."""

    def __init__(self, runtime: Runtime, senders: Sequence[Sender]) -> None:
        self._rt = runtime
        self.senders = list(senders)
        for sender in self.senders:
            sender.waker = Waker(runtime.clock)
            runtime.wakers.append(sender.waker)  # a stop wakes the endpoint tasks at once

    @property
    def endpoints(self) -> list[str]:
        return [sender.endpoint for sender in self.senders]

    def wake(self) -> None:
        """New events (or a redelivery): every endpoint looks at once."""
        for sender in self.senders:
            if sender.waker is not None:
                sender.waker.wake()

    def stats(self) -> dict[str, DeliveryStats]:
        return {sender.endpoint: sender.counters.snapshot() for sender in self.senders}

    async def pending(self) -> int:
        """Pending deliveries to the configured endpoints (in the whole ledger)."""
        counts = await self._rt.ledger.delivery_counts()
        wanted = set(self.endpoints)
        return sum(
            n for (endpoint, state), n in counts.items() if endpoint in wanted and state == PENDING
        )

    async def run(self) -> None:
        """Run one task per endpoint until the daemon stops."""
        async with anyio.create_task_group() as tg:
            for sender in self.senders:
                tg.start_soon(self._endpoint_loop, sender)

    async def _endpoint_loop(self, sender: Sender) -> None:
        rt, waker = self._rt, sender.waker
        assert waker is not None
        lease = sender.config.timeout + LEASE_MARGIN
        while not rt.stopping.is_set():
            try:
                claimed = await rt.ledger.claim_deliveries(
                    sender.endpoint, limit=CONCURRENCY, lease=lease
                )
                if claimed:
                    async with anyio.create_task_group() as tg:
                        for delivery in claimed:
                            tg.start_soon(self._deliver, sender, delivery)
                    rt.activity.wake()  # the idle watcher counts pending deliveries
                    continue
                due = await rt.ledger.next_delivery_at(sender.endpoint)
            except Exception as exc:  # a ledger outage must not end delivery for good
                log.warning(
                    "deliver.ledger_failed",
                    endpoint=sender.endpoint,
                    error=str(exc) or type(exc).__name__,
                )
                await waker.wait(ERROR_PAUSE)
                continue
            wait = IDLE_WAIT if due is None else min(IDLE_WAIT, max(0.0, due - rt.clock.now()))
            await waker.wait(wait)

    async def _deliver(self, sender: Sender, delivery: Delivery) -> None:
        """One attempt of ``delivery``, and its record."""
        rt, config = self._rt, sender.config
        structlog.contextvars.bind_contextvars(
            job=delivery.job_name, webhook_id=delivery.webhook_id, endpoint=sender.endpoint
        )
        try:
            body = delivery.body
            if body is None:
                body = await rt.ledger.freeze_body(delivery.event_id, await self._build(delivery))
            started = rt.clock.now()
            outcome = await sender.attempt(delivery, body, started)
            sender.counters.latency.observe(rt.clock.now() - started)
            retry_at = None
            if not outcome.delivered:
                retry_at = next_attempt(
                    attempts=delivery.attempts + 1,
                    since=delivery.since,
                    now=rt.clock.now(),
                    backoff=config.backoff,
                    max_age=config.max_age,
                    draw=rt.rng.random(),
                )
            held = await rt.ledger.finish_attempt(
                delivery.id,
                status=outcome.status,
                error=outcome.error,
                output=outcome.output,
                delivered=outcome.delivered,
                next_attempt_at=retry_at,
            )
        except Exception as exc:  # the ledger, or a body that cannot be made: try next pass
            log.warning("deliver.attempt_failed", delivery=delivery.id, error=str(exc))
            return
        finally:
            structlog.contextvars.unbind_contextvars("job", "webhook_id", "endpoint")
        fields: dict[str, Any] = {
            "delivery": delivery.id,
            "type": delivery.type,
            "job": delivery.job_name,
            "endpoint": sender.endpoint,
            "status": outcome.status,
            "attempt": delivery.attempts + 1,
        }
        if not held:
            log.warning("deliver.claim_lost", **fields)
        elif outcome.delivered:
            sender.counters.delivered += 1
            log.info("deliver.delivered", **fields)
        elif retry_at is None:
            sender.counters.failed += 1
            sender.counters.dead += 1
            log.error("deliver.dead", error=outcome.error, **fields)
        else:
            sender.counters.failed += 1
            log.warning("deliver.retry_later", error=outcome.error, retry_at=retry_at, **fields)

    async def _build(self, delivery: Delivery) -> str:
        """The body of an event whose data the job row did not hold (``job.done``)."""
        if delivery.type != JOB_DONE:
            raise ValueError(f"event {delivery.type} of delivery {delivery.id} has no body")
        ledger = self._rt.ledger
        job = await ledger.get(delivery.job_id)
        folder = result_dir(self._rt.results_dir, job)
        data = await anyio.to_thread.run_sync(_read_summary, folder / "job.json", job.name)
        if data is None:
            data = job_summary(job, await ledger.files(job.id))
        return event_body(delivery.type, delivery.occurred_at, data)


def _read_summary(path: Path, name: str) -> dict[str, Any] | None:
    """The job.json the daemon wrote for job ``name`` when it finished, or None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("name") != name or data.get("state") != "done":
        return None
    return data
