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
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, UNet2DModel
from diffusers.utils.outputs import BaseOutput
from PIL import Image
from transformers import BertModel, PreTrainedTokenizerFast

from daguerre.engine.builtin import scenes
from daguerre.engine.builtin.analysis import Analysis, analyse, classifier, to_scene
from daguerre.engine.builtin.editing import apply_edit, keep_mask
from daguerre.engine.builtin.model import (
    EDIT_CHANNELS,
    RELATION_CLASSES,
    SLOTS,
    Layout,
    LayoutModel,
    LayoutPrediction,
    edit_channels,
    predict_clean,
)
from daguerre.engine.builtin.text import Reading, encode_prompts, read
from daguerre.sizing import fit_size, nearest_ratio

ANALYSIS_PIXELS = 192 * 192
"""A source picture larger than this is read at this size."""
PAINT_SUPERSAMPLE = 3
"""The final picture is painted at this many times its size and reduced (3x3 coverage levels)."""
LAYOUT_TRIES = 200


class CannotDraw(ValueError):
    """The request is outside what the built-in model draws; the message says what it draws."""


WORLD = (
    "The built-in model draws flat shapes (circle, square, triangle, star, heart, hexagon, pentagon, "
    "diamond, rectangle, ellipse, cross, crescent, arrow) in named colours on a plain background, "
    "and edits such pictures"
)
REAL_MODEL = "for other pictures configure a real model such as FLUX.2 klein (see docs/models.md)"


