"""The diffusers adapter: any text-to-image `DiffusionPipeline`, driven by a ModelSpec.

The pipeline is loaded once (from a local folder or the Hugging Face cache; downloads only when the
deployment allows them) and reused for every job. Progress and cancellation go through
`callback_on_step_end`: the worker's step hook may raise `Cancelled`, which leaves the pipeline at
once, before the VAE decode.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daguerre.engine.base import EngineJob, StepHook
from daguerre.engine.config import ModelSpec
from daguerre.errors import JobFailure
from daguerre.wire import FailureCode, GenerationType

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)


def _is_local(weights: str) -> bool:
    return weights.startswith(("/", ".", "~")) or Path(weights).exists()


def missing_weights_reason(spec: ModelSpec) -> str:
    weights = spec.weights or ""
    if _is_local(weights):
        where = f"the folder {weights} does not hold a diffusers pipeline (model_index.json)"
        fix = "point `weights` in the models file at a folder written by `save_pretrained`"
    else:
        where = f"{weights!r} is not in the local Hugging Face cache"
        fix = (
            f"download it first (`hf download {weights}`), point `weights` in the models file at a "
            "local folder, or set DAGUERRE_ALLOW_DOWNLOADS=1 to fetch it on first use"
        )
    return f"Model '{spec.name}' has no weights: {where}; {fix}."


class DiffusersEngine:
    """A loaded diffusers pipeline serving one public model name."""

    def __init__(self, spec: ModelSpec, *, allow_downloads: bool = False) -> None:
        import diffusers
        import torch

        self.spec = spec
        pipeline_class: Any = getattr(diffusers, spec.pipeline or "", None)
        if not (inspect.isclass(pipeline_class) and issubclass(pipeline_class, diffusers.DiffusionPipeline)):
            raise JobFailure(
                FailureCode.GENERATION_FAILED,
                f"Model '{spec.name}': {spec.pipeline!r} is not a diffusers pipeline class",
            )
        import transformers

        diffusers.utils.logging.disable_progress_bar()  # no tqdm bars in a server's log
        transformers.utils.logging.disable_progress_bar()
        self.device = _device(spec.device, torch)
        dtype = _dtype(spec.dtype, self.device, torch)
        weights = spec.weights or ""
        if _is_local(weights) and not (Path(weights).expanduser() / "model_index.json").is_file():
            raise JobFailure(FailureCode.GENERATION_FAILED, missing_weights_reason(spec))
        try:
            loader: Any = pipeline_class  # (the issubclass check above narrows it to type[object])
            self.pipe = loader.from_pretrained(
                str(Path(weights).expanduser()) if _is_local(weights) else weights,
                revision=spec.revision,
                dtype=dtype,
                local_files_only=not allow_downloads,
            )
        except OSError as exc:  # what diffusers and huggingface_hub raise for files that are not there
            log.warning("loading %s failed: %s", spec.name, exc)
            raise JobFailure(FailureCode.GENERATION_FAILED, missing_weights_reason(spec)) from exc
        except Exception as exc:
            log.exception("loading %s failed", spec.name)
            raise JobFailure(
                FailureCode.GENERATION_FAILED,
                f"Model '{spec.name}' could not be loaded from {spec.weights}: {exc}",
            ) from exc
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        parameters = inspect.signature(self.pipe.__call__).parameters
        self._has_callback = "callback_on_step_end" in parameters
        self._torch = torch
        log.info(
            "loaded %s: %s from %s on %s (%s)", spec.name, spec.pipeline, spec.weights, self.device, dtype
        )

    def generate(self, job: EngineJob, on_step: StepHook) -> Image.Image:
        if job.type != GenerationType.IMAGE:
            raise JobFailure(
                FailureCode.INVALID_REQUEST,
                f"Model '{self.spec.name}' is configured with {self.spec.pipeline}, which does not do "
                f"{job.type.value}",
            )
        assert job.aspect_ratio is not None
        width, height = self.spec.size_for(job.aspect_ratio)
        prompt = job.prompt
        suffix = self.spec.style_prompts.get(job.style)
        if suffix:
            prompt = f"{prompt}, {suffix}"
        kwargs: dict[str, Any] = {
            "prompt": prompt,
            "width": width,
            "height": height,
            "num_inference_steps": self.spec.steps,
            "generator": self._torch.Generator("cpu").manual_seed(job.seed),
            "output_type": "pil",
            **self.spec.call,
        }
        if self.spec.guidance_scale is not None:
            kwargs["guidance_scale"] = self.spec.guidance_scale
        if self._has_callback:

            def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                on_step(step + 1, int(getattr(pipe, "num_timesteps", self.spec.steps) or self.spec.steps))
                return tensors

            kwargs["callback_on_step_end"] = callback
        try:
            with self._torch.inference_mode():
                images = self.pipe(**kwargs).images
        except self._torch.OutOfMemoryError as exc:
            raise JobFailure(
                FailureCode.GENERATION_FAILED, f"Generation failed: out of memory at {width}x{height}"
            ) from exc
        image: Image.Image = images[0]
        return image


def _device(name: str, torch: Any) -> str:
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _dtype(name: str, device: str, torch: Any) -> Any:
    if name == "auto":
        # Half precision is 60-100x slower than float32 on CPUs without AMX/AVX512-BF16.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)
