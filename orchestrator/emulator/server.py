"""Serving the emulator over a real socket: ``orchestrator emulate`` and a test helper.

:func:`add_arguments` and :func:`run` are the ``emulate`` subcommand (the CLI module calls them);
:func:`serve_in_thread` runs an emulator on a free local port for the length of a ``with``
block (tests, benchmarks, the demo).

The server is uvicorn with one addition: :class:`EmulatorHttpProtocol` puts each connection's
transport into the ASGI scope, which is what lets injected faults drop a connection without
a response or cut a body short, as a flaky network would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from orchestrator.clock import SystemClock
from orchestrator.emulator.emulator import DIALECTS, Emulator
from orchestrator.emulator.faults import TRANSPORT_KEY
from orchestrator.emulator.settings import ROUTES, EmulatorSettings, FaultSettings
from orchestrator.errors import ConfigError

log = structlog.get_logger(__name__)

ENV_PREFIX = "ORCH_EMULATOR_"


class _WithTransport:
    """Adds the connection's transport to every HTTP scope."""

    def __init__(self, app: ASGIApp, transport: asyncio.Transport) -> None:
        self.app = app
        self.transport = transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            extensions = dict(scope.get("extensions") or {})
            extensions[TRANSPORT_KEY] = self.transport
            scope = {**scope, "extensions": extensions}
        await self.app(scope, receive, send)


class EmulatorHttpProtocol(H11Protocol):
    """uvicorn's h11 protocol, exposing the transport to the app (for dropped connections)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app = _WithTransport(self.config.loaded_app, transport)


class _Server(uvicorn.Server):
    """uvicorn's server, minus re-raising SIGINT/SIGTERM after a graceful stop.

    uvicorn re-sends the signal it caught once it has shut down, which would kill the process
    with the signal (or raise ``KeyboardInterrupt``); ``run`` returns 0 instead.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one).

    Raises:
        ConfigError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}", key="--port") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(emu: Emulator, *, log_level: str = "warning") -> _Server:
    config = uvicorn.Config(
        emu.app,
        http=EmulatorHttpProtocol,
        lifespan="off",
        log_config=None,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=2,
        timeout_keep_alive=30,
    )
    return _Server(config)


