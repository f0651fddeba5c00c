"""The pure parts of the API: who may do what, which events a stream may send, the page's files."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from orchestrator.service.access import Access, is_loopback
from orchestrator.service.api import STATIC_FILES
from orchestrator.service.feed import deliverable, message


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("dashboard.example", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    """Only addresses this machine alone reaches count as loopback; names never do."""
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("host", "anonymous", "token", "need", "authorization", "status"),
    [
        ("127.0.0.1", False, "s3cret-token", "read", None, None),
        ("127.0.0.1", False, "s3cret-token", "write", None, 401),
        ("127.0.0.1", False, "s3cret-token", "write", "Bearer nope", 401),
        ("127.0.0.1", False, "s3cret-token", "write", "Basic s3cret-token", 401),
        ("127.0.0.1", False, "s3cret-token", "write", "Bearer s3cret-token", None),
        ("127.0.0.1", False, "s3cret-token", "write", "bearer  s3cret-token ", None),
        ("127.0.0.1", False, None, "write", "Bearer s3cret-token", 403),
        ("0.0.0.0", False, "s3cret-token", "read", None, 401),
        ("0.0.0.0", False, "s3cret-token", "read", "Bearer s3cret-token", None),
        ("0.0.0.0", False, None, "read", None, 403),
        ("0.0.0.0", True, None, "read", None, None),
        ("0.0.0.0", True, "s3cret-token", "write", None, 401),
        ("0.0.0.0", False, None, "open", None, None),
    ],
)
def test_access_decisions(
    host: str,
    anonymous: bool,
    token: str | None,
    need: str,
    authorization: str | None,
    status: int | None,
) -> None:
    """Reads open on loopback (or when allowed), writes need the token, none configured: 403."""
    access = Access.of(
        token=token, token_env="ORCH_HTTP_TOKEN", host=host, allow_anonymous_reads=anonymous
    )
    denied = access.check(need, authorization)  # type: ignore[arg-type]
    assert (denied.status if denied else None) == status
    if denied is not None:
        assert token is None or token not in denied.error
    assert "s3cret" not in repr(access)


@pytest.mark.parametrize(
    ("cursor", "ids", "gap_since", "now", "expected"),
    [
        (0, [1, 2, 3], None, 100.0, (3, None)),
        (3, [], None, 100.0, (0, None)),
        (3, [4, 6, 7], None, 100.0, (1, 100.0)),  # 5 is missing: hold 6 and 7 back
        (4, [6, 7], 100.0, 103.0, (0, 100.0)),  # still within the wait
        (4, [6, 7], 100.0, 105.0, (2, None)),  # 5 never came: go on
        (4, [5, 6, 7], 100.0, 101.0, (3, None)),  # 5 committed meanwhile
        (10, [12], None, 50.0, (0, 50.0)),
    ],
)
def test_events_after_a_gap_wait_for_it(
    cursor: int,
    ids: list[int],
    gap_since: float | None,
    now: float,
    expected: tuple[int, float | None],
) -> None:
    """Events are sent in id order up to a gap; past it only once the gap is GAP_WAIT old."""
    assert deliverable(cursor, ids, gap_since, now, wait=5.0) == expected


def test_an_event_is_one_data_line_with_its_id() -> None:
    """Newlines in the data never split the message: the JSON is one line."""
    text = message("job", {"detail": "two\nlines"}, 42).decode()
    assert text == 'event: job\nid: 42\ndata: {"detail": "two\\nlines"}\n\n'


def test_the_page_loads_nothing_from_elsewhere_and_builds_no_markup_from_data() -> None:
    """The dashboard's files ship in the package, name no other host, and use no innerHTML."""
    folder = resources.files("orchestrator.service").joinpath("dashboard")
    for name in STATIC_FILES:
        text = folder.joinpath(name).read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
        for forbidden in ("innerHTML", "outerHTML =", "insertAdjacentHTML", "document.write"):
            assert forbidden not in text, (name, forbidden)
    assert "textContent" in folder.joinpath("app.js").read_text(encoding="utf-8")
