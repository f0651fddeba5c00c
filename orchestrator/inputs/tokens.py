"""The prompt-token estimate of a request line: fast, deterministic, conservative. Pure.

A token budget (OpenAI's enqueued prompt tokens per model) is only as good as this estimate,
and the estimate runs on the intake scan's hot path (once per request line). A real tokenizer
was measured and not chosen: ``bpe-openai`` (a Rust BPE that embeds o200k_base and
cl100k_base, 74 MB) counts about 24 MB/s of text on the reference machine, which would double
the scan; ``tiktoken`` downloads its encodings at run time. This estimate is:

    ceil(UTF-8 bytes of the body's text / 3) + 4 per message + 3 per request

where *the body's text* is every string value anywhere in ``body`` (message contents, names,
tool-call arguments, tool and schema descriptions, ``input``, ``prompt``, ``instructions``,
...) except the top-level ``model``; a list of integers (pre-tokenised ``prompt``/``input``)
counts one token per integer; an image part (``image_url``/``input_image``) counts
:data:`IMAGE_TOKENS` instead of the bytes of its URL (often a base64 ``data:`` URL); numbers,
booleans and object keys count nothing. Messages are the objects of ``body.messages`` (chat)
and of a ``body.input`` list (responses).

Measured against o200k_base / cl100k_base (the ratio is tokens per UTF-8 byte; this estimate
assumes 0.333): English prose 0.22, source code 0.24, CJK 0.23/0.33, Russian 0.14/0.22, Hindi
0.14/0.40, digits 0.33: over-estimated or exact. Dense data is under-estimated: hex 0.57,
JSON full of numbers 0.61, base64 0.68, emoji 0.42/0.68, random ASCII 0.77, random rare
Unicode 0.81/0.90 (up to 2.7x under). Every byte-level BPE gives at most one token per byte,
so the estimate is never more than 3x under whatever the text. What the provider really counts
is learnt when it refuses a batch (:func:`orchestrator.budget.learn_token_scale`).

Cost: about 2-4 µs per chat line, a few to 25 % of the scan (``docs/operations.md``, "Token
budgets", has the figures).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

IMAGE_TOKENS: Final = 1_600
"""What one image part counts (OpenAI bills an image by its tiles, at most about 1,500 tokens
for gpt-4o at high detail; the bytes of a ``data:`` URL would count thousands times more)."""
MESSAGE_TOKENS: Final = 4
"""Per message: its role and the separators the chat template adds (OpenAI's cookbook: 3-4)."""
REQUEST_TOKENS: Final = 3
"""Per request: the reply's priming."""
_IMAGE_PARTS: Final = frozenset({"image_url", "input_image"})


def estimate_tokens(request: Mapping[str, object]) -> int:
    """The prompt-token estimate of one parsed request line (see the module); 0 without a body.

    Deterministic: the same line always gives the same figure, on every machine.
    """
    body = request.get("body")
    if type(body) is not dict:
        return 0
    counter = _Counter()
    for key, value in body.items():
        if key == "model":
            continue
        if (key == "messages" or key == "input") and type(value) is list:
            for item in value:
                if type(item) is dict:
                    counter.messages += 1
                counter.walk(item)
        else:
            counter.walk(value)
    text = -(-counter.bytes // 3)
    return text + counter.tokens + MESSAGE_TOKENS * counter.messages + REQUEST_TOKENS


OUTPUT_CAP_KEYS: Final = ("max_tokens", "max_completion_tokens", "max_output_tokens")
"""Where a request says the most output tokens it may produce: ``body.max_tokens`` (Mistral,
OpenAI chat), ``max_completion_tokens`` (OpenAI), ``max_output_tokens`` (Responses), or
``params.max_tokens`` (Anthropic's form)."""


def output_cap(request: Mapping[str, object]) -> int | None:
    """The most output tokens one parsed request line asks for (None: it sets no cap).

    What the cost estimate prices as output (``orchestrator.pricing``); a request without a
    cap is counted at the pricing's default instead.
    """
    for holder in (request.get("body"), request.get("params")):
        if type(holder) is dict:
            for key in OUTPUT_CAP_KEYS:
                value = holder.get(key)
                if type(value) is int and value >= 0:
                    return value
    return None


class _Counter:
    """Bytes of text and tokens counted outright, over one body."""

    __slots__ = ("bytes", "messages", "tokens")

    def __init__(self) -> None:
        self.bytes = 0
        self.tokens = 0
        self.messages = 0

    def walk(self, value: object) -> None:
        if type(value) is str:
            self.bytes += len(value) if value.isascii() else len(value.encode("utf-8", "replace"))
        elif type(value) is list:
            for item in value:
                if type(item) is int:
                    self.tokens += 1  # a token id (pre-tokenised prompt or input)
                else:
                    self.walk(item)
        elif type(value) is dict:
            if value.get("type") in _IMAGE_PARTS:
                self.tokens += IMAGE_TOKENS
                return
            for item in value.values():
                self.walk(item)
