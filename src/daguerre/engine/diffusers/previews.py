"""Previews of a diffusers pipeline's picture while it is drawn: a linear map from the latents the
step callback sees to RGB, learnt from the pipeline's own finished pictures.

Tools like ComfyUI ship a hand-fitted latent->RGB table per model family (4x3 for SD, 16x3 for SD3
and FLUX.1, their own for FLUX.2 and Qwen-Image) and leave every other model without previews. Here
the map is fitted instead, by least squares: each finished job pairs the latents of its last step
with its decoded picture shrunk to the latent grid, and adds them to running normal equations
(XᵀX, XᵀY). Any pipeline whose callback latents are a grid (B, C, h, w) or a row-major sequence of
patches (B, h·w, C), as FLUX, FLUX.2 and Qwen-Image pack them, gets previews from its second job
on, and better ones as jobs accumulate; per-channel scales and shifts (SD's 0.18215, FLUX's shift)
are absorbed by the fit's bias. The first job of a process has none. Cost: one (h·w × C+1) matrix
product per preview (under a millisecond at 1024², C = 16) and one small solve per finished job.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

RIDGE = 1e-3
"""Ridge weight, relative to the mean diagonal of XᵀX: keeps the solve well posed after one job
whose picture has few colours."""


def latent_grid(latents: Any, size: tuple[int, int]) -> tuple[np.ndarray, int, int] | None:
    """(features, rows, columns): one row of features per latent position, row-major, from the
    step's latents of the first image in the batch; None when their layout is not one this
    understands. `size` is the picture's (width, height)."""
    array = latents.detach().float().cpu().numpy()
    if array.ndim == 4:  # (batch, channels, h, w)
        channels, rows, columns = array.shape[1:]
        return array[0].reshape(channels, rows * columns).T, rows, columns
    if array.ndim == 3:  # (batch, patches, channels): packed row-major
        patches = array.shape[1]
        width, height = size
        side = math.sqrt(width * height / patches)
        rows, columns = round(height / side), round(width / side)
        if rows * columns != patches:
            return None
        return array[0], rows, columns
    return None


class LatentPreviews:
    """The fitted map of one pipeline. Like the engine that holds it, used by one job at a time."""

    def __init__(self) -> None:
        self._xtx: np.ndarray | None = None
        self._xty: np.ndarray | None = None
        self._weights: np.ndarray | None = None

    def draw(self, latents: Any, size: tuple[int, int]) -> Image.Image | None:
        """The preview of these latents, at the latent grid's size; None before the first fit or
        for latents of another layout than the fitted one."""
        from PIL import Image as PILImage

        weights = self._weights
        if weights is None:  # nothing learnt yet: the latents are not even copied
            return None
        grid = latent_grid(latents, size)
        if grid is None:
            return None
        features, rows, columns = grid
        if features.shape[1] + 1 != weights.shape[0]:
            return None
        rgb = _with_bias(features) @ weights
        pixels = (np.clip(rgb, 0.0, 1.0) * 255).round().astype(np.uint8).reshape(rows, columns, 3)
        return PILImage.fromarray(pixels, "RGB")

    def learn(self, latents: Any, image: Image.Image) -> None:
        """Add one finished job: the latents of its last step and the picture they decoded to."""
        from PIL import Image as PILImage

        grid = latent_grid(latents, image.size)
        if grid is None:
            return
        features, rows, columns = grid
        x = _with_bias(features).astype(np.float64)
        if not np.isfinite(x).all():  # a run that overflowed would spoil every later preview
            return
        shrunk = image.convert("RGB").resize((columns, rows), PILImage.Resampling.BOX)
        y = np.asarray(shrunk, dtype=np.float64).reshape(rows * columns, 3) / 255.0
        if self._xtx is None or self._xtx.shape[0] != x.shape[1]:
            self._xtx, self._xty = np.zeros((x.shape[1],) * 2), np.zeros((x.shape[1], 3))
        assert self._xty is not None
        self._xtx += x.T @ x
        self._xty += x.T @ y
        ridge = RIDGE * float(np.trace(self._xtx)) / len(self._xtx)
        self._weights = np.linalg.solve(self._xtx + ridge * np.eye(len(self._xtx)), self._xty).astype(
            np.float32
        )


def _with_bias(features: np.ndarray) -> np.ndarray:
    return np.concatenate([features, np.ones((len(features), 1), dtype=features.dtype)], axis=1)
