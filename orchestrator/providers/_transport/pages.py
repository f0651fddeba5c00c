"""Walking a provider's job list page by page, whatever its paging scheme.

Mistral pages by number, OpenAI and Anthropic by an ``after`` cursor (the last id seen). The
dialect says how to fetch one page and what the next cursor is; :func:`iterate_pages` does the
rest the same way for all: one request per page, each job yielded once even when the list
shifts between pages, and a transient error if a page brings nothing new although the server
says more follow: a server that keeps answering the same page can neither loop the poller
forever nor pass for a complete list (reconcile reads "not listed" as "never created", so a
list cut short would make it create a duplicate).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

import attrs
import structlog

from orchestrator.errors import TransientProviderError
from orchestrator.providers.base import RemoteJob

log = structlog.get_logger(__name__)

C = TypeVar("C")


@attrs.frozen
class Page(Generic[C]):
    """One page of jobs and the cursor of the next page (``None``: this was the last)."""

    jobs: Sequence[RemoteJob]
    next: C | None


async def iterate_pages(
    fetch: Callable[[C | None], Awaitable[Page[C]]], *, provider: str
) -> AsyncGenerator[RemoteJob, None]:
    """Yield every job of the pages ``fetch`` returns, starting with ``fetch(None)``.

    Args:
        fetch: one request for the page at a cursor (``None`` for the first page).
        provider: the provider's name, for the log line of a stalled list.

    Raises:
        TransientProviderError: a page brought no job not already listed, yet announced more.
    """
    seen: set[str] = set()
    cursor: C | None = None
    page = 0
    while True:
        result = await fetch(cursor)
        new = 0
        for job in result.jobs:
            if job.id in seen:
                continue  # the list shifted between pages
            seen.add(job.id)
            new += 1
            yield job
        if result.next is None:
            return
        if new == 0:
            log.warning("provider.list_no_progress", provider=provider, page=page)
            raise TransientProviderError(
                f"{provider}: page {page + 1} of the job list repeated the jobs already listed "
                "although more were announced: the list is incomplete, try again later"
            )
        cursor = result.next
        page += 1


def has_metadata(job: RemoteJob, metadata: Mapping[str, str] | None) -> bool:
    """Whether ``job`` carries every pair of ``metadata`` (for APIs that cannot filter on it).

    Reconciling a create whose answer was lost means finding the job by its client token; a
    dialect whose list has no metadata filter (OpenAI) lists and keeps the jobs that match.
    """
    return all(job.metadata.get(key) == value for key, value in (metadata or {}).items())
