"""Deterministic synthetic answers in OpenAI's shapes, one per batch endpoint.

Built on the core's :class:`~orchestrator.emulator.synthetic.Synth` draws (seed and
``custom_id``), so the same input with the same seed answers the same in any batch. Every
``prompt_tokens`` / ``input_tokens`` is :func:`~orchestrator.emulator.openai.lines.prompt_tokens`,
the estimate the enqueued-token limit counts.
"""

from __future__ import annotations

from typing import Any

from orchestrator.emulator.openai.lines import prompt_tokens
from orchestrator.emulator.synthetic import Synth

_MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


def _limit(body: dict[str, Any], *names: str) -> dict[str, Any]:
    """The first integer output limit among ``names``, as the core's ``max_tokens``."""
    for name in names:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return {"max_tokens": value}
    return {}


class OpenAISynth(Synth):
    """OpenAI's response bodies: ``chat.completion``, embeddings ``list``, ``text_completion``,
    ``response`` and moderation results."""

    def body(
        self, endpoint: str, custom_id: str, body: dict[str, Any], model: str, created: int
    ) -> dict[str, Any]:
        rng = self._rng(custom_id, endpoint)
        prompt = prompt_tokens(endpoint, body)
        hex_id = self._hex_id(custom_id, endpoint)
        if endpoint == "/v1/embeddings":
            raw = body["input"]
            inputs = raw if isinstance(raw, list) else [raw]
            dims = body.get("dimensions")
            size = dims if isinstance(dims, int) and dims > 0 else self._dims
            return {
                "object": "list",
                "data": [
                    {
                        "object": "embedding",
                        "index": i,
                        "embedding": [round(rng.gauss(0.0, 0.03), 6) for _ in range(size)],
                    }
                    for i in range(len(inputs))
                ],
                "model": model,
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
            }
        if endpoint == "/v1/moderations":
            raw = body["input"]
            inputs = raw if isinstance(raw, list) else [raw]
            results = []
            for _ in inputs:
                scores = {name: round(rng.random() ** 4, 6) for name in _MODERATION_CATEGORIES}
                flags = {name: score > 0.5 for name, score in scores.items()}
                results.append(
                    {"flagged": any(flags.values()), "categories": flags, "category_scores": scores}
                )
            return {"id": f"modr-{hex_id[:24]}", "model": model, "results": results}
        if endpoint == "/v1/responses":
            tokens, finish, text = self._completion(rng, _limit(body, "max_output_tokens"))
            return {
                "id": f"resp_{hex_id}",
                "object": "response",
                "created_at": created,
                "status": "completed" if finish == "stop" else "incomplete",
                "incomplete_details": None if finish == "stop" else {"reason": "max_output_tokens"},
                "error": None,
                "model": model,
                "output": [
                    {
                        "type": "message",
                        "id": f"msg_{hex_id[:24]}",
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }
                ],
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "usage": {
                    "input_tokens": prompt,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens": tokens,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": prompt + tokens,
                },
            }
        limits = _limit(body, "max_completion_tokens", "max_tokens")
        tokens, finish, text = self._completion(rng, limits)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": tokens,
            "total_tokens": prompt + tokens,
        }
        if endpoint == "/v1/completions":
            return {
                "id": f"cmpl-{hex_id[:29]}",
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
                "usage": usage,
            }
        return {
            "id": f"chatcmpl-{hex_id[:29]}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": text,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": {
                **usage,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": f"fp_{hex_id[:10]}",
        }
