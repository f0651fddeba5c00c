"""Answers in the Messages API's shape (``Message``), on the core's seeded draws."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.emulator.anthropic.wire import message_id
from orchestrator.emulator.synthetic import Synth


class AnthropicSynth(Synth):
    """One ``message`` per request: text content, ``stop_reason``, ``usage``."""

    def body(
        self, endpoint: str, custom_id: str, body: dict[str, Any], model: str, created: int
    ) -> dict[str, Any]:
        rng = self._rng(custom_id, endpoint)
        tokens, finish, text = self._completion(rng, body)
        prompt = max(1, len(json.dumps(body.get("messages", []), ensure_ascii=False)) // 4)
        return {
            "id": message_id(self._hex_id(custom_id, endpoint), custom_id),
            "type": "message",
            "role": "assistant",
            "model": str(body.get("model") or model),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn" if finish == "stop" else "max_tokens",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": tokens},
        }
