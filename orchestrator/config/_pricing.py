"""``[pricing]`` and a workspace's spend keys: prices, the batch discount, the spend limit.

A private helper of :mod:`orchestrator.config`. Every number is checked where it is read, so a
negative price or limit, a discount outside (0, 1] or an unknown key in a model's price is a
:class:`~orchestrator.errors.ConfigError` naming the file and the dotted key.
"""

from __future__ import annotations

from orchestrator.config._read import Section
from orchestrator.errors import ConfigError
from orchestrator.pricing import DEFAULT_BATCH_DISCOUNT, DEFAULT_MAX_TOKENS, ModelPrice, Pricing

PRICING_KEYS = frozenset({"batch_discount", "currency", "max_tokens", "models"})
"""The keys of ``[pricing]``."""
MODEL_PRICE_KEYS = frozenset({"input", "output", "max_tokens"})
"""The keys of ``[pricing.models."<model>"]``."""
WORKSPACE_SPEND_KEYS = ("spend_limit", "batch_discount")
"""The keys a workspace table takes for spend (see :func:`workspace_spend`)."""


def discount(table: Section, name: str = "batch_discount") -> float:
    """A batch discount: the share of the listed price a batch costs, in (0, 1]."""
    return table.number(name, above=0.0, high=1.0)


def read_pricing(table: Section) -> Pricing:
    """``[pricing]`` (absent: no prices, so every cost is unknown)."""
    table.only(PRICING_KEYS)
    models = table.table("models")
    prices = {}
    for model, value in models.data.items():
        key = f'{models.path}."{model}"'
        if not model.strip():
            raise ConfigError("a model name must not be empty", file=models.file, key=key)
        if not isinstance(value, dict):
            raise ConfigError(
                f'expected a table [pricing.models."{model}"] with input and output prices '
                "per 1,000,000 tokens",
                file=models.file,
                key=key,
            )
        entry = Section(value, file=models.file, path=key)
        entry.only(MODEL_PRICE_KEYS)
        prices[model] = ModelPrice(
            input=entry.number("input", low=0.0),
            output=entry.number("output", low=0.0),
            max_tokens=entry.integer("max_tokens", low=1) if entry.has("max_tokens") else None,
        )
    currency = table.optional_string("currency")
    return Pricing(
        models=prices,
        batch_discount=discount(table) if table.has("batch_discount") else DEFAULT_BATCH_DISCOUNT,
        currency=currency.strip() if currency is not None else None,
        max_tokens=table.integer("max_tokens", DEFAULT_MAX_TOKENS, low=1),
    )


def workspace_spend(ws: Section) -> tuple[float | None, float | None]:
    """A workspace's ``spend_limit`` (per calendar month, UTC; None: no limit) and its own
    ``batch_discount`` (None: the pricing's)."""
    limit = ws.number("spend_limit", low=0.0) if ws.has("spend_limit") else None
    own = discount(ws) if ws.has("batch_discount") else None
    return limit, own
