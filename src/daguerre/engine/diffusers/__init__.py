"""The diffusers adapter: text-to-image and instruction edits with any `DiffusionPipeline`.

A model's pipeline (`pipeline`, `weights`) is loaded once and reused for every job. Edits use:

* the same pipeline with `image=` when it takes an image (unified pipelines such as FLUX.2 [klein]:
  one warm pipeline serves both types), unless
* `edit_pipeline` (and optionally `edit_weights`) names a separate edit pipeline (Qwen-Image-Edit,
  InstructPix2Pix), loaded on the first edit.

Edits keep the source's aspect ratio: the output is the source's size rounded to the model's
multiple, scaled down to the model's size class when larger. With `references = true`, `image_ref`
images are passed as extra images to pipelines whose `image` argument takes a list; otherwise they
are not used (which the models configuration documents).

Weights come from a local folder or the Hugging Face cache; downloads only when the deployment
allows them. Progress and cancellation go through `callback_on_step_end`: the worker's step hook
may raise `Cancelled`, which leaves the pipeline at once, before the VAE decode. The callback also
offers a preview of each step's latents through a latent->RGB map the engine learns from its own
finished pictures (engine.diffusers.previews).
"""

from __future__ import annotations

import gc
import inspect
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daguerre.engine.base import EngineJob, StepHook
from daguerre.engine.config import ModelSpec
from daguerre.engine.diffusers.previews import LatentPreviews
from daguerre.errors import JobFailure
from daguerre.sizing import fit_size
from daguerre.wire import FailureCode, GenerationType

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)


def _is_local(weights: str) -> bool:
    return weights.startswith(("/", ".", "~")) or Path(weights).exists()


def missing_weights_reason(name: str, weights: str) -> str:
    if _is_local(weights):
        where = f"the folder {weights} does not hold a diffusers pipeline (model_index.json)"
        fix = "point `weights` in the models file at a folder written by `save_pretrained`"
    else:
        where = f"{weights!r} is not in the local Hugging Face cache"
        fix = (
            f"download it first (`hf download {weights}`), point `weights` in the models file at a "
            "local folder, or set DAGUERRE_ALLOW_DOWNLOADS=1 to fetch it on first use"
        )
    return f"Model '{name}' has no weights: {where}; {fix}."


def load_pipeline(name: str, class_name: str, weights: str, spec: ModelSpec, allow_downloads: bool) -> Any:
    """A diffusers pipeline on the spec's device, or a JobFailure saying what is missing."""
    import diffusers
    import torch
    import transformers

    pipeline_class: Any = getattr(diffusers, class_name, None)
    if not (inspect.isclass(pipeline_class) and issubclass(pipeline_class, diffusers.DiffusionPipeline)):
        raise JobFailure(
            FailureCode.GENERATION_FAILED, f"Model '{name}': {class_name!r} is not a diffusers pipeline class"
        )
    diffusers.utils.logging.disable_progress_bar()  # no tqdm bars in a server's log
    transformers.utils.logging.disable_progress_bar()
    device = _device(spec.device, torch)
    dtype = _dtype(spec.dtype, device, torch)
    if _is_local(weights) and not (Path(weights).expanduser() / "model_index.json").is_file():
        raise JobFailure(FailureCode.GENERATION_FAILED, missing_weights_reason(name, weights))
    try:
        loader: Any = pipeline_class  # (the issubclass check above narrows it to type[object])
        pipe = loader.from_pretrained(
            str(Path(weights).expanduser()) if _is_local(weights) else weights,
            revision=spec.revision,
            dtype=dtype,
            local_files_only=not allow_downloads,
        )
    except OSError as exc:  # what diffusers and huggingface_hub raise for files that are not there
        log.warning("loading %s failed: %s", name, exc)
        raise JobFailure(FailureCode.GENERATION_FAILED, missing_weights_reason(name, weights)) from exc
    except Exception as exc:
        log.exception("loading %s failed", name)
        raise JobFailure(
            FailureCode.GENERATION_FAILED, f"Model '{name}' could not be loaded from {weights}: {exc}"
        ) from exc
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    log.info("loaded %s: %s from %s on %s (%s)", name, class_name, weights, device, dtype)
    return pipe


def _parameters(pipe: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(pipe.__call__).parameters)


def _takes_image_list(parameter: inspect.Parameter | None) -> bool:
    return parameter is not None and "list" in str(parameter.annotation)


