"""An engine that answers at once: the benchmarks measure the API and the queue, not a model."""

from __future__ import annotations

from PIL import Image

from daguerre.engine import EngineJob, StepHook


class InstantEngine:
    def generate(self, job: EngineJob, on_step: StepHook) -> Image.Image:
        on_step(1, 1)
        return Image.new("RGB", (64, 64), (200, 30, 30))
