"""Who may read and write through the HTTP API: the bearer token and the listen address.

- Writes (``POST /api/*``) need ``Authorization: Bearer <token>``, where the token is the value
  of the variable ``[http] token_env`` names. With no token configured every write answers 403:
  an endpoint nobody secured must not take orders.
- Reads (the dashboard's data, ``GET /api/*``) are open on a loopback address (only this
  machine can connect); on any other address they need the token too, unless
  ``[http] allow_anonymous_reads = true``.
- ``/healthz``, ``/readyz`` and ``/metrics`` are always open (probes and Prometheus), and so
  are the dashboard's static files, which hold no data.

Tokens are compared with :func:`hmac.compare_digest` (constant time), so response times do not
leak how much of a guess was right.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Literal

import attrs

Need = Literal["open", "read", "write"]
"""What a route needs: nothing, read access or write access."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


@attrs.frozen(kw_only=True)
class Denied:
    """Why a request was refused: the HTTP status and a readable message."""

    status: int
    error: str


@attrs.frozen(kw_only=True)
class Access:
    """The API's access policy for one endpoint."""

    token: str | None = attrs.field(repr=False)
    """The bearer token (None: none configured)."""
    token_env: str | None = None
    """The variable the token comes from (named in messages, never its value)."""
    reads_need_token: bool = False
    """True on a non-loopback address without ``allow_anonymous_reads``."""

    @classmethod
    def of(
        cls, *, token: str | None, token_env: str | None, host: str, allow_anonymous_reads: bool
    ) -> Access:
        """The policy for an endpoint listening on ``host``."""
        return cls(
            token=token,
            token_env=token_env,
            reads_need_token=not is_loopback(host) and not allow_anonymous_reads,
        )

    def check(self, need: Need, authorization: str | None) -> Denied | None:
        """None when a request with this ``Authorization`` header may do ``need``."""
        if need == "open" or (need == "read" and not self.reads_need_token):
            return None
        if self.token is None:
            where = (
                f"the variable {self.token_env} is not set"
                if self.token_env
                else "[http] token_env is not configured"
            )
            what = "writes are" if need == "write" else "reads on this address are"
            return Denied(
                status=403,
                error=f"{what} disabled: no API token is configured ({where}); set "
                "[http] token_env and the variable it names, then restart the daemon",
            )
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return Denied(
                status=401, error="this needs an API token: send Authorization: Bearer <token>"
            )
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return Denied(status=401, error="the API token is not valid")
        return None
