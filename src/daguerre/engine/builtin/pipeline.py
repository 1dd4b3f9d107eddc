"""`BuiltinPipeline`: the built-in model as a diffusers pipeline (save_pretrained / from_pretrained).

    pipe = BuiltinPipeline.from_pretrained(folder)
    out = pipe(prompt="a red star on a blue background", width=96, height=96, num_inference_steps=8)
    out.images[0]                                  # PIL image at width x height
    pipe(prompt="make the star green", image=source, width=96, height=96)   # an edit

One call: encode the prompt, predict the layout and sample it; for an edit, read the source picture
back into a scene and apply the predicted edit to it instead. Render the layout as maps (and, for
an edit, the kept part of the source), then integrate the rectified flow from noise to image with
Euler steps.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, UNet2DModel
from diffusers.utils.outputs import BaseOutput
from PIL import Image
from transformers import BertModel, PreTrainedTokenizerFast

from daguerre.engine.builtin import scenes
from daguerre.engine.builtin.analysis import analyse, classifier, to_scene
from daguerre.engine.builtin.editing import apply_edit, keep_mask
from daguerre.engine.builtin.model import (
    EDIT_CHANNELS,
    SLOTS,
    Layout,
    LayoutModel,
    LayoutPrediction,
    edit_channels,
    predict_clean,
)
from daguerre.engine.builtin.text import encode_prompts
from daguerre.sizing import fit_size, nearest_ratio

ANALYSIS_PIXELS = 192 * 192
"""A source picture larger than this is read at this size."""


@dataclass
class BuiltinOutput(BaseOutput):
    images: list[Image.Image]
    layouts: list[scenes.Scene]


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def to_image(tensor: torch.Tensor) -> Image.Image:
    array = ((tensor[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


class BuiltinPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->layout->unet"
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents"]
    # registered by __init__ (declared here for type checkers)
    tokenizer: PreTrainedTokenizerFast
    text_encoder: BertModel
    layout: LayoutModel
    unet: UNet2DModel
    scheduler: FlowMatchEulerDiscreteScheduler

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerFast,
        text_encoder: BertModel,
        layout: LayoutModel,
        unet: UNet2DModel,
        scheduler: FlowMatchEulerDiscreteScheduler,
    ) -> None:
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer, text_encoder=text_encoder, layout=layout, unet=unet, scheduler=scheduler
        )

    # Text (and source image) -> layout ------------------------------------------------------------

    def encode(self, prompts: list[str], ratios: list[str], edit: bool = False) -> torch.Tensor:
        """The text encoder's states; edit instructions are marked with token type 1."""
        device = self.text_encoder.device
        ids, mask = encode_prompts(self.tokenizer, prompts, ratios)
        ids, mask = ids.to(device), mask.to(device)
        embeds = self.layout.mix_phrases(self.text_encoder.embeddings.word_embeddings(ids))
        types = torch.full_like(ids, 1 if edit else 0)
        output = self.text_encoder(inputs_embeds=embeds, attention_mask=mask, token_type_ids=types)
        states: torch.Tensor = output.last_hidden_state
        return states

    def sample_layout(
        self, prediction: LayoutPrediction, ratio: str, rng: random.Random, temperature: float = 0.5
    ) -> scenes.Scene:
        """One layout from the first row of `prediction`: the most likely kinds and colours, and
        positions and sizes drawn from the predicted Gaussians, redrawn while shapes overlap."""
        exists = (prediction.exists_logit[0] > 0).tolist()
        kinds = prediction.shape_logits[0].argmax(-1).tolist()
        colours = prediction.colour_logits[0].argmax(-1).tolist()
        mean = prediction.geometry_mean[0].tolist()
        std = prediction.geometry_log_std[0].exp().tolist()
        placed: list[scenes.Shape] = []
        for k in range(SLOTS):
            if not exists[k]:
                continue
            candidate = None
            for attempt in range(40):
                scale = temperature * (0.0 if attempt == 39 else 1.0 + attempt / 10)
                x, y, r = (m + scale * s * rng.gauss(0, 1) for m, s in zip(mean[k], std[k], strict=True))
                r = min(max(r, 0.05), 0.3)
                x, y = scenes.clamp_inside(x, y, r, ratio)
                candidate = scenes.Shape(scenes.SHAPES[kinds[k]], scenes.COLOURS[colours[k]], x, y, r)
                if not any(scenes.overlaps(candidate, other, ratio, gap=0.0) for other in placed):
                    break
            assert candidate is not None
            placed.append(candidate)
        background = scenes.COLOURS[int(prediction.background_logits[0].argmax())]
        return scenes.Scene(background, tuple(placed), ratio)

    # Layout -> image ------------------------------------------------------------------------------

    def layout_tensors(self, scene: scenes.Scene) -> Layout:
        return layout_from_scenes([scene], device=self.unet.device)

    def read_scene(self, image: Image.Image, ratio: str) -> tuple[scenes.Scene, np.ndarray]:
        """The scene a picture shows, and its background colour as it appears there."""
        if image.width * image.height > ANALYSIS_PIXELS:
            image = image.resize(
                fit_size(image.width, image.height, ANALYSIS_PIXELS, 1), Image.Resampling.BOX
            )
        analysis = analyse(image, classifier(self.layout.shape_reader.eval()))
        return to_scene(analysis, ratio), analysis.background_rgb

    def edit_scene(
        self, prompt: str, image: Image.Image, width: int, height: int, rng: random.Random, temperature: float
    ) -> tuple[scenes.Scene, torch.Tensor]:
        """The edited scene, and the edit channels for the denoiser at width x height."""
        ratio = nearest_ratio(width, height)
        before, background_rgb = self.read_scene(image, ratio)
        prediction = self.layout.predict(self.encode([prompt], [ratio], edit=True))
        after = apply_edit(before, prediction, rng, temperature)
        source = image.convert("RGB").resize((width, height), Image.Resampling.BOX)
        keep = keep_mask(before, after, np.asarray(source), background_rgb)
        channels = edit_channels(to_tensor(source), torch.from_numpy(keep)[None, None])
        return after, channels.to(self.unet.device)

    @torch.inference_mode()
    def __call__(
        self,
        prompt: str,
        width: int,
        height: int,
        num_inference_steps: int = 8,
        image: Image.Image | None = None,
        generator: torch.Generator | None = None,
        temperature: float = 0.5,
        callback_on_step_end: Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]] | None = None,
        output_type: str = "pil",
    ) -> BuiltinOutput:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
        rng = random.Random(seed)
        if image is not None:
            scene, edit = self.edit_scene(prompt, image, width, height, rng, temperature)
        else:
            ratio = nearest_ratio(width, height)
            prediction = self.layout.predict(self.encode([prompt], [ratio]))
            scene = self.sample_layout(prediction, ratio, rng, temperature)
            edit = torch.zeros(1, EDIT_CHANNELS, height, width, device=self.unet.device)  # nothing kept
        conditioning = self.layout.conditioning(self.layout_tensors(scene), edit, width, height)
        latents = torch.randn((1, 3, height, width), generator=generator).to(self.unet.device)
        self.scheduler.set_timesteps(num_inference_steps, device=self.unet.device)
        self._num_timesteps = len(self.scheduler.timesteps)
        for i, t in enumerate(self.scheduler.timesteps):
            sigma = float(self.scheduler.sigmas[i])
            t_now = torch.full((1,), sigma, device=latents.device)
            clean = predict_clean(self.unet, latents, conditioning, t_now)
            velocity = (latents - clean) / sigma  # the flow's velocity; sigma > 0 at every step
            latents = self.scheduler.step(velocity, t, latents).prev_sample
            if callback_on_step_end is not None:
                callback_on_step_end(self, i, t, {"latents": latents})
        return BuiltinOutput(images=[to_image(latents)], layouts=[scene])

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps


def layout_from_scenes(batch: list[scenes.Scene], device: torch.device | str = "cpu") -> Layout:
    """Ground-truth (or sampled) scenes as layout tensors; slots beyond a scene's shapes are empty."""
    n = len(batch)
    exists = torch.zeros(n, SLOTS, dtype=torch.long)
    shape = torch.zeros(n, SLOTS, dtype=torch.long)
    colour = torch.zeros(n, SLOTS, dtype=torch.long)
    geometry = torch.zeros(n, SLOTS, 3)
    background = torch.zeros(n, dtype=torch.long)
    for i, scene in enumerate(batch):
        background[i] = scenes.COLOURS.index(scene.background)
        for k, s in enumerate(scene.shapes[:SLOTS]):
            exists[i, k] = 1
            shape[i, k] = scenes.SHAPES.index(s.kind)
            colour[i, k] = scenes.COLOURS.index(s.colour)
            geometry[i, k] = torch.tensor([s.x, s.y, s.radius])
    layout = Layout(exists, shape, colour, geometry[..., 0], geometry[..., 1], geometry[..., 2], background)
    return layout.to(device)
