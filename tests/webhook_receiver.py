"""A real webhook receiver on 127.0.0.1 that verifies with the ``standardwebhooks`` package.

It runs in a thread of the test process (so it outlives a daemon process the test kills) and
records every request: the headers, the body, and whether the reference library accepted the
signature.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = "whsec_" + base64.b64encode(b"orchestrator-test-secret-32-bytes!").decode()
"""A valid Standard Webhooks secret (34 bytes) for the tests."""


class Receiver:
    """Answers each POST with the next status of ``statuses`` (then ``default``)."""

    def __init__(
        self,
        *,
        secret: str = SECRET,
        statuses: list[int] | None = None,
        default: int = 204,
        delay: float = 0.0,
        log: Path | None = None,
        port: int = 0,
    ) -> None:
        self.webhook = Webhook(secret)
        self.statuses = list(statuses or [])
        self.default = default
        self.delay = delay
        self.log = log
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.monotonic()
                body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = receiver.webhook.verify(body, headers)
                    verified, error = True, None
                except WebhookVerificationError as exc:
                    payload, verified, error = None, False, str(exc)
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else receiver.default
                    record = {
                        "headers": headers,
                        "body": body,
                        "verified": verified,
                        "error": error,
                        "payload": payload,
                        "status": status,
                        "arrived": arrived,
                    }
                    receiver.requests.append(record)
                    if receiver.log is not None:
                        with receiver.log.open("a") as f:
                            f.write(json.dumps(record) + "\n")
                if receiver.delay:
                    time.sleep(receiver.delay)
                record["answered"] = time.monotonic()
                try:
                    self.send_response(status)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender gave up waiting (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def delivered(self) -> list[dict[str, Any]]:
        """The requests answered 2xx."""
        with self.lock:
            return [r for r in self.requests if 200 <= r["status"] < 300]


@contextmanager
def receiving(**options: Any) -> Iterator[Receiver]:
    """A receiver serving in a thread for the block."""
    receiver = Receiver(**options)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(5)
