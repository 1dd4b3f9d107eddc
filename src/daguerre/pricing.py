"""Prices in integer micro-dollars: a base per model plus a fixed amount per input image.

With the defaults this reproduces every row of Luma's price table: uni-1 text-to-image $0.0404,
uni-1-max $0.1000, and $0.0030 for each input image, where the source of an edit counts as one
(so an edit costs $0.0434 on uni-1, and an image with 9 references $0.0674).
"""

from __future__ import annotations

from daguerre.settings import Settings

MICRO = 1_000_000
"""Micro-dollars per dollar."""


def price(settings: Settings, model: str, inputs: int) -> int:
    """The price of one generation of `model` with `inputs` input images (source + references)."""
    return settings.prices[model] + settings.price_per_input * inputs


def dollars(micro: int) -> str:
    return f"${micro / MICRO:,.4f}"


def micro_dollars(amount: str | float) -> int:
    """'12.50' or 12.5 (dollars) -> 12500000."""
    return round(float(str(amount).lstrip("$")) * MICRO)
