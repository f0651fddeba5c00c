"""The prompt-token estimate: its formula on each body shape, and that it over-counts text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.inputs import estimate_tokens
from orchestrator.inputs.tokens import IMAGE_TOKENS, MESSAGE_TOKENS, REQUEST_TOKENS


def chat(*contents: object) -> dict[str, object]:
    """A chat line with one user message per content."""
    messages = [{"role": "user", "content": content} for content in contents]
    return {"custom_id": "a", "body": {"model": "gpt-4o-mini", "messages": messages}}


@pytest.mark.parametrize(
    ("request_line", "expected"),
    [
        # "user" + "hi": 6 bytes -> 2; one message; the request.
        (chat("hi"), 2 + MESSAGE_TOKENS + REQUEST_TOKENS),
        # "é" is two UTF-8 bytes: "user" + 3 x "é" = 10 bytes -> 4.
        (chat("ééé"), 4 + MESSAGE_TOKENS + REQUEST_TOKENS),
        # The image counts IMAGE_TOKENS, not its data URL; the text part "look": 4 + 4 bytes.
        (
            chat(
                [
                    {"type": "text", "text": "look"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64," + "A" * 9000},
                    },
                ]
            ),
            -(-(4 + 4 + 4) // 3) + IMAGE_TOKENS + MESSAGE_TOKENS + REQUEST_TOKENS,
        ),
        # Token ids count one each; numbers elsewhere (dimensions) count nothing.
        ({"body": {"input": [[1, 2, 3], [4, 5]], "dimensions": 256}}, 5 + REQUEST_TOKENS),
        # A string input is text, not a message.
        ({"body": {"model": "text-embedding-3-small", "input": "abcdef"}}, 2 + REQUEST_TOKENS),
        # Responses: each input item is a message; instructions are text.
        (
            {"body": {"instructions": "abc", "input": [{"role": "user", "content": "abc"}]}},
            -(-(3 + 4 + 3) // 3) + MESSAGE_TOKENS + REQUEST_TOKENS,
        ),
        ({"custom_id": "no body"}, 0),
    ],
)
def test_estimate_of_each_body_shape(request_line: dict[str, object], expected: int) -> None:
    """ceil(text bytes / 3) + per-message and per-request overheads, images and token ids."""
    assert estimate_tokens(request_line) == expected


# Counted with o200k_base and cl100k_base (bpe-openai 0.1.4): (text, most tokens of the two).
MEASURED = [
    (
        "Orchestrators submit batches of requests to a provider and poll them until every one "
        "has finished; the budget keeps the pipe full without ever exceeding the provider's "
        "limits.",
        34,
    ),
    (
        "def admit(queued, *, budget):\n    used = 0\n    for job in sorted(queued, key=lambda "
        "j: (-j.priority, j.id)):\n        if used + job.n > budget:\n            break\n"
        "        used += job.n\n",
        51,
    ),
    ("東京は日本の首都であり、世界最大の都市圏の一つです。", 27),
    ("Привет мир, это тестовое предложение для токенизатора.", 22),
]


@pytest.mark.parametrize(("text", "tokens"), MEASURED)
def test_estimate_is_above_a_real_tokenizer_on_text(text: str, tokens: int) -> None:
    """Prose, code, CJK and Cyrillic are over-estimated against OpenAI's encodings."""
    assert estimate_tokens(chat(text)) - MESSAGE_TOKENS - REQUEST_TOKENS >= tokens


@given(st.text(), st.text())
def test_estimate_never_falls_when_text_is_added(first: str, second: str) -> None:
    """More text never lowers the estimate, and the estimate is at least the overheads."""
    one = estimate_tokens(chat(first))
    assert one >= MESSAGE_TOKENS + REQUEST_TOKENS
    assert estimate_tokens(chat(first + second)) >= one
    assert estimate_tokens(chat(first, second)) >= one + MESSAGE_TOKENS
    # a third of the UTF-8 bytes: every byte-level BPE gives at most one token per byte
    assert 3 * (one - MESSAGE_TOKENS - REQUEST_TOKENS) >= len(("user" + first).encode("utf-8"))


def test_lone_surrogates_are_counted_not_raised() -> None:
    """A string json.loads can produce but UTF-8 cannot encode still gets an estimate."""
    assert estimate_tokens(chat("\ud800")) == 2 + MESSAGE_TOKENS + REQUEST_TOKENS