class DiffusersEngine:
    """Loaded diffusers pipelines serving one public model name."""

    def __init__(self, spec: ModelSpec, *, allow_downloads: bool = False) -> None:
        import torch

        assert spec.pipeline is not None and spec.weights is not None
        self.spec = spec
        self._allow_downloads = allow_downloads
        self._torch = torch
        self.pipe = load_pipeline(spec.name, spec.pipeline, spec.weights, spec, allow_downloads)
        self._edit_pipe: Any = None
        self._previews: dict[int, LatentPreviews] = {}
        """Per pipeline object (the main one, the edit one): its fitted latent->RGB map."""
        self._edit_lock = threading.Lock()

    def _edit_pipeline(self) -> Any:
        """The pipeline that serves edits: the separate edit pipeline, or the main one if it takes images."""
        if self.spec.edit_pipeline is None:
            if "image" not in _parameters(self.pipe):
                raise JobFailure(
                    FailureCode.INVALID_REQUEST,
                    f"Model '{self.spec.name}' is configured with {self.spec.pipeline}, "
                    "which does not do image_edit",
                )
            return self.pipe
        with self._edit_lock:
            if self._edit_pipe is None:
                weights = self.spec.edit_weights or self.spec.weights or ""
                self._edit_pipe = load_pipeline(
                    self.spec.name, self.spec.edit_pipeline, weights, self.spec, self._allow_downloads
                )
            return self._edit_pipe

    def generate(self, job: EngineJob, on_step: StepHook) -> Image.Image:
        spec = self.spec
        prompt = job.prompt
        suffix = spec.style_prompts.get(job.style)
        if suffix:
            prompt = f"{prompt}, {suffix}"
        if job.type == GenerationType.IMAGE_EDIT:
            assert job.source is not None
            pipe = self._edit_pipeline()
            width, height = fit_size(
                *job.source.size, spec.pixels, spec.multiple, min_pixels=spec.pixels // 4
            )
            steps = spec.edit_steps or spec.steps
            guidance = (
                spec.edit_guidance_scale if spec.edit_guidance_scale is not None else spec.guidance_scale
            )
            extra = {**spec.call, **spec.edit_call} if pipe is self.pipe else dict(spec.edit_call)
        else:
            assert job.aspect_ratio is not None
            pipe = self.pipe
            width, height = spec.size_for(job.aspect_ratio)
            steps, guidance, extra = spec.steps, spec.guidance_scale, dict(spec.call)
        parameters = _parameters(pipe)
        kwargs: dict[str, Any] = {
            "prompt": prompt,
            "num_inference_steps": steps,
            "generator": self._torch.Generator("cpu").manual_seed(job.seed),
            "output_type": "pil",
            **extra,
        }
        if "width" in parameters:
            kwargs["width"], kwargs["height"] = width, height
        if guidance is not None:
            kwargs["guidance_scale"] = guidance
        images = self._images(job, parameters, (width, height))
        if images is not None:
            kwargs["image"] = images
        previews = self._previews.setdefault(id(pipe), LatentPreviews())
        last_latents: list[Any] = []
        if "callback_on_step_end" in parameters:

            def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                latents = tensors.get("latents")
                if latents is not None:
                    last_latents[:] = [latents]
                on_step(
                    step + 1,
                    int(getattr(pipe, "num_timesteps", steps) or steps),
                    preview=None if latents is None else lambda: previews.draw(latents, (width, height)),
                )
                return tensors

            kwargs["callback_on_step_end"] = callback
        out_of_memory = False
        try:
            with self._torch.inference_mode():
                result = pipe(**kwargs).images
        except self._torch.OutOfMemoryError:
            out_of_memory = True
        except ValueError as exc:  # diffusers' check_inputs: the message names the argument
            raise JobFailure(FailureCode.GENERATION_FAILED, f"Generation failed: {exc}") from exc
        except RuntimeError as exc:  # MPS and cuBLAS say it in a plain RuntimeError
            if "out of memory" not in str(exc).lower():
                raise
            out_of_memory = True
        if out_of_memory:  # past the handler, nothing holds the failed run's tensors any more
            last_latents.clear()
            self._release_memory()
            raise JobFailure(
                FailureCode.GENERATION_FAILED, f"Generation failed: out of memory at {width}x{height}"
            )
        image: Image.Image = result[0]
        if image.size != (width, height):
            from PIL import Image as PILImage

            image = image.resize((width, height), PILImage.Resampling.LANCZOS)
        if last_latents:  # the last step's latents and what they decoded to: the previews' lesson
            try:
                previews.learn(last_latents[0], image)
            except Exception:  # previews are never worth a finished picture
                log.exception("%s: learning previews from %s failed", spec.name, job.id)
        return image

    def _release_memory(self) -> None:
        """Give the memory of a run that ran out of it back to the device, so that the next job
        starts from what the loaded pipelines need (a CUDA cache left full fails it too)."""
        gc.collect()
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()
        if self._torch.backends.mps.is_available():
            self._torch.mps.empty_cache()

    def _images(self, job: EngineJob, parameters: dict[str, inspect.Parameter], size: tuple[int, int]) -> Any:
        """What goes to the pipeline's `image` argument: the source at the output size, plus the
        references when the model uses them."""
        from PIL import Image as PILImage

        references = list(job.references) if self.spec.references else []
        source = job.source
        if source is not None and source.size != size:
            source = source.resize(size, PILImage.Resampling.LANCZOS)  # pipelines draw at the source's size
        images = ([source] if source is not None else []) + references
        if not images or "image" not in parameters:
            return None
        if len(images) == 1 and not references:
            return images[0]
        if not _takes_image_list(parameters["image"]):
            return images[0]
        return images


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
