"""Deterministic synthetic response bodies, one shape per batch endpoint.

A body depends only on the seed, the endpoint, the ``custom_id`` and the request body (and the
model and creation time passed in), never on the job id: the same input with the same seed
gives the same answers in any job, process or run.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime
from typing import Any

_VOCABULARY = (
    "comté brie roquefort camembert reblochon époisses munster cantal beaufort morbier "
    "the a of and to in is that for it with as on by this be are from at or an which "
    "cheese milk cave aged rind creamy nutty sharp mild soft firm blue goat sheep cow "
    "region alpine valley summer winter pasture wheel month year flavour texture aroma "
    "balanced rich delicate earthy fruity salty sweet notes finish paired wine bread "
    "traditional farmhouse raw pasteurised protected origin label producer village market"
)
_WORDS = _VOCABULARY.split()


def _build_corpus() -> str:
    rng = random.Random(20240601)  # noqa: S311 (not for security: a fixed text source)
    words = rng.choices(_WORDS, k=20_000)
    text = " ".join(words)
    return text + " " + text  # doubled, so any slice of up to one length wraps around


_CORPUS = _build_corpus()
_CORPUS_HALF = len(_CORPUS) // 2

_MODERATION_CATEGORIES = (
    "sexual",
    "hate_and_discrimination",
    "violence_and_threats",
    "dangerous_and_criminal_content",
    "selfharm",
    "health",
    "financial",
    "law",
    "pii",
)
_CLASSIFIER_LABELS = ("positive", "neutral", "negative")

DEFAULT_MODEL = "mistral-small-latest"


class _Draws:
    """Seeded draws: the first few come straight from a digest (cheap, most bodies need no
    more); beyond them a ``random.Random`` seeded from the same digest takes over."""

    def __init__(self, digest: bytes) -> None:
        self._digest = digest
        self._used = 0
        self._rng: random.Random | None = None

    def random(self) -> float:
        if self._used < 4:
            start = self._used * 8
            self._used += 1
            return int.from_bytes(self._digest[start : start + 8], "big") / 2**64
        if self._rng is None:
            self._rng = random.Random(self._digest)  # noqa: S311 (simulation only)
        return self._rng.random()

    def randint(self, low: int, high: int) -> int:
        return low + min(high - low, int(self.random() * (high - low + 1)))

    def randrange(self, stop: int) -> int:
        return min(stop - 1, int(self.random() * stop))

    def gauss(self, mu: float, sigma: float) -> float:
        if self._rng is None:
            self._rng = random.Random(self._digest)  # noqa: S311 (simulation only)
        return self._rng.gauss(mu, sigma)


class Synth:
    """Builds the synthetic response body of one request line.

    Args:
        seed: the emulator seed.
        embedding_dimensions: length of the embedding vectors.
        completion_tokens: (low, high) range of completion lengths, in tokens.
    """

    def __init__(
        self, *, seed: int, embedding_dimensions: int, completion_tokens: tuple[int, int]
    ) -> None:
        self._seed = seed
        self._dims = embedding_dimensions
        self._tokens = completion_tokens

    def _rng(self, custom_id: str, salt: str = "") -> _Draws:
        digest = hashlib.blake2b(
            f"{self._seed}\x00{custom_id}\x00{salt}".encode(), digest_size=32
        ).digest()
        return _Draws(digest)

    def _hex_id(self, custom_id: str, salt: str) -> str:
        return hashlib.blake2b(
            f"{self._seed}\x00{custom_id}\x00{salt}".encode(), digest_size=16
        ).hexdigest()

    @staticmethod
    def _text(rng: _Draws, tokens: int) -> str:
        # About four characters per token, cut from a fixed corpus at a seeded offset.
        length = min(tokens * 4, _CORPUS_HALF)
        start = rng.randrange(_CORPUS_HALF)
        return _CORPUS[start : start + length].strip() or "ok"

    @staticmethod
    def _prompt_tokens(value: Any) -> int:
        # A rough count, stable for a given body: a token per four characters of its text.
        return max(1, len(repr(value)) // 4)

    def _completion(self, rng: _Draws, body: dict[str, Any]) -> tuple[int, str, str]:
        low, high = self._tokens
        natural = rng.randint(low, high)
        raw = body.get("max_tokens")
        max_tokens = raw if isinstance(raw, int) and not isinstance(raw, bool) else 0
        if 0 < max_tokens <= natural:
            return max_tokens, "length", self._text(rng, max_tokens)
        return natural, "stop", self._text(rng, natural)

    def body(
        self, endpoint: str, custom_id: str, body: dict[str, Any], model: str, created: int
    ) -> dict[str, Any]:
        """The response body for one successful request line.

        Args:
            endpoint: the job's endpoint.
            custom_id: the line's custom id (the seed of its randomness).
            body: the request body.
            model: the model that "answered".
            created: unix seconds at which the line was processed.
        """
        rng = self._rng(custom_id, endpoint)
        handler = {
            "/v1/chat/completions": self._chat,
            "/v1/fim/completions": self._chat,
            "/v1/embeddings": self._embeddings,
            "/v1/moderations": self._moderations,
            "/v1/chat/moderations": self._moderations,
            "/v1/ocr": self._ocr,
            "/v1/classifications": self._classifications,
            "/v1/chat/classifications": self._classifications,
            "/v1/conversations": self._conversations,
            "/v1/audio/transcriptions": self._transcription,
        }[endpoint]
        return handler(rng, custom_id, body, model, created)

    def _chat(
        self, rng: _Draws, custom_id: str, body: dict[str, Any], model: str, created: int
    ) -> dict[str, Any]:
        prompt = self._prompt_tokens(body.get("messages", body.get("prompt")))
        tokens, finish, text = self._completion(rng, body)
        return {
            "id": self._hex_id(custom_id, "chat"),
            "object": "chat.completion",
            "model": model,
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": tokens,
                "total_tokens": prompt + tokens,
            },
            "created": created,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish,
                    "message": {"role": "assistant", "content": text, "tool_calls": None},
                }
            ],
        }

    def _embeddings(
        self, rng: _Draws, custom_id: str, body: dict[str, Any], model: str, created: int
    ) -> dict[str, Any]:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {
                "object": "embedding",
                "embedding": [round(rng.gauss(0.0, 0.03), 6) for _ in range(self._dims)],
                "index": i,
            }
            for i in range(len(inputs))
        ]
        prompt = sum(self._prompt_tokens(item) for item in inputs)
        return {
            "id": self._hex_id(custom_id, "embd"),
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt, "completion_tokens": 0, "total_tokens": prompt},
        }

    def _moderations(
        self, rng: _Draws, custom_id: str, body: dict[str, Any], model: str, created: int
    ) -> dict[str, Any]:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        results = []
        for _ in inputs:
            scores = {name: round(rng.random() ** 4, 6) for name in _MODERATION_CATEGORIES}
            results.append(
                {
                    "categories": {name: score > 0.5 for name, score in scores.items()},
                    "category_scores": scores,
                }
            )
        prompt = sum(self._prompt_tokens(item) for item in inputs)
        return {
            "id": self._hex_id(custom_id, "mod"),
            "model": model,
            "results": results,
            "usage": {"prompt_tokens": prompt, "completion_tokens": 0, "total_tokens": prompt},
        }

    def _ocr(
        self, rng: _Draws, custom_id: str, body: dict[str, Any], model: str, created: int
    ) -> dict[str, Any]:
        pages = [
            {
                "index": i,
                "markdown": "# " + self._text(rng, 8) + "\n\n" + self._text(rng, 120),
                "images": [],
                "dimensions": {"dpi": 200, "height": 2200, "width": 1700},
            }
            for i in range(rng.randint(1, 3))
        ]
        return {
            "pages": pages,
            "model": model,
            "document_annotation": None,
            "usage_info": {"pages_processed": len(pages), "doc_size_bytes": None},
        }

    def _classifications(
        self, rng: _Draws, custom_id: str, body: dict[str, Any], model: str, created: int
    ) -> dict[str, Any]:
        raw = body["input"]
        inputs = raw if isinstance(raw, list) else [raw]
        results = []
        for _ in inputs:
            weights = [rng.random() + 1e-6 for _ in _CLASSIFIER_LABELS]
            total = sum(weights)
            scores = {
                label: round(w / total, 6)
                for label, w in zip(_CLASSIFIER_LABELS, weights, strict=True)
            }
            results.append({"sentiment": {"scores": scores}})
        return {"id": self._hex_id(custom_id, "cls"), "model": model, "results": results}

    def _conversations(
        self, rng: _Draws, custom_id: str, body: dict[str, Any], model: str, created: int
    ) -> dict[str, Any]:
        prompt = self._prompt_tokens(body.get("inputs"))
        tokens, _, text = self._completion(rng, body.get("completion_args") or {})
        stamp = datetime.fromtimestamp(created, tz=UTC).isoformat().replace("+00:00", "Z")
        return {
            "object": "conversation.response",
            "conversation_id": "conv_" + self._hex_id(custom_id, "conv")[:24],
            "outputs": [
                {
                    "object": "entry",
                    "type": "message.output",
                    "role": "assistant",
                    "content": text,
                    "id": "msg_" + self._hex_id(custom_id, "msg")[:24],
                    "created_at": stamp,
                    "completed_at": stamp,
                    "model": model,
                    "agent_id": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": tokens,
                "total_tokens": prompt + tokens,
                "connector_tokens": None,
                "connectors": None,
            },
        }

    def _transcription(
        self, rng: _Draws, custom_id: str, body: dict[str, Any], model: str, created: int
    ) -> dict[str, Any]:
        tokens, _, text = self._completion(rng, {})
        seconds = round(tokens * 0.4, 1)
        return {
            "model": model,
            "text": text,
            "language": body.get("language") or "en",
            "segments": [
                {"text": text, "start": 0.0, "end": seconds, "type": "transcription_segment"}
            ],
            "usage": {
                "prompt_audio_seconds": int(seconds),
                "prompt_tokens": 4,
                "completion_tokens": tokens,
                "total_tokens": tokens + 4,
            },
        }