@contextlib.contextmanager
def serve_in_thread(emu: Emulator, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``emu`` over a real socket in a background thread; yield its base URL.

    The socket listens before the URL is handed out (connections wait in the backlog until
    the server loop runs), and the server is stopped and joined when the block ends.

    Raises:
        ConfigError: the address cannot be bound.
        RuntimeError: the server thread did not stop within 10 seconds.
    """
    sock = bind(host, port)
    server = _server(emu)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="emulator-server", daemon=True
    )
    thread.start()
    try:
        yield _url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("the emulator server thread did not stop within 10 s")


# The command line ------------------------------------------------------------------------------


def _number(kind: type[float] | type[int], *, low: float | None, high: float | None = None) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low:g}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _option(
    group: argparse._ArgumentGroup,
    flag: str,
    *,
    default: str | None,
    help: str,
    **kwargs: Any,
) -> None:
    """An option whose default can come from ``ORCH_EMULATOR_<NAME>`` (shown in ``--help``)."""
    env = ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()
    value = os.environ.get(env, default)
    shown = "none" if default is None else default
    group.add_argument(flag, default=value, help=f"{help} [env {env}; default {shown}]", **kwargs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``emulate`` options to ``parser``.

    Every option can also be set with an ``ORCH_EMULATOR_*`` environment variable.
    """
    net = parser.add_argument_group("server")
    _option(net, "--host", default="127.0.0.1", help="address to listen on")
    _option(
        net, "--port", default="8000", type=_number(int, low=0, high=65535),
        help="port to listen on (0: any free port, see --ready-file)",
    )  # fmt: skip
    _option(
        net, "--state-dir", default=None,
        help="folder for persistent state (a restart carries on); none: a temporary folder",
    )  # fmt: skip
    _option(
        net, "--ready-file", default=None,
        help="write the base URL to this file once listening",
    )  # fmt: skip
    _option(
        net, "--dialect", default="mistral", choices=sorted(DIALECTS),
        help="the wire to speak (a state folder keeps the dialect that made it)",
    )  # fmt: skip
    env_keys = os.environ.get(ENV_PREFIX + "API_KEYS", "")
    net.add_argument(
        "--api-key",
        action="append",
        default=[k.strip() for k in env_keys.split(",") if k.strip()] or None,
        help=(
            "accept only this bearer key (repeatable) [env ORCH_EMULATOR_API_KEYS, "
            "comma-separated; default: any non-empty key]"
        ),
    )
    sim = parser.add_argument_group("simulation")
    positive = _number(float, low=1e-9)
    _option(
        sim, "--time-scale", default="1.0", type=positive,
        help="simulated seconds per real second",
    )  # fmt: skip
    _option(
        sim, "--throughput", default="1000", type=positive,
        help="requests processed per simulated second, per job",
    )  # fmt: skip
    _option(
        sim, "--validation-seconds", default="5", type=_number(float, low=0),
        help="simulated seconds a job stays QUEUED",
    )  # fmt: skip
    _option(
        sim, "--cancel-seconds", default="2", type=_number(float, low=0),
        help="simulated seconds from CANCELLATION_REQUESTED to CANCELLED",
    )  # fmt: skip
    _option(
        sim, "--failure-fraction", default="0", type=_number(float, low=0, high=1),
        help="fraction of valid requests that fail (to the error file)",
    )  # fmt: skip
    _option(
        sim, "--transient-fraction", default="0", type=_number(float, low=0, high=1),
        help="fraction of valid requests that fail with a 503 on one run (drawn per run)",
    )  # fmt: skip
    _option(
        sim, "--pending-budget", default="1000000", type=_number(int, low=1),
        help="the most pending requests per workspace",
    )  # fmt: skip
    _option(
        sim, "--token-limit", default=None, type=_number(int, low=1),
        help="OpenAI: enqueued prompt tokens allowed per model and workspace (none: no limit)",
    )  # fmt: skip
    _option(
        sim, "--finalizing-seconds", default="2", type=_number(float, low=0),
        help="OpenAI: simulated seconds a batch stays finalizing",
    )  # fmt: skip
    _option(sim, "--seed", default="0", type=int, help="seed of the synthetic results")
    _option(
        sim, "--embedding-dimensions", default="1024", type=_number(int, low=1),
        help="length of synthetic embedding vectors",
    )  # fmt: skip
    faults = parser.add_argument_group("faults")
    rate = _number(float, low=0, high=1)
    _option(faults, "--rate-limit-rate", default="0", type=rate, help="fraction answered 429")
    _option(
        faults, "--retry-after", default="1", type=_number(float, low=0),
        help="Retry-After seconds of a 429",
    )  # fmt: skip
    _option(
        faults, "--server-error-rate", default="0", type=rate,
        help="fraction answered 500/502/503",
    )  # fmt: skip
    _option(
        faults, "--latency", default="0", type=_number(float, low=0),
        help="seconds added to each faulted request",
    )  # fmt: skip
    _option(
        faults, "--drop-rate", default="0", type=rate,
        help="fraction of connections closed without a response",
    )  # fmt: skip
    _option(
        faults, "--truncate-rate", default="0", type=rate,
        help="fraction of successful bodies cut short",
    )  # fmt: skip
    _option(faults, "--fault-seed", default="0", type=int, help="seed of the fault sequence")
    _option(
        faults, "--fault-routes", default=None,
        help=f"comma-separated routes that get faults (default all): {', '.join(sorted(ROUTES))}",
    )  # fmt: skip


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    """The settings the ``emulate`` options describe.

    Raises:
        ConfigError: the options are inconsistent (e.g. fault rates adding up to more than 1).
    """
    try:
        fault_settings = FaultSettings(
            rate_limit_rate=args.rate_limit_rate,
            retry_after=args.retry_after,
            server_error_rate=args.server_error_rate,
            latency=args.latency,
            drop_rate=args.drop_rate,
            truncate_rate=args.truncate_rate,
            seed=args.fault_seed,
            routes=args.fault_routes or None,
        )
        return EmulatorSettings(
            time_scale=args.time_scale,
            throughput=args.throughput,
            validation_seconds=args.validation_seconds,
            cancel_seconds=args.cancel_seconds,
            failure_fraction=args.failure_fraction,
            transient_fraction=args.transient_fraction,
            pending_budget=args.pending_budget,
            seed=args.seed,
            api_keys=args.api_key or None,
            embedding_dimensions=args.embedding_dimensions,
            faults=fault_settings,
            token_limit=args.token_limit,
            finalizing_seconds=args.finalizing_seconds,
        )
    except ValueError as exc:
        raise ConfigError(str(exc), key="emulate") from exc


def _write_ready_file(path: Path, url: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(url + "\n", encoding="utf-8")
    tmp.replace(path)


def run(args: argparse.Namespace) -> int:
    """Serve the emulator until SIGINT or SIGTERM; return the exit code (0).

    Raises:
        ConfigError: bad options, or the address cannot be bound.
    """
    settings = settings_from_args(args)
    try:
        emulator = Emulator(
            settings, clock=SystemClock(), state_dir=args.state_dir, dialect=args.dialect
        )
    except ValueError as exc:
        raise ConfigError(str(exc), key="--dialect") from exc
    try:
        sock = bind(args.host, args.port)
    except ConfigError:
        emulator.close()
        raise
    try:
        with emulator as emu:
            url = _url(sock)
            log.info(
                "emulator.listening",
                url=url,
                dialect=args.dialect,
                state_dir=str(emu.state_dir),
                persistent=args.state_dir is not None,
                time_scale=settings.time_scale,
                throughput=settings.throughput,
            )
            if args.ready_file:
                _write_ready_file(Path(args.ready_file), url)
            _server(emu).run(sockets=[sock])
            log.info("emulator.stopped", url=url)
    finally:
        sock.close()
    return 0
