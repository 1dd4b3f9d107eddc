"""The built-in model: daguerre's own small text-to-image and edit model, shipped inside the package.

It needs no download and runs on a laptop CPU in well under a second. It draws the world it was
trained on: one to four flat shapes (thirteen kinds, filled or outlined) in named colours on a plain
background, placed by name (left, top right, centre...), relative to each other (left of, above,
next to, between...) or counted ("three small yellow stars"), in colour or as manga, and it edits
such pictures (recolour, change the background, move, add, remove, make bigger or smaller). A
prompt that names nothing of that world fails with `generation_failed` and says so. See
docs/builtin-model.md for how it was built and trained, what it can and cannot do, and its scores.

The denoiser draws at a small internal size (the model's `pixels`); the pipeline then paints the
picture at the output size (`output_pixels`) from the layout and the colours the denoiser drew.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daguerre.engine.base import EngineJob, StepHook
from daguerre.engine.builtin.scenes import STYLES
from daguerre.errors import JobFailure
from daguerre.sizing import fit_size, size_table
from daguerre.wire import FailureCode, GenerationType

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

WEIGHTS = Path(__file__).with_name("weights")
"""The shipped pipeline folder, written by `python -m daguerre.engine.builtin.train --export`."""
INTERNAL_MULTIPLE = 8
OUTPUT_MULTIPLE = 16

_load_lock = threading.Lock()


class BuiltinEngine:
    """Serves one public model name with the built-in pipeline.

    steps: Euler steps of the flow; pixels: internal drawing area; output_pixels: area of the
    delivered image; temperature: how freely object positions and sizes vary around the layout
    the model predicts (0: always the most likely layout).
    """

    def __init__(
        self,
        name: str,
        weights: str | None = None,
        steps: int = 8,
        pixels: int = 96 * 96,
        output_pixels: int = 512 * 512,
        temperature: float = 0.5,
    ) -> None:
        import torch

        from daguerre.engine.builtin.pipeline import BuiltinPipeline

        folder = Path(weights).expanduser() if weights else WEIGHTS
        if not (folder / "model_index.json").is_file():
            raise JobFailure(
                FailureCode.GENERATION_FAILED,
                f"Model '{name}': the built-in model's weights are missing from {folder}; reinstall daguerre "
                "or train them with `python -m daguerre.engine.builtin.train --export <folder>`",
            )
        with _load_lock:  # from_pretrained is not safe to run in several threads at once
            self.pipe = BuiltinPipeline.from_pretrained(folder, local_files_only=True)
        self.pipe.set_progress_bar_config(disable=True)
        self.name = name
        self.steps = steps
        self.pixels = pixels
        self.output_pixels = output_pixels
        self.temperature = temperature
        self._torch = torch

    def sizes(self, job: EngineJob) -> tuple[tuple[int, int], tuple[int, int]]:
        """(internal size, output size) for a job: its ratio's sizes, or the source's shape for edits."""
        if job.type == GenerationType.IMAGE_EDIT:
            assert job.source is not None
            width, height = job.source.size
            # An edit of this tier's own output keeps its size exactly (16:9 at 512² is 688x384, a
            # hair over the area fit_size allows).
            own_size = job.source.size in size_table(self.output_pixels, OUTPUT_MULTIPLE).values()
            output = (
                job.source.size
                if own_size
                else fit_size(
                    width, height, self.output_pixels, OUTPUT_MULTIPLE, min_pixels=self.output_pixels // 4
                )
            )
            return (
                fit_size(width, height, self.pixels, INTERNAL_MULTIPLE, min_pixels=self.pixels // 4),
                output,
            )
        assert job.aspect_ratio is not None
        return (
            size_table(self.pixels, INTERNAL_MULTIPLE)[job.aspect_ratio],
            size_table(self.output_pixels, OUTPUT_MULTIPLE)[job.aspect_ratio],
        )

    def generate(self, job: EngineJob, on_step: StepHook) -> Image.Image:
        from daguerre.engine.builtin.pipeline import CannotDraw, to_image

        if job.type == GenerationType.IMAGE_EDIT and job.source is None:
            raise JobFailure(FailureCode.INVALID_REQUEST, "image_edit needs a source image")
        (width, height), output = self.sizes(job)

        def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            clean = tensors["clean"]  # the denoiser's guess of the finished picture, at the drawn size
            on_step(step + 1, pipe.num_timesteps, preview=lambda: to_image(clean))
            return tensors

        try:
            result = self.pipe(
                prompt=job.prompt,
                width=width,
                height=height,
                num_inference_steps=self.steps,
                image=job.source,
                generator=self._torch.Generator("cpu").manual_seed(job.seed),
                temperature=self.temperature,
                callback_on_step_end=callback,
                style=job.style if job.style in STYLES else "auto",
                output_size=output,
            )
        except CannotDraw as refusal:
            raise JobFailure(FailureCode.GENERATION_FAILED, str(refusal)) from None
        reading = result.readings[0]
        if reading.unknown:
            log.info(
                "%s: the built-in model ignored %d word(s) it does not know: %s",
                job.id,
                len(reading.unknown),
                _words(reading.unknown),
            )
        if reading.unread:
            log.warning(
                "%s: the prompt is longer than the built-in model reads; it ignored the last %d word(s): %s",
                job.id,
                len(reading.unread),
                _words(reading.unread),
            )
        image: Image.Image = result.images[0]
        return image


def _words(words: tuple[str, ...], limit: int = 20) -> str:
    shown = " ".join(words[:limit])
    return shown + (f" … (+{len(words) - limit} more)" if len(words) > limit else "")
