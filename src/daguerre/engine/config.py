"""The models configuration: which engine, weights and settings serve each public model name.

A TOML file with one table per public name (`uni-1`, `uni-1-max`). See docs/models.md for every
key and for the production mapping (FLUX.2 klein, Qwen-Image). Example:

    [models."uni-1"]
    engine = "diffusers"
    pipeline = "Flux2KleinPipeline"
    weights = "black-forest-labs/FLUX.2-klein-4B"   # Hub id (from the local cache) or a folder
    steps = 4
    guidance_scale = 1.0
    multiple = 16                                   # width and height are multiples of this
    pixels = 1048576                                # size class: 1024x1024 for 1:1
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from daguerre.sizing import size_table
from daguerre.wire import ASPECT_RATIOS, MODELS

DEFAULT_MODELS_FILE = Path(__file__).with_name("models.default.toml")


class ModelSpec(BaseModel):
    """One public model name's engine and settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    engine: Literal["builtin", "diffusers", "python", "remote"]
    # diffusers
    pipeline: str | None = None
    """A pipeline class name exported by diffusers, e.g. StableDiffusionPipeline."""
    weights: str | None = None
    """A local folder or a Hugging Face Hub id (loaded from the local cache unless downloads are on).
    For the built-in model: another pipeline folder than the shipped one."""
    revision: str | None = None
    steps: int = Field(default=20, ge=1, le=1000)
    guidance_scale: float | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    multiple: int = Field(default=16, ge=1, le=256)
    pixels: int = Field(default=1024 * 1024, ge=64, le=64 * 1024 * 1024)
    output_pixels: int | None = Field(default=None, ge=64, le=64 * 1024 * 1024)
    """Built-in model: area of the delivered image (it draws at `pixels` and resizes up)."""
    temperature: float = Field(default=0.5, ge=0, le=2)
    """Built-in model: how freely positions and sizes vary around the predicted layout."""
    sizes: dict[str, tuple[int, int]] = Field(default_factory=dict)
    """Explicit width/height per ratio; ratios left out follow `pixels` and `multiple`."""
    call: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments for every pipeline call (e.g. true_cfg_scale, negative_prompt)."""
    edit_pipeline: str | None = None
    """A separate pipeline class for image_edit (default: the main pipeline, when it takes an image)."""
    edit_weights: str | None = None
    """Weights of the edit pipeline (default: `weights`)."""
    edit_steps: int | None = Field(default=None, ge=1, le=1000)
    edit_guidance_scale: float | None = None
    edit_call: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments for edit calls (e.g. image_guidance_scale for InstructPix2Pix)."""
    style_prompts: dict[str, str] = Field(
        default_factory=lambda: {"manga": "manga style, black and white ink outlines, screentone shading"}
    )
    """Text appended to the prompt for each `style` (the pipeline has no style input of its own)."""
    references: bool = False
    """Whether `image_ref` images reach this model as conditioning. False: they are accepted and
    stored but not used by this model (documented per model in docs/models.md)."""
    # remote
    base_url: str | None = None
    """Remote: the upstream API root, e.g. https://agents.lumalabs.ai/v1."""
    api_key_env: str | None = None
    """Remote: the environment variable holding the upstream key (keys do not belong in files)."""
    upstream_model: str | None = None
    """Remote: the upstream model name (default: this public name)."""
    poll_s: float = Field(default=2.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=20)
    retry_wait_cap_s: float = Field(default=60.0, ge=0)
    """Remote: the longest wait a Retry-After can impose between retries."""
    # python
    entrypoint: str | None = None
    """`package.module:Factory` for engine = "python": called with `options` as keyword arguments."""
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sizes")
    @classmethod
    def _known_ratios(cls, sizes: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        unknown = set(sizes) - set(ASPECT_RATIOS)
        if unknown:
            raise ValueError(f"unknown aspect ratios: {', '.join(sorted(unknown))}")
        return sizes

    @model_validator(mode="after")
    def _engine_fields(self) -> ModelSpec:
        if self.engine == "diffusers" and not (self.pipeline and self.weights):
            raise ValueError("engine 'diffusers' needs `pipeline` and `weights`")
        if self.engine == "remote" and not (self.base_url and self.api_key_env):
            raise ValueError("engine 'remote' needs `base_url` and `api_key_env`")
        if self.engine == "python" and not (self.entrypoint and ":" in self.entrypoint):
            raise ValueError("engine 'python' needs `entrypoint = \"package.module:Factory\"`")
        for ratio, (w, h) in self.sizes.items():
            if w % self.multiple or h % self.multiple:
                raise ValueError(f"size for {ratio} must be a multiple of {self.multiple}")
        return self

    def size_for(self, ratio: str) -> tuple[int, int]:
        return self.sizes.get(ratio) or size_table(self.pixels, self.multiple)[ratio]


class ModelsConfigError(ValueError):
    """The models file is missing, unreadable or invalid; the message says where and why."""


def load_models_file(path: Path | None = None) -> dict[str, ModelSpec]:
    """Read and validate a models file; every public model name must be configured."""
    path = path or DEFAULT_MODELS_FILE
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelsConfigError(f"cannot read models file {path}: {exc}") from exc
    tables = raw.get("models")
    if not isinstance(tables, dict):
        raise ModelsConfigError(f'{path}: expected [models."uni-1"] and [models."uni-1-max"] tables')
    specs: dict[str, ModelSpec] = {}
    for name, table in tables.items():
        if name not in MODELS:
            raise ModelsConfigError(
                f"{path}: unknown public model name {name!r} (known: {', '.join(MODELS)})"
            )
        try:
            specs[name] = ModelSpec(name=name, **table)
        except (ValidationError, TypeError) as exc:
            raise ModelsConfigError(f"{path}: models.{name}: {exc}") from exc
    missing = set(MODELS) - set(specs)
    if missing:
        raise ModelsConfigError(f"{path}: no configuration for {', '.join(sorted(missing))}")
    return specs