@dataclass
class BuiltinOutput(BaseOutput):
    images: list[Image.Image]
    """The pictures at the output size: painted from the denoised picture and the layout."""
    layouts: list[scenes.Scene]
    drawn: list[Image.Image]
    """The denoiser's pictures at the size it draws (before painting)."""
    readings: list[Reading]


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def to_image(tensor: torch.Tensor) -> Image.Image:
    array = ((tensor[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


class BuiltinPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->layout->unet"
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents", "clean"]
    """`clean` is the denoiser's guess of the finished picture at that step (previews show it)."""
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
        ids, mask = encode_prompts(self.tokenizer, prompts, ratios, drop_unknown=not self.layout.training)
        ids, mask = ids.to(device), mask.to(device)
        embeds = self.layout.mix_phrases(self.text_encoder.embeddings.word_embeddings(ids))
        types = torch.full_like(ids, 1 if edit else 0)
        output = self.text_encoder(inputs_embeds=embeds, attention_mask=mask, token_type_ids=types)
        states: torch.Tensor = output.last_hidden_state
        return states

    def read_prompt(self, prompt: str, edit: bool) -> Reading:
        """How the model reads the prompt; raises CannotDraw when it names nothing it can draw (a
        prompt needs a shape, or a colour for its background; an instruction any word it knows)."""
        reading = read(self.tokenizer, prompt)
        if edit:
            if not reading.known or all(word in FUNCTION_WORDS for word in reading.known):
                raise CannotDraw(
                    f"{WORLD}; it does not understand the instruction '{_quote(prompt)}'; {REAL_MODEL}"
                )
        elif not (reading.names_a_shape or (reading.names_a_colour and "background" in reading.known)):
            raise CannotDraw(f"{WORLD}; the prompt '{_quote(prompt)}' names none of its shapes; {REAL_MODEL}")
        return reading

    def sample_layout(
        self, prediction: LayoutPrediction, ratio: str, rng: random.Random, temperature: float = 0.5
    ) -> scenes.Scene:
        """One layout from the first row of `prediction`: the most likely kinds, colours and fills,
        positions and sizes drawn from the predicted Gaussians, redrawn (more and more freely, every
        other time placing the first object by the relation itself) until no shapes overlap and the
        predicted relation between the first named objects holds; the most likely background that
        is no object's colour."""
        exists = (prediction.exists_logit[0] > 0).tolist()
        slots = [k for k in range(SLOTS) if exists[k]]
        kinds = prediction.shape_logits[0].argmax(-1).tolist()
        colours = prediction.colour_logits[0].argmax(-1).tolist()
        filled = (prediction.filled_logit[0] > 0).tolist()
        mean = prediction.geometry_mean[0].tolist()
        std = prediction.geometry_log_std[0].exp().tolist()
        relation_kind = RELATION_CLASSES[int(prediction.relation_logits[0].argmax())]
        relation = None
        if relation_kind != "none" and len(slots) >= (3 if relation_kind == "between" else 2):
            relation = scenes.Relation(0, relation_kind, 1, 2 if relation_kind == "between" else None)
        # The most likely background that is no object's colour (an object never vanishes into it).
        taken = {scenes.COLOURS[colours[k]] for k in slots}
        ranked = prediction.background_logits[0].argsort(descending=True).tolist()
        background = next(scenes.COLOURS[i] for i in ranked if scenes.COLOURS[i] not in taken)
        fallback: list[scenes.Shape] | None = None
        placed: list[scenes.Shape] = []
        tight = relation is not None and relation.relation in ("next to", "on top of")
        for attempt in range(LAYOUT_TRIES):
            scale = temperature * (1.0 + attempt / 20)
            placed = []
            for k in slots:
                x, y, r = (m + scale * s * rng.gauss(0, 1) for m, s in zip(mean[k], std[k], strict=True))
                r = min(max(r, 0.05), 0.3)
                x, y = scenes.clamp_inside(x, y, r, ratio)
                placed.append(
                    scenes.Shape(
                        scenes.SHAPES[kinds[k]], scenes.COLOURS[colours[k]], x, y, r, filled=filled[k]
                    )
                )
            if relation is not None and attempt % 2 == 1:
                # Every other try realises the relation directly, as the scene generator does.
                if relation.relation == "between":
                    placed = scenes.place_between(rng, placed, ratio)
                else:
                    x, y = scenes.place_relative(rng, relation.relation, placed[1], placed[0].radius, ratio)
                    placed[0] = replace(placed[0], x=x, y=y)
            inside = all(scenes.fits(s.x, s.y, s.radius, ratio, margin=0.0) for s in placed)
            clear = inside and not any(
                scenes.overlaps(a, b, ratio, gap=0.0 if tight and (i, j) == (0, 1) else 0.01)
                for i, a in enumerate(placed)
                for j, b in enumerate(placed)
                if i < j
            )
            if clear and fallback is None:
                fallback = placed
            if clear and (relation is None or scenes.satisfies(relation, placed, ratio)):
                break
        else:
            placed = fallback or placed  # no layout showed the relation: at least no overlaps
        return scenes.Scene(background, tuple(placed), ratio, relation)

    # Layout -> image ------------------------------------------------------------------------------

    def layout_tensors(self, scene: scenes.Scene) -> Layout:
        return layout_from_scenes([scene], device=self.unet.device)

    def read_scene(self, image: Image.Image, ratio: str) -> tuple[scenes.Scene, np.ndarray]:
        """The scene a picture shows, and its background colour as it appears there. Raises
        CannotDraw for a picture that is not flat shapes on a plain background (a photo)."""
        if image.width * image.height > ANALYSIS_PIXELS:
            image = image.resize(
                fit_size(image.width, image.height, ANALYSIS_PIXELS, 1), Image.Resampling.BOX
            )
        analysis = analyse(image, classifier(self.layout.shape_reader.eval()))
        flat = flatness(image, analysis)
        if flat < FLAT_ENOUGH:
            raise CannotDraw(
                f"{WORLD}; the source image is not such a picture (only {flat:.0%} of it is flat colour), "
                f"so it cannot be edited as asked; {REAL_MODEL}"
            )
        return to_scene(analysis, ratio, max_objects=SLOTS), analysis.background_rgb

    def edit_scene(
        self, prompt: str, image: Image.Image, width: int, height: int, rng: random.Random, temperature: float
    ) -> tuple[scenes.Scene, scenes.Scene, torch.Tensor, np.ndarray]:
        """The scene before and after the edit, the edit channels for the denoiser at width x
        height, and the source's background colour."""
        ratio = nearest_ratio(width, height)
        before, background_rgb = self.read_scene(image, ratio)
        prediction = self.layout.predict(self.encode([prompt], [ratio], edit=True))
        after = apply_edit(before, prediction, rng, temperature)
        source = image.convert("RGB").resize((width, height), Image.Resampling.BOX)
        keep = keep_mask(before, after, np.asarray(source), background_rgb)
        channels = edit_channels(to_tensor(source), torch.from_numpy(keep)[None, None])
        return before, after, channels.to(self.unet.device), background_rgb

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
        style: str = "auto",
        output_size: tuple[int, int] | None = None,
    ) -> BuiltinOutput:
        """Draw at width x height and paint the result at `output_size` (default: the same)."""
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())
        rng = random.Random(seed)
        reading = self.read_prompt(prompt, edit=image is not None)
        before: scenes.Scene | None = None
        if image is not None:
            before, scene, edit, background_rgb = self.edit_scene(
                prompt, image, width, height, rng, temperature
            )
            scene = replace(scene, style=style)
        else:
            ratio = nearest_ratio(width, height)
            prediction = self.layout.predict(self.encode([prompt], [ratio]))
            scene = replace(self.sample_layout(prediction, ratio, rng, temperature), style=style)
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
                callback_on_step_end(self, i, t, {"latents": latents, "clean": clean})
        drawn = to_image(latents)
        size = output_size or (width, height)
        if before is None:
            painted = paint(scene, drawn, size)
        else:
            assert image is not None
            painted = paint_edit(before, scene, drawn, image, size, background_rgb)
        return BuiltinOutput(images=[painted], layouts=[scene], drawn=[drawn], readings=[reading])

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps


FUNCTION_WORDS = frozenset(
    {"a", "an", "the", "one", "of", "on", "in", "at", "to", "and", "with", "it", "its", "is", "be"}
    | {"should", "please", "this", "that", "there"}
)
FLAT_ENOUGH = 0.85
"""The share of a source picture that must be flat colour (background or an object) to edit it."""


def _quote(prompt: str, limit: int = 60) -> str:
    return prompt if len(prompt) <= limit else prompt[: limit - 1] + "…"


def flatness(image: Image.Image, analysis: Analysis) -> float:
    """The share of pixels within a small distance of the flat colour they belong to (the
    background's or their object's): near 1 for this world's pictures, low for photographs."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    expected = np.broadcast_to(analysis.background_rgb, pixels.shape).copy()
    for region in analysis.regions:
        expected[region.mask] = np.median(pixels[region.mask], axis=0)
    close = np.sqrt(((pixels - expected) ** 2).sum(-1)) < FLAT_DISTANCE
    # Anti-aliased edges are neither colour: do not count pixels next to a colour change.
    edges = np.zeros(close.shape, dtype=bool)
    change = np.abs(np.diff(expected, axis=0)).sum(-1) > 0
    edges[1:] |= change
    edges[:-1] |= change
    change = np.abs(np.diff(expected, axis=1)).sum(-1) > 0
    edges[:, 1:] |= change
    edges[:, :-1] |= change
    return float(close[~edges].mean()) if (~edges).any() else 0.0


FLAT_DISTANCE = 40.0


def tones(scene: scenes.Scene, drawn: Image.Image) -> list[tuple[float, float, float]]:
    """The colours the denoiser drew: the background's (the median of the pixels no shape is near),
    then each shape's, unmixed from the background. At the drawn size an outline is a line a pixel
    or two wide whose pixels are part shape, part background: with the shape's coverage `a` of
    each pixel known from the layout, its colour is the least-squares `c` of
    `pixel = a * c + (1 - a) * background` (for a filled shape, about the mean of its interior)."""
    pixels = np.asarray(drawn, dtype=np.float32)
    h, w, _ = pixels.shape
    coverages = [shape_coverage(scene, shape, w, h) for shape in scene.shapes]
    anything = np.zeros((h, w), dtype=np.float32)
    for coverage in coverages:
        anything = np.maximum(anything, coverage)
    clear = ~_grow(anything > 0, 1)
    background = (
        np.median(pixels[clear], axis=0) if clear.sum() >= 4 else np.array(scenes.PALETTE[scene.background])
    )
    out = [tuple(float(v) for v in background)]
    for index, (shape, coverage) in enumerate(zip(scene.shapes, coverages, strict=True)):
        others = sum((c for k, c in enumerate(coverages) if k != index), np.zeros_like(coverage))
        own = np.where((coverage > 0.2) & (others < 0.01), coverage, 0.0)
        if own.sum() < 1.0:  # too small to see at the drawn size
            out.append(tuple(float(v) for v in scenes.PALETTE[shape.colour]))
            continue
        weights = own[..., None]
        colour = (weights * (pixels - (1 - weights) * background)).sum((0, 1)) / (weights**2).sum((0, 1))
        out.append(tuple(float(v) for v in np.clip(colour, 0, 255)))
    return out  # type: ignore[return-value]


def shape_coverage(scene: scenes.Scene, shape: scenes.Shape, width: int, height: int) -> np.ndarray:
    """(H, W) coverage in [0, 1] of one shape drawn as the renderer draws it."""
    lone = scenes.Scene("black", (replace(shape, colour="white"),), scene.ratio)
    drawn = np.asarray(scenes.render(lone, width, height), dtype=np.float32)[..., 0]
    black, white = scenes.PALETTE["black"][0], scenes.PALETTE["white"][0]
    return np.clip((drawn - black) / (white - black), 0.0, 1.0)


def _grow(mask: np.ndarray, steps: int) -> np.ndarray:
    from scipy import ndimage

    return np.asarray(ndimage.binary_dilation(mask, iterations=steps))


def paint(scene: scenes.Scene, drawn: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The final picture at `size`: the layout's shapes drawn anew at that size (crisp, anti-aliased
    edges) in the colours the denoiser drew. In manga style the tones become ink coverage."""
    colours = tones(scene, drawn)
    if scene.style == "manga":
        colours = [_ink_equivalent(c) for c in colours]
    return scenes.render(scene, size[0], size[1], supersample=PAINT_SUPERSAMPLE, tones=colours)


def _ink_equivalent(rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    """A drawn manga grey (paper and ink mixed) as the colour whose manga tone is that ink share."""
    grey = float(np.mean(rgb))
    ink = min(max((scenes.PAPER[0] - grey) / (scenes.PAPER[0] - scenes.INK[0]), 0.0), 1.0)
    return (255 * (1 - ink),) * 3


def paint_edit(
    before: scenes.Scene,
    after: scenes.Scene,
    drawn: Image.Image,
    source: Image.Image,
    size: tuple[int, int],
    background_rgb: np.ndarray,
) -> Image.Image:
    """An edit's final picture: the source where the edit keeps it, the painted edited scene where
    it changes (a new background repaints everything in the source's object colours)."""
    painted = paint(after, drawn, size)
    if before.background != after.background:
        return painted
    original = source.convert("RGB")
    if original.size != size:
        original = original.resize(size, Image.Resampling.LANCZOS)
    pixels = np.asarray(original)
    keep = keep_mask(before, after, pixels, background_rgb)[..., None]
    mixed = pixels * keep + np.asarray(painted, dtype=np.float32) * (1 - keep)
    return Image.fromarray(mixed.round().astype(np.uint8), "RGB")


def layout_from_scenes(batch: list[scenes.Scene], device: torch.device | str = "cpu") -> Layout:
    """Ground-truth (or sampled) scenes as layout tensors; slots beyond a scene's shapes are empty."""
    n = len(batch)
    exists = torch.zeros(n, SLOTS, dtype=torch.long)
    shape = torch.zeros(n, SLOTS, dtype=torch.long)
    colour = torch.zeros(n, SLOTS, dtype=torch.long)
    filled = torch.ones(n, SLOTS, dtype=torch.long)
    geometry = torch.zeros(n, SLOTS, 3)
    background = torch.zeros(n, dtype=torch.long)
    style = torch.zeros(n, dtype=torch.long)
    for i, scene in enumerate(batch):
        background[i] = scenes.COLOURS.index(scene.background)
        style[i] = int(scene.style == "manga")
        for k, s in enumerate(scene.shapes[:SLOTS]):
            exists[i, k] = 1
            shape[i, k] = scenes.SHAPES.index(s.kind)
            colour[i, k] = scenes.COLOURS.index(s.colour)
            filled[i, k] = int(s.filled)
            geometry[i, k] = torch.tensor([s.x, s.y, s.radius])
    layout = Layout(
        exists, shape, colour, geometry[..., 0], geometry[..., 1], geometry[..., 2], background, filled, style
    )
    return layout.to(device)


def relation_labels(batch: list[scenes.Scene]) -> torch.Tensor:
    """Each scene's relation as an index in RELATION_CLASSES (0: none)."""
    return torch.tensor(
        [RELATION_CLASSES.index(s.relation.relation) if s.relation else 0 for s in batch], dtype=torch.long
    )
