"""Aspect ratios and pixel sizes: which ratio a prompt gets, and which size a ratio gets on a model.

Pure functions, shared by the API (which resolves a null `aspect_ratio` when the request arrives)
and the engines (which turn a ratio into the width and height their model needs).
"""

from __future__ import annotations

import math
import re

from daguerre.wire import ASPECT_RATIOS, PORTRAIT_RATIOS

# The rule for a null aspect_ratio (documented in docs/api.md): 1:1 unless the prompt clearly asks
# for another shape. The first matching entry wins; words are matched whole and case-insensitively.
RATIO_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("3:1", ("panorama", "panoramic", "banner", "header image")),
    ("1:3", ("skyscraper ad", "vertical banner", "very tall")),
    ("9:16", ("phone wallpaper", "story format", "vertical video", "smartphone wallpaper")),
    ("16:9", ("widescreen", "wide shot", "wide-angle", "landscape", "cinematic", "desktop wallpaper")),
    ("2:3", ("portrait", "poster", "book cover", "tall")),
)
MANGA_DEFAULT_RATIO = "2:3"
DEFAULT_RATIO = "1:1"


def pick_aspect_ratio(prompt: str, style: str | None) -> str:
    """The ratio used when a request leaves `aspect_ratio` null.

    >>> pick_aspect_ratio("a wide landscape at dusk", "auto")
    '16:9'
    >>> pick_aspect_ratio("a cat", "manga")
    '2:3'
    """
    text = prompt.lower()
    for ratio, words in RATIO_KEYWORDS:
        if any(re.search(rf"\b{re.escape(word)}\b", text) for word in words):
            if style == "manga" and ratio not in PORTRAIT_RATIOS:
                return MANGA_DEFAULT_RATIO
            return ratio
    return MANGA_DEFAULT_RATIO if style == "manga" else DEFAULT_RATIO


def ratio_value(ratio: str) -> float:
    """'16:9' -> 1.777..."""
    w, h = ratio.split(":")
    return int(w) / int(h)


def size_for_ratio(ratio: str, pixels: int, multiple: int) -> tuple[int, int]:
    """Width and height of about `pixels` in area with the exact ratio, both multiples of `multiple`.

    The short side is rounded to the multiple first and the long side follows from the ratio, so
    the result keeps the ratio as exactly as the multiple allows. For the 1024² class with multiple
    16 this gives the spec's table: 1:1 1024x1024, 3:2 1248x832, 16:9 1360x768, 2:1 1440x720,
    3:1 1776x592, and the portrait mirror images.
    """
    r = ratio_value(ratio)
    long_over_short = max(r, 1 / r)
    short = max(multiple, round(math.sqrt(pixels / long_over_short) / multiple) * multiple)
    long = max(multiple, round(short * long_over_short / multiple) * multiple)
    return (long, short) if r >= 1 else (short, long)


def size_table(pixels: int, multiple: int) -> dict[str, tuple[int, int]]:
    return {ratio: size_for_ratio(ratio, pixels, multiple) for ratio in ASPECT_RATIOS}


def nearest_ratio(width: int, height: int) -> str:
    """The one of the nine ratios closest to width:height (compared on a log scale)."""
    target = math.log(width / height)
    return min(ASPECT_RATIOS, key=lambda ratio: abs(math.log(ratio_value(ratio)) - target))


def fit_size(width: int, height: int, max_pixels: int, multiple: int, min_pixels: int = 0) -> tuple[int, int]:
    """The size nearest to width x height, in multiples of `multiple`, between `min_pixels` and
    `max_pixels` in area, with the aspect ratio kept as exactly as the multiple allows.

    Used for edits: the output keeps the source's size when the model allows it; a larger source is
    scaled down to the model's size class, a much smaller one up to `min_pixels`.
    """
    r = width / height
    long_over_short = max(r, 1 / r)
    area = width * height
    scale = min(1.0, math.sqrt(max_pixels / area))
    if min_pixels and area < min_pixels:
        scale = math.sqrt(min_pixels / area)
    short = max(multiple, round(min(width, height) * scale / multiple) * multiple)
    while True:
        long = max(multiple, round(short * long_over_short / multiple) * multiple)
        if short * long <= max_pixels or short == multiple:
            break
        short -= multiple
    return (long, short) if r >= 1 else (short, long)
