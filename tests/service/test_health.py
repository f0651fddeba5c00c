"""Liveness from heartbeats, as a table of situations (pure functions)."""

from __future__ import annotations

import pytest

from orchestrator.service.health import STALL_ALLOWANCE, evaluate, loop_limits

WAITS = {"submit": 60.0, "poll": 600.0, "collect": 60.0}
LIMITS = loop_limits(["main"], idle_waits=WAITS, allowance=100.0)
START = 1_000.0


def test_limits_are_the_longest_sleep_plus_the_allowance() -> None:
    """One limit per loop kind and workspace: its idle wait plus the allowance."""
    limits = loop_limits(["a", "b"], idle_waits=WAITS, allowance=100.0)
    assert limits == {
        "submit:a": 160.0,
        "poll:a": 700.0,
        "collect:a": 160.0,
        "submit:b": 160.0,
        "poll:b": 700.0,
        "collect:b": 160.0,
    }
    assert loop_limits(["a"], idle_waits=WAITS)["poll:a"] == 600.0 + STALL_ALLOWANCE


@pytest.mark.parametrize(
    ("idle_waits", "allowance", "message"),
    [
        ({"submit": 1.0, "poll": 1.0}, 0.0, "lacks the loop kinds ['collect']"),
        ({**WAITS, "poll": -1.0}, 0.0, "must be >= 0"),
        (WAITS, -5.0, "must be >= 0"),
    ],
)
def test_bad_limits_are_refused(
    idle_waits: dict[str, float], allowance: float, message: str
) -> None:
    """Missing kinds and negative numbers are programming errors, said plainly."""
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        loop_limits(["main"], idle_waits=idle_waits, allowance=allowance)


@pytest.mark.parametrize(
    ("heartbeats", "now", "stopping", "status", "stale"),
    [
        # Just started, nothing cycled yet: ages count from the start, all fresh.
        ({}, START + 10, False, "ok", set()),
        # Every loop cycled recently.
        ({"submit:main": START + 50, "poll:main": START + 50, "collect:main": START + 50},
         START + 100, False, "ok", set()),
        # Exactly at the limit is still fresh.
        ({"submit:main": START, "poll:main": START, "collect:main": START},
         START + 160, False, "ok", set()),
        # Past the limit: the two short loops are stale, the poller is not.
        ({"submit:main": START, "poll:main": START, "collect:main": START},
         START + 161, False, "stale", {"submit:main", "collect:main"}),
        # A loop that never cycled since the start is stale once its limit passes.
        ({"submit:main": START + 600, "collect:main": START + 600},
         START + 701, False, "stale", {"poll:main"}),
        # Draining: quiet loops are expected; alive, not stale.
        ({"submit:main": START}, START + 10_000, True, "stopping",
         {"submit:main", "poll:main", "collect:main"}),
        # An unexpected loop is judged with the default limit.
        ({"submit:main": START, "poll:main": START, "collect:main": START, "intake": START},
         START + 150, False, "stale", {"intake"}),
    ],
)  # fmt: skip
def test_evaluate(
    heartbeats: dict[str, float], now: float, stopping: bool, status: str, stale: set[str]
) -> None:
    """Status and the set of stalled loops, for each situation."""
    report = evaluate(
        heartbeats, LIMITS, now=now, started_at=START, stopping=stopping, default_limit=120.0
    )
    assert report.status == status
    assert report.healthy is (status != "stale")
    assert {loop.name for loop in report.loops if not loop.fresh} == stale


def test_report_as_json() -> None:
    """The body of /healthz: status, and per loop age, limit, freshness, whether it cycled."""
    report = evaluate(
        {"poll:main": START + 1.23456},
        LIMITS,
        now=START + 10,
        started_at=START,
        stopping=False,
        default_limit=120.0,
    )
    assert report.as_json() == {
        "status": "ok",
        "loops": {
            "collect:main": {
                "age_seconds": 10.0, "limit_seconds": 160.0, "fresh": True, "cycled": False,
            },
            "poll:main": {
                "age_seconds": 8.765, "limit_seconds": 700.0, "fresh": True, "cycled": True,
            },
            "submit:main": {
                "age_seconds": 10.0, "limit_seconds": 160.0, "fresh": True, "cycled": False,
            },
        },
    }  # fmt: skip


def test_a_clock_stepping_back_never_gives_a_negative_age() -> None:
    """A heartbeat in the future (clock stepped back) counts as age 0."""
    report = evaluate(
        {"poll:main": START + 50},
        LIMITS,
        now=START,
        started_at=START,
        stopping=False,
        default_limit=120.0,
    )
    assert {loop.name: loop.age for loop in report.loops}["poll:main"] == 0.0
