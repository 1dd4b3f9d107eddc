"""The engine port: a request and its input images in, one image out.

An engine knows nothing of SQL, blobs, HTTP or leases. Beyond `on_step`, which reports progress (and
offers a preview of the picture so far) and may raise `Cancelled` to stop the run at once, its only
contact with the rest of daguerre is the `EngineJob` it is given and the image it returns. Torch is
imported only by implementations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from daguerre.wire import GenerationType

if TYPE_CHECKING:
    from PIL import Image

DrawPreview = Callable[[], "Image.Image | None"]
"""Draws the picture as it stands after a step (small and rough is fine: it is shown while the job
runs, never delivered); None when the engine cannot draw one yet."""


class StepHook(Protocol):
    """on_step(step, total, preview): called after each denoising step; may raise errors.Cancelled.

    `preview`, where the engine can draw one, is called by the hook only when it wants a picture
    (a few times a job at most), so an engine hands over the means and does no work of its own."""

    def __call__(self, step: int, total: int, /, preview: DrawPreview | None = None) -> None: ...


@dataclass(frozen=True)
class EngineJob:
    """Everything an engine needs for one generation, already decoded and normalised."""

    id: str
    model: str
    """The public model name (`uni-1` / `uni-1-max`)."""
    type: GenerationType
    prompt: str
    aspect_ratio: str | None
    """One of the nine ratios for `image`; None for `image_edit` (the source decides)."""
    style: str = "auto"
    source: Image.Image | None = None
    references: tuple[Image.Image, ...] = field(default_factory=tuple)
    seed: int = 0
    """Derived from the generation id, so a retried job draws the same image."""


class Engine(Protocol):
    """One loaded model. Not thread-safe: a worker calls one `generate` at a time."""

    def generate(self, job: EngineJob, on_step: StepHook) -> Image.Image: ...


def seed_for(generation_id: str) -> int:
    """A stable 32-bit seed from a generation id."""
    return int.from_bytes(hashlib.sha256(generation_id.encode()).digest()[:4], "big")
