"""Regression tests for what the survival suites found outside the test harness.

- The bad-input corpus (a 3 MiB line cut short) showed ``not valid JSON: Unterminated string
  starting at at column 73``: :mod:`orchestrator.inputs` now drops the ``at`` that some
  ``json`` messages end with, so the column is named once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import InputError
from orchestrator.inputs import validate_inputs


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"custom_id": "a", "body": {"x": "open', "Unterminated string starting at column 34"),
        (b'{"custom_id": "a\x01"}', "Invalid control character at column 17"),
        (b'{"custom_id": "a"} x', "Extra data at column 20"),
    ],
)
def test_json_messages_name_the_column_once(tmp_path: Path, line: bytes, message: str) -> None:
    """JSON messages that end in "at" name their column once: "… starting at column N"."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(line + b"\n")
    with pytest.raises(InputError) as caught:
        validate_inputs([path], endpoint="/v1/chat/completions")
    assert caught.value.problems == (f"{path}:1: not valid JSON: {message}",)
