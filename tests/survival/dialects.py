"""The provider dialects the survival suites run on: every suite runs once per dialect.

A :class:`Wire` says what differs for a suite between two dialects: the emulator's flags, the
workspace's provider and model, and where the checks read a remote job and its files. Nothing
else does: the daemon, the workload and the invariants are the same for every dialect.
"""

from __future__ import annotations

import attrs
import pytest


@attrs.frozen(kw_only=True)
class Wire:
    """One dialect as the survival suites meet it."""

    name: str
    emulator_flags: tuple[str, ...]
    """Flags of ``orchestrator emulate`` that select the dialect."""
    model: str
    """The model every job of the workload names."""
    job_path: str
    """The emulator's path of one remote job (``{id}`` is replaced)."""
    output_field: str
    error_field: str
    native_lines: bool
    """Whether some jobs' lines are written in the dialect's own form (OpenAI's
    ``{custom_id, method, url, body}``) instead of ``{custom_id, body}``."""
    files_page_param: str
    """The query parameter of ``GET /v1/files`` that sets the page size."""
    chat_endpoint: str = "/v1/chat/completions"
    """The endpoint of the workload's chat jobs."""
    embeddings: bool = True
    """Whether the wire batches embeddings (Anthropic does not: its jobs are all chat)."""
    metadata: bool = True
    """Whether a remote job carries the orchestrator's token (Anthropic's batches carry no
    metadata: duplicates are counted from the emulator's creates and the results instead)."""
    results_stream: bool = False
    """Whether results come as one stream (``results_url``) instead of two files."""

    def provider_line(self) -> str:
        """The workspace's ``provider = ...`` line."""
        return f'provider = "{self.name}"\n'


MISTRAL = Wire(
    name="mistral",
    emulator_flags=("--dialect", "mistral"),
    model="mistral-small-latest",
    job_path="/v1/batch/jobs/{id}",
    output_field="output_file",
    error_field="error_file",
    native_lines=False,
    files_page_param="page_size",
)
OPENAI = Wire(
    name="openai",
    emulator_flags=("--dialect", "openai"),
    model="gpt-4o-mini",
    job_path="/v1/batches/{id}",
    output_field="output_file_id",
    error_field="error_file_id",
    native_lines=True,
    files_page_param="limit",
)
ANTHROPIC = Wire(
    name="anthropic",
    emulator_flags=("--dialect", "anthropic"),
    model="claude-sonnet-4-5",
    job_path="/v1/messages/batches/{id}",
    output_field="results_url",
    error_field="results_url",
    native_lines=True,
    files_page_param="limit",
    chat_endpoint="/v1/messages",
    embeddings=False,
    metadata=False,
    results_stream=True,
)
WIRES = (MISTRAL, OPENAI, ANTHROPIC)


@pytest.fixture(params=WIRES, ids=[wire.name for wire in WIRES])
def wire(request: pytest.FixtureRequest) -> Wire:
    """Each dialect in turn."""
    value: Wire = request.param
    return value
