"""Running the daemon as a service: health, readiness and Prometheus metrics over HTTP.

- :mod:`orchestrator.service.view`: what the service reads of the daemon (protocols the
  daemon implements, frozen snapshots); the service never imports :mod:`orchestrator.daemon`.
- :mod:`orchestrator.service.health`: whether the loops are alive (pure).
- :mod:`orchestrator.service.metrics`: the Prometheus collector read on each scrape.
- :mod:`orchestrator.service.http`: the HTTP endpoint served inside the daemon's task group.
- :mod:`orchestrator.service.probe`: the container ``HEALTHCHECK`` client (stdlib only).

This package imports nothing on purpose: the probe runs every 30 s in the container and must
start fast, without the daemon's dependencies.
"""

from __future__ import annotations
