"""The container ``HEALTHCHECK``: ``python3 -m orchestrator.service.probe [URL]``.

Asks the daemon's ``/healthz`` and exits 0 when it answers 200, 1 otherwise, printing one line
(Docker keeps it in ``docker inspect``'s health log). Standard library only (slim images have no
curl) and no orchestrator imports, so it starts in a few tens of milliseconds.

Without a URL it probes the address in ``ORCH_HTTP_LISTEN`` (what the image sets), mapping a
wildcard host (``0.0.0.0``, ``::``) to the loopback address.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

DEFAULT_LISTEN = "127.0.0.1:9464"
TIMEOUT = 4.0
"""Seconds; below the image's ``HEALTHCHECK --timeout`` so the probe reports why it failed."""
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 (mapped away)


def health_url(listen: str) -> str:
    """The ``/healthz`` URL for a ``HOST:PORT`` listen address (IPv6 hosts in brackets).

    Raises:
        ValueError: ``listen`` is not ``HOST:PORT``.
    """
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9464, got {listen!r}")
    host = host.strip("[]")
    host = _WILDCARDS.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/healthz"


def probe(url: str, timeout: float = TIMEOUT) -> tuple[bool, str]:
    """GET ``url``; return (healthy, one line saying why)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http only)
            body = response.read(65536)
            return True, f"healthy: {_status(body)}"
    except urllib.error.HTTPError as exc:
        body = exc.read(65536)
        exc.close()
        return False, f"unhealthy: HTTP {exc.code} from {url}: {_stale(body)}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"unhealthy: no answer from {url}: {reason}"


def _status(body: bytes) -> str:
    try:
        return str(json.loads(body).get("status", "?"))
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def _stale(body: bytes) -> str:
    """The stalled loops named in a 503 body, or its start."""
    try:
        loops = json.loads(body)["loops"]
        stale = [name for name, loop in loops.items() if not loop["fresh"]]
        return "stalled loops: " + ", ".join(stale) if stale else "no stalled loop reported"
    except (ValueError, KeyError, TypeError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def main(argv: Sequence[str] | None = None) -> int:
    """Probe once; return the exit code (0 healthy, 1 not, 2 bad arguments)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        sys.stderr.write("usage: python3 -m orchestrator.service.probe [HEALTHZ_URL]\n")
        return 2
    try:
        url = args[0] if args else health_url(os.environ.get("ORCH_HTTP_LISTEN") or DEFAULT_LISTEN)
    except ValueError as exc:
        sys.stderr.write(f"probe: ORCH_HTTP_LISTEN: {exc}\n")
        return 2
    healthy, line = probe(url)
    sys.stdout.write(line + "\n")
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
