"""The built-in model's networks: text -> layout -> image, and for edits: picture -> scene -> edit.

Parts, all diffusers / transformers components, saved together as one pipeline:

1. A word-level tokenizer and a small BERT text encoder (`transformers.BertModel`). The input is
   `[CLS] [R:<ratio>] [OBJ1] .. [OBJ4] [BG] <prompt words> [SEP]`; edit instructions are marked
   with token type 1.
2. `LayoutModel` reads the encoder's states at the query tokens. For a prompt it predicts the scene
   layout: per object slot whether it exists, its shape, its colour, and a Gaussian over its centre
   and radius; the background's colour (GLIGEN-style grounding: the prompt becomes explicit object
   slots before any pixel is drawn). For an edit instruction the same heads predict the edit: its
   kind (at [CLS]), the object it refers to ([OBJ1]: shape and colour), the new object or new
   attributes ([OBJ2]: colour, shape, place), the new background ([BG]).
3. Also in `LayoutModel`, a small CNN that names the shape of an object's mask; with it the
   pipeline reads an edit's source picture back into a scene (`analysis.py`) and applies the
   predicted edit to it.
4. A `diffusers.UNet2DModel` denoiser trained with rectified flow, preconditioned as in EDM (see
   `preconditioning`) to predict the clean image; sampling turns that prediction into the flow's
   velocity. It sees the noisy image, the layout rendered as maps (inside each object's disk: the
   offset from its centre in radii, a learned embedding of its shape, its colour; everywhere: the
   background colour), for edits the source image with the parts that change blanked out plus
   the mask of what is kept (as inpainting models see theirs), and each object's silhouette with
   its colour (a semantic map, as SPADE / ControlNet-seg models see theirs). The maps are
   resolution-independent, so one network draws at any size and aspect ratio.

For training, every part is supervised by the scene generator's ground truth; the denoiser is
conditioned on ground-truth layouts. At sampling time it follows the layout (or edited scene) the
text encoder predicted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from PIL import Image, ImageDraw
from torch import nn

from daguerre.engine.builtin.analysis import shape_network
from daguerre.engine.builtin.scenes import (
    COLOURS,
    EDIT_KINDS,
    PALETTE,
    RELATIONS,
    SHAPES,
    outline,
    stroke,
    stroke_width,
)
from daguerre.wire import ASPECT_RATIOS

SLOTS = 4
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[OBJ1]", "[OBJ2]", "[OBJ3]", "[OBJ4]", "[BG]"] + [
    f"[R:{ratio}]" for ratio in ASPECT_RATIOS
]
QUERY_OFFSET = 2  # [CLS] [R:..] come first, then the slot queries and [BG]
MAX_TEXT_TOKENS = 96
RELATION_CLASSES = ("none", *RELATIONS)
"""What the relation head predicts: how the first named object stands to the second (and third)."""
STYLE_CHANNELS = 1  # 1 where the picture is drawn as manga
MASK_RADIUS = 1.4  # object maps cover the disk of this many radii around each centre
EDIT_CHANNELS = 4  # the kept part of an edit's source (3) and the kept mask (1)
UNSHUFFLE = 2  # the denoiser runs at half resolution on 2x2 pixel blocks
SILHOUETTE_CHANNELS = 4  # each object's silhouette (1) and the silhouettes coloured (3)
TEMPLATE_SIZE = 192  # silhouettes are sampled from templates of this many pixels a side


@dataclass
class Layout:
    """A batch of layouts. Shapes: exists/shape/colour (B, SLOTS); x/y/radius (B, SLOTS);
    background (B,). Positions are normalised (x right, y down); radius is a fraction of the short
    side. Missing slots have exists == 0 and are ignored."""

    exists: torch.Tensor
    shape: torch.Tensor
    colour: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    radius: torch.Tensor
    background: torch.Tensor
    filled: torch.Tensor  # (B, SLOTS): 1 filled, 0 outlined
    style: torch.Tensor  # (B,): 1 manga, 0 colour

    def to(self, device: torch.device | str) -> Layout:
        return Layout(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


@dataclass
class LayoutPrediction:
    exists_logit: torch.Tensor  # (B, SLOTS)
    shape_logits: torch.Tensor  # (B, SLOTS, len(SHAPES))
    colour_logits: torch.Tensor  # (B, SLOTS, len(COLOURS))
    geometry_mean: torch.Tensor  # (B, SLOTS, 3): x, y, radius
    geometry_log_std: torch.Tensor  # (B, SLOTS, 3)
    background_logits: torch.Tensor  # (B, len(COLOURS))
    kind_logits: torch.Tensor  # (B, len(EDIT_KINDS)): for edit instructions
    filled_logit: torch.Tensor  # (B, SLOTS)
    relation_logits: torch.Tensor  # (B, len(RELATION_CLASSES)): for prompts


@dataclass
class EditTarget:
    """Ground truth of a batch of edit instructions; each `*_mask` says where a field applies.

    referent: the edited object as the source shows it (recolour, move, remove); new_colour: a
    recolour's colour or an added object's; new_shape, radius: an added object's; x, y: where a
    moved or added object goes; background: a background edit's colour."""

    kind: torch.Tensor
    referent_shape: torch.Tensor
    referent_colour: torch.Tensor
    referent_mask: torch.Tensor
    new_colour: torch.Tensor
    new_colour_mask: torch.Tensor
    new_shape: torch.Tensor
    new_shape_mask: torch.Tensor
    geometry: torch.Tensor  # (B, 3): x, y, radius
    geometry_mask: torch.Tensor  # (B, 3)
    background: torch.Tensor
    background_mask: torch.Tensor
    new_filled: torch.Tensor  # an added object's: 1 filled, 0 outlined
    new_filled_mask: torch.Tensor


class LayoutModel(ModelMixin, ConfigMixin):
    """The layout and edit heads, the shape reader, and the shape embedding of the layout maps."""

    @register_to_config
    def __init__(
        self,
        hidden_size: int = 128,
        num_shapes: int = len(SHAPES),
        num_colours: int = len(COLOURS),
        map_embedding_dim: int = 4,
    ) -> None:
        super().__init__()
        # Each word sees its two neighbours on either side before attention: "a small red star" puts
        # "small red" into the state of "star", so a slot that finds the noun also finds its adjectives.
        self.phrase = nn.Conv1d(hidden_size, hidden_size, kernel_size=5, padding=2)
        self.slot_head = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU())
        self.exists = nn.Linear(hidden_size, 1)
        self.shape = nn.Linear(hidden_size, num_shapes)
        self.colour = nn.Linear(hidden_size, num_colours)
        self.geometry = nn.Linear(hidden_size, 6)
        self.background = nn.Linear(hidden_size, num_colours)
        self.kind = nn.Linear(hidden_size, len(EDIT_KINDS))
        self.filled = nn.Linear(hidden_size, 1)
        self.relation = nn.Linear(hidden_size, len(RELATION_CLASSES))
        self.shape_embedding = nn.Embedding(num_shapes, map_embedding_dim)
        self.shape_reader = shape_network()
        palette = torch.tensor([PALETTE[c] for c in COLOURS], dtype=torch.float32) / 127.5 - 1
        self.register_buffer("palette", palette, persistent=False)
        self.register_buffer("templates", silhouette_templates(), persistent=False)

    @property
    def conditioning_channels(self) -> int:
        """Offsets (2), inside (1), shape embedding, object colour (3), background colour (3); the
        edit channels; the silhouette channels; the style channel."""
        return (
            3
            + int(self.config["map_embedding_dim"])
            + 3
            + 3
            + EDIT_CHANNELS
            + SILHOUETTE_CHANNELS
            + STYLE_CHANNELS
        )

    def conditioning(self, layout: Layout, edit: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """Everything the denoiser sees besides the noisy image, (B, conditioning_channels, H, W).
        (Channels added later come last: a checkpoint trained before they existed warm-starts by
        widening its first convolution with zeros, see `train.warm_start`.)"""
        dx, dy = offsets(layout, width, height)
        style = layout.style.float()[:, None, None, None].expand(-1, STYLE_CHANNELS, height, width)
        return torch.cat([self.maps(layout, dx, dy), edit, self.silhouettes(layout, dx, dy), style], dim=1)

    def mix_phrases(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, T, hidden) word embeddings -> the same with local phrase context added."""
        return embeddings + self.phrase(embeddings.transpose(1, 2)).transpose(1, 2)

    def predict(self, states: torch.Tensor) -> LayoutPrediction:
        """Heads on the encoder's states at [CLS], [OBJ1..4] and [BG]."""
        slots = self.slot_head(states[:, QUERY_OFFSET : QUERY_OFFSET + SLOTS])
        geometry = self.geometry(slots)
        return LayoutPrediction(
            exists_logit=self.exists(slots).squeeze(-1),
            shape_logits=self.shape(slots),
            colour_logits=self.colour(slots),
            geometry_mean=geometry[..., :3],
            geometry_log_std=geometry[..., 3:].clamp(-6, 1),
            background_logits=self.background(states[:, QUERY_OFFSET + SLOTS]),
            kind_logits=self.kind(states[:, 0]),
            filled_logit=self.filled(slots).squeeze(-1),
            relation_logits=self.relation(states[:, 0]),
        )

    def maps(self, layout: Layout, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
        """The layout as (B, 3 + D + 3 + 3, H, W) maps: per object disk and background. `dx`, `dy`
        are the pixels' offsets from the objects (see `offsets`)."""
        height, width = dx.shape[-2:]
        inside = ((dx**2 + dy**2) <= MASK_RADIUS**2).float() * layout.exists[..., None, None].float()
        shape = self.shape_embedding(layout.shape)  # (B, SLOTS, D)
        colour = self.palette[layout.colour]  # (B, SLOTS, 3)
        per_slot = torch.cat(
            [
                (dx * inside)[:, :, None],
                (dy * inside)[:, :, None],
                inside[:, :, None],
                shape[..., None, None] * inside[:, :, None],
                colour[..., None, None] * inside[:, :, None],
            ],
            dim=2,
        )  # (B, SLOTS, 3 + D + 3, H, W)
        objects = per_slot.sum(dim=1)
        background = self.palette[layout.background][..., None, None].expand(-1, -1, height, width)
        return torch.cat([objects, background], dim=1)

    def silhouettes(self, layout: Layout, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
        """(B, SILHOUETTE_CHANNELS, H, W): where each object is (its shape's template, sampled
        bilinearly, so edges are anti-aliased at any size) and the same coloured."""
        b, slots, h, w = dx.shape
        grid = torch.stack([dx, dy], dim=-1).view(b * slots, h, w, 2) / MASK_RADIUS
        template = layout.shape + len(SHAPES) * (1 - layout.filled)  # outlined ones follow the filled
        templates = self.templates[template.view(-1)]  # (B * SLOTS, 1, T, T)
        occupancy = F.grid_sample(templates, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        occupancy = occupancy.view(b, slots, h, w) * layout.exists[..., None, None].float()
        colour = self.palette[layout.colour][..., None, None] * occupancy[:, :, None]  # (B, SLOTS, 3, H, W)
        return torch.cat([occupancy.sum(dim=1, keepdim=True).clamp(max=1), colour.sum(dim=1)], dim=1)

    def loss(
        self, prediction: LayoutPrediction, target: Layout, relation: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Supervised layout losses for prompts (slots in the order the prompt names the objects);
        `relation` is each prompt's index in RELATION_CLASSES."""
        exists = target.exists.float()
        present = exists.bool()
        terms = {
            "exists": F.binary_cross_entropy_with_logits(prediction.exists_logit, exists),
            "background": F.cross_entropy(prediction.background_logits, target.background),
            "relation": F.cross_entropy(prediction.relation_logits, relation),
        }
        if present.any():
            terms["shape"] = F.cross_entropy(prediction.shape_logits[present], target.shape[present])
            terms["colour"] = F.cross_entropy(prediction.colour_logits[present], target.colour[present])
            geometry = torch.stack([target.x, target.y, target.radius], dim=-1)[present]
            mean = prediction.geometry_mean[present]
            log_std = prediction.geometry_log_std[present]
            terms["geometry"] = gaussian_nll(mean, log_std, geometry).mean()
            terms["filled"] = F.binary_cross_entropy_with_logits(
                prediction.filled_logit[present], target.filled[present].float()
            )
        return terms

    def edit_loss(self, prediction: LayoutPrediction, target: EditTarget) -> dict[str, torch.Tensor]:
        """Supervised losses for edit instructions, each field where it applies."""

        def masked_ce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            losses = F.cross_entropy(logits, labels, reduction="none")
            return (losses * mask).sum() / mask.sum().clamp(min=1)

        referent, new = 0, 1
        nll = gaussian_nll(
            prediction.geometry_mean[:, new], prediction.geometry_log_std[:, new], target.geometry
        )
        return {
            "kind": F.cross_entropy(prediction.kind_logits, target.kind),
            "referent": masked_ce(
                prediction.shape_logits[:, referent], target.referent_shape, target.referent_mask
            )
            + masked_ce(prediction.colour_logits[:, referent], target.referent_colour, target.referent_mask),
            "new": masked_ce(prediction.colour_logits[:, new], target.new_colour, target.new_colour_mask)
            + masked_ce(prediction.shape_logits[:, new], target.new_shape, target.new_shape_mask),
            "geometry": (nll * target.geometry_mask).sum() / target.geometry_mask.sum().clamp(min=1),
            "background": masked_ce(prediction.background_logits, target.background, target.background_mask),
            "filled": (
                F.binary_cross_entropy_with_logits(
                    prediction.filled_logit[:, new], target.new_filled.float(), reduction="none"
                )
                * target.new_filled_mask
            ).sum()
            / target.new_filled_mask.sum().clamp(min=1),
        }


def offsets(layout: Layout, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's offset from each object's centre in radii: two (B, SLOTS, H, W) tensors."""
    device = layout.x.device
    short = min(width, height)
    u = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    v = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    radius = layout.radius.clamp(min=1e-3)[..., None, None]
    dx = (u.view(1, 1, 1, -1) - layout.x[..., None, None]) * (width / short) / radius
    dy = (v.view(1, 1, -1, 1) - layout.y[..., None, None]) * (height / short) / radius
    dx, dy = torch.broadcast_tensors(dx, dy)
    return dx, dy


def silhouette_templates(size: int = TEMPLATE_SIZE) -> torch.Tensor:
    """(2 * len(SHAPES), 1, size, size): each shape's coverage over [-MASK_RADIUS, MASK_RADIUS]
    radii, filled then outlined, drawn as the scene generator draws them (4x supersampled)."""
    big = size * 4
    scale = big / (2 * MASK_RADIUS)
    masks = []
    for filled in (True, False):
        for kind in SHAPES:
            canvas = Image.new("L", (big, big), 0)
            points = outline(kind, big / 2, big / 2, scale)
            if filled:
                ImageDraw.Draw(canvas).polygon(points, fill=255)
            else:
                stroke(ImageDraw.Draw(canvas), points, 255, stroke_width(scale, True, "auto"))
            small = canvas.resize((size, size), Image.Resampling.BOX)
            masks.append(torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0))
    return torch.stack(masks)[:, None]


def gaussian_nll(mean: torch.Tensor, log_std: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Per-element Gaussian negative log-likelihood, so the model says how sure it is (sampling
    uses the spread)."""
    return log_std + 0.5 * ((value - mean) / log_std.exp()) ** 2 + 0.5 * math.log(2 * math.pi)


SIGMA_DATA = 0.5
"""Standard deviation of the images (flat colours in [-1, 1]), for the preconditioning below."""


def preconditioning(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM's preconditioning, for the flow x_t = (1 - t) x0 + t noise: (c_in, c_skip, c_out).

    The network sees the noisy image scaled to unit variance (c_in) and its output F is turned into
    the clean image as c_skip * x_t + c_out * F, so F's target has unit variance at every t: near
    t = 0 the image is mostly kept from x_t, near t = 1 it is drawn from the layout alone."""
    variance = (1 - t) ** 2 * SIGMA_DATA**2 + t**2
    return variance.rsqrt(), (1 - t) * SIGMA_DATA**2 / variance, t * SIGMA_DATA * variance.rsqrt()


def network_output(
    unet: torch.nn.Module, noisy: torch.Tensor, conditioning: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """F(c_in x_t, conditioning, t): the denoiser's raw output at full resolution. `t` has shape
    (B,); `conditioning` is the layout maps and the edit channels (see `edit_channels`)."""
    c_in, _, _ = preconditioning(t.view(-1, 1, 1, 1))
    packed = F.pixel_unshuffle(torch.cat([c_in * noisy, conditioning], dim=1), UNSHUFFLE)
    return F.pixel_shuffle(unet(packed, t * 1000).sample, UNSHUFFLE)


def predict_clean(
    unet: torch.nn.Module, noisy: torch.Tensor, conditioning: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """The denoiser's estimate of the clean image."""
    _, c_skip, c_out = preconditioning(t.view(-1, 1, 1, 1))
    return c_skip * noisy + c_out * network_output(unet, noisy, conditioning, t)


def edit_channels(source: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, EDIT_CHANNELS, H, W): the source (B, 3, H, W) in [-1, 1] where it is kept (0 elsewhere)
    and the kept mask (B, 1, H, W). For text-to-image they are all zeros (nothing is kept)."""
    return torch.cat([source * keep, keep], dim=1)
